"""Multi-stage runs on the tiny model: SFT then DPO in subfolders, lineage, skip finished stages, resume after a kill."""

from __future__ import annotations

import json
import pytest
import yaml

from tuneforge import ConfigError, RunDirError, finetune, load_config
from tuneforge.models import load
from tuneforge.models.from_run import weights_digest
from tuneforge.rundir import RunDir

from .test_dpo import write_pairs
from .conftest import kill_after_checkpoint


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))  # merged stage weights land here


@pytest.fixture
def chain_config(run_config, tmp_path):
    def make(name="chain", dpo_training=None, **sections):
        path = run_config(name, **sections)
        cfg = yaml.safe_load(path.read_text())
        pairs = write_pairs(tmp_path / "pairs.jsonl")
        cfg["stages"] = [
            "sft",
            {"objective": "dpo", "data": {"train": pairs.name, "split": {"validation": 0.05, "test": 0.2}},
             "training": {"learning_rate": 3e-2, "per_device_batch_size": 8, "dpo": {"beta": 2.0}, **(dpo_training or {})}},
        ]
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def test_sft_then_dpo_chain_writes_stages_lineage_and_skips_finished_stages(chain_config):
    cfg = load_config(chain_config())
    result = finetune(cfg)
    root = RunDir(cfg.run_dir)
    sft, dpo = RunDir(root.root / "stages" / "01-sft"), RunDir(root.root / "stages" / "02-dpo")
    assert [r.run_dir for r in result.stages] == [sft.root, dpo.root] and result.run_dir == dpo.root
    for stage in (sft, dpo, root):
        assert stage.recorded_state() == "finished"
    assert (dpo.adapter / "adapter_model.safetensors").is_file()
    # The DPO stage started from the SFT stage, and both manifests say so.
    assert load_config(dpo.config).model.name_or_path == str(sft.root.absolute())
    parent = json.loads(dpo.manifest.read_text())["parent"]
    assert parent["stage"] == "01-sft" and parent["objective"] == "sft" and parent["weights_sha256"] == weights_digest(sft)
    lineage = json.loads(root.manifest.read_text())
    assert [s["stage"] for s in lineage["stages"]] == ["01-sft", "02-dpo"]
    assert [s["objective"] for s in lineage["stages"]] == ["sft", "dpo"]
    assert lineage["stages"][1]["parent"]["weights_sha256"] == weights_digest(sft)
    assert "| 02-dpo | dpo |" in (root.root / "report.md").read_text()
    # A later stage loads like any run (generate/eval/serve): base -> SFT merged -> DPO adapter.
    assert load(dpo.root).adapter_path == dpo.adapter
    # The top-level folder stands for the final stage wherever a model is expected.
    assert load(root.root).adapter_path == dpo.adapter

    adapter_time = (sft.adapter / "adapter_model.safetensors").stat().st_mtime_ns
    again = finetune(cfg)
    assert again.already_finished and all(r.already_finished for r in again.stages)
    assert (sft.adapter / "adapter_model.safetensors").stat().st_mtime_ns == adapter_time

    # Every stage's audit entries go to the log beside the runs, with the chain's.
    log = root.root.parent / "audit.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["details"]["run"] for e in entries if e["action"] == "train"} == {"chain", "01-sft", "02-dpo"}
    assert not (root.root / "stages" / "audit.jsonl").exists()

    # The SFT stage retrained (other weights): the finished DPO stage no longer follows from it.
    from safetensors.torch import load_file, save_file

    tensors = load_file(sft.adapter / "adapter_model.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, sft.adapter / "adapter_model.safetensors")
    with pytest.raises(RunDirError, match=r"02-dpo was trained on top of .*01-sft \(weights SHA-256 [0-9a-f]{12}\), which now holds"):
        finetune(cfg)


def test_stage_errors_name_the_stage_field_and_line(chain_config):
    path = chain_config()
    text = path.read_text().replace("beta: 2.0", "beta: -1")
    path.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), start=1) if "beta: -1" in l)
    with pytest.raises(ConfigError, match=rf"{path.name}:{line}: field 'stages\[1\]\.training\.dpo\.beta'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"stages\[1\]\.training\.dpo\.beta"):
        load_config(chain_config(name="c2"), ["stages.1.training.dpo.beta=0"])
    with pytest.raises(ConfigError, match="no recipe 'grpoo'"):
        load_config(chain_config(name="c3"), ["stages.1.objective=grpoo"])
    with pytest.raises(ConfigError, match="stage names repeat"):
        load_config(chain_config(name="c4"), ["stages=[sft, sft]"])


def test_killed_second_stage_resumes_to_the_end(chain_config):
    path = chain_config(name="killed", dpo_training={"max_steps": 60, "save_steps": 5, "logging_steps": 20})
    cfg = load_config(path)
    sft, dpo = RunDir(cfg.run_dir / "stages" / "01-sft"), RunDir(cfg.run_dir / "stages" / "02-dpo")
    kill_after_checkpoint(path, dpo.checkpoints)
    assert sft.recorded_state() == "finished" and dpo.state() == "killed" and not dpo.adapter.exists()
    sft_weights = weights_digest(sft)

    with pytest.raises(RunDirError, match="--resume"):
        finetune(cfg)  # the interrupted stage is not silently restarted
    result = finetune(cfg, resume=True)
    assert result.global_step == 60 and dpo.recorded_state() == "finished"
    assert result.stages[0].already_finished and weights_digest(sft) == sft_weights  # stage 1 not retrained
    rank = json.loads((dpo.root / "ranks" / "rank-0.json").read_text())
    assert 5 <= rank["start_step"] < 60  # continued from the checkpoint
    assert RunDir(cfg.run_dir).recorded_state() == "finished"


def test_chain_report_compares_base_each_stage_and_final_on_the_same_examples(chain_config):
    from .conftest import LABELS

    evaluation = {"enabled": True, "bootstrap_samples": 100, "labels": LABELS, "metrics": ["accuracy", "macro_f1"],
                  "generation": {"max_new_tokens": 4}, "forgetting": {"max_documents": 4}}
    path = chain_config(name="reported", eval=evaluation)
    raw = yaml.safe_load(path.read_text())
    raw["stages"][1]["eval"] = {"labels": None, "metrics": None}  # DPO's references are "Queue: <label>"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    finetune(cfg)
    root = RunDir(cfg.run_dir)
    saved = json.loads((root.root / "stages_eval.json").read_text())
    test_rows = len((root.root / "stages" / "01-sft" / "data" / "test.jsonl").read_text().splitlines())
    assert saved["examples"] == test_rows
    assert list(saved["vs_base"]) == ["base", "01-sft", "02-dpo"] and list(saved["vs_previous"]) == ["01-sft", "02-dpo"]
    for name in ("accuracy", "macro_f1"):
        final = saved["vs_base"]["02-dpo"][name]
        assert final["diff_ci"] is not None and final["base"] == saved["vs_base"]["base"][name]["tuned"]
        # Δ vs the previous stage is measured against the SFT stage's own value on the same examples.
        assert saved["vs_previous"]["02-dpo"][name]["base"] == saved["vs_base"]["01-sft"][name]["tuned"]
    assert set(saved["forgetting"]) == {"01-sft", "02-dpo"}
    report = (root.root / "report.md").read_text()
    assert "### accuracy" in report and "| 02-dpo |" in report and "Forgetting" in report
    from tuneforge.eval.plots import plots_available

    if plots_available():
        assert (root.root / "report" / "stages.png").is_file() and "report/stages.png" in report


def test_chain_comparison_is_paired(tiny_model_dir):
    """The same model twice differs by exactly 0 on every resample: the bootstrap draws the same examples for both."""
    from tuneforge.config.schema import EvalConfig
    from tuneforge.eval.chain import compare_chain

    from .conftest import LABELS, TICKETS

    examples = [{"messages": [{"role": "user", "content": TICKETS[label][0].format(n=i)},
                              {"role": "assistant", "content": label}]} for i, label in enumerate(LABELS * 3)]
    same = lambda: load(str(tiny_model_dir))  # noqa: E731
    result = compare_chain([("base", same), ("again", same)], examples,
                           EvalConfig(labels=LABELS, bootstrap_samples=100, generation={"max_new_tokens": 3},
                                      forgetting={"enabled": False}), seed=0, max_seq_length=64)
    for mc in result.vs_base["again"].values():
        assert mc.diff == 0 and tuple(mc.diff_ci) == (0.0, 0.0)
