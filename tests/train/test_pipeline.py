"""Training runs on the tiny model: what a run directory holds, methods, resume after SIGKILL, DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tuneforge import RunDirError, finetune, load_config
from tuneforge.cli.main import main
from tuneforge.rundir import RunDir


def test_lora_run_writes_a_complete_run_directory(run_config):
    cfg = load_config(run_config())
    result = finetune(cfg)
    run = RunDir(result.run_dir)
    assert result.global_step == 6
    for path in (run.config, run.data_report, run.metrics, run.manifest, run.test_split, run.adapter / "adapter_config.json"):
        assert path.is_file(), path
    assert list(run.tensorboard.glob("events.out.tfevents.*"))
    manifest = json.loads(run.manifest.read_text())
    assert manifest["global_step"] == 6 and manifest["tokens_per_second"] > 0 and manifest["peak_rss_mb"] > 0
    assert manifest["versions"]["transformers"] and all(len(h) == 64 for h in manifest["data_sha256"].values())
    records = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert any("loss" in r and r["tokens_per_second"] > 0 for r in records)
    # The saved config reloads as the same config.
    assert load_config(run.config) == cfg
    # The adapter loads with plain PEFT, and its generation config stops at the end-of-turn token.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, GenerationConfig

    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path)
    model = PeftModel.from_pretrained(base, str(run.adapter))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    gen = GenerationConfig.from_pretrained(str(run.adapter))
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(run.adapter)).convert_tokens_to_ids("<|im_end|>") in eos


def test_training_changes_the_weights_and_lowers_the_loss(run_config):
    result = finetune(load_config(run_config(training={"max_steps": 30, "learning_rate": 5e-3})))
    losses = [json.loads(l)["loss"] for l in RunDir(result.run_dir).metrics.read_text().splitlines() if '"loss"' in l]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("method", [{"name": "full"}, {"name": "dora", "r": 4}, {"name": "ia3"}, {"name": "prompt", "num_virtual_tokens": 4}])
def test_other_methods_train_and_save(run_config, method):
    result = finetune(load_config(run_config(name=f"m-{method['name']}", method=method, training={"max_steps": 2})))
    run = RunDir(result.run_dir)
    assert result.global_step == 2
    if method["name"] == "full":
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(str(run.model))
    else:
        assert (run.adapter / "adapter_config.json").is_file()


def test_a_finished_run_is_shown_again_not_overwritten_and_resume_needs_a_checkpoint(run_config):
    path = run_config()
    with pytest.raises(RunDirError, match="no complete checkpoint"):
        finetune(load_config(path), resume=True)
    first = finetune(load_config(path))
    adapter = (RunDir(first.run_dir).adapter / "adapter_model.safetensors").read_bytes()
    # The same config again (make quickstart twice): the stored results, nothing trained, exit 0.
    again = finetune(load_config(path))
    assert again.already_finished and again.global_step == first.global_step == 6
    assert main(["train", str(path)]) == 0
    # Another config under the same name is refused, not mistaken for an invalid config.
    with pytest.raises(RunDirError, match="already finished with a different config.*learning_rate"):
        finetune(load_config(path, ["training.learning_rate=0.1"]))
    assert main(["train", str(path), "--set", "training.learning_rate=0.1"]) == 2  # a clear error, not a traceback
    assert (RunDir(first.run_dir).adapter / "adapter_model.safetensors").read_bytes() == adapter


def test_qlora_on_cpu_is_a_clear_error(run_config):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert main(["train", str(run_config(method={"name": "qlora"}))]) == 2


def test_early_stopping_on_validation_loss(run_config):
    path = run_config(training={"max_steps": 40, "eval_strategy": "steps", "eval_steps": 2, "save_steps": 2,
                                "learning_rate": 0.5, "early_stopping": {"patience": 1, "metric": "eval_loss"}})
    result = finetune(load_config(path))
    # A learning rate this high diverges quickly; early stopping ends the run long before max_steps.
    assert result.global_step < 40
    assert any("eval_loss" in l for l in RunDir(result.run_dir).metrics.read_text().splitlines())


def test_early_stopping_on_a_generation_metric(run_config):
    path = run_config(name="gen-metric",
                      training={"max_steps": 12, "eval_strategy": "steps", "eval_steps": 2, "save_steps": 2,
                                "early_stopping": {"patience": 2, "metric": "exact_match"}},
                      eval={"enabled": False, "generation": {"max_new_tokens": 4, "batch_size": 8}})
    result = finetune(load_config(path))
    records = [json.loads(l) for l in RunDir(result.run_dir).metrics.read_text().splitlines()]
    # The validation metric was generated and scored at every evaluation, and early stopping watched it.
    scored = [r["eval_exact_match"] for r in records if "eval_exact_match" in r]
    assert len(scored) >= 2 and all(0.0 <= v <= 1.0 for v in scored)
    state = json.loads((sorted(RunDir(result.run_dir).checkpoints.glob("checkpoint-*"))[-1] / "trainer_state.json").read_text())
    assert state["best_metric"] is not None and "eval_exact_match" in json.dumps(state["log_history"])


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_resume_after_sigkill_reaches_the_same_final_step(run_config):
    path = run_config(name="killed", training={"max_steps": 60, "save_steps": 5, "save_total_limit": 2, "logging_steps": 20})
    cfg = load_config(path)
    run = RunDir(cfg.run_dir)
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "train", str(path)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # Kill once a checkpoint is complete: the next one may be half written, which resume must skip.
    while not list(run.checkpoints.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not run.adapter.exists(), "the run finished before it was killed"
    assert run.state() == "killed"  # marked running, but no process holds its lock
    result = finetune(cfg, resume=True)
    assert result.global_step == 60
    state = json.loads((run.checkpoints / "checkpoint-60" / "trainer_state.json").read_text())
    assert state["global_step"] == 60
    rank = json.loads((run.root / "ranks" / "rank-0.json").read_text())
    assert rank["start_step"] % 5 == 0 and 5 <= rank["start_step"] < 60  # continued from a checkpoint
    assert (run.adapter / "adapter_model.safetensors").is_file() and run.state() == "finished"


def test_resume_skips_a_half_written_checkpoint(tmp_path):
    from tuneforge.train.pipeline import latest_complete_checkpoint

    for step, complete in ((10, True), (20, True), (30, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert latest_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-20")
    assert latest_complete_checkpoint(tmp_path / "missing") is None


def test_two_process_ddp_with_gloo(run_config, tmp_path):
    path = run_config(name="ddp", training={"max_steps": 4, "save_strategy": "no"})
    # accelerate's --cpu flag means one process (or MPI); --multi_gpu starts torchrun processes, which
    # on a machine without GPUs train on the CPU with the gloo backend.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1", "--multi_gpu",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
           "-m", "tuneforge", "train", str(path)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunDir(load_config(path).run_dir)
    ranks = [json.loads((run.root / "ranks" / f"rank-{i}.json").read_text()) for i in (0, 1)]
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    assert [r["world_size"] for r in ranks] == [2, 2] and {r["backend"] for r in ranks} == {backend}
    assert all(r["global_step"] == 4 and r["tokens_seen"] > 0 for r in ranks)
    # Gradients were all-reduced: both ranks end with the same adapter weights.
    assert ranks[0]["trainable_checksum"] == pytest.approx(ranks[1]["trainable_checksum"], rel=1e-6)
    from tuneforge.models import load

    loaded = load(run.root)
    assert type(loaded.model).__name__ == "PeftModelForCausalLM"


def test_eval_without_test_rows_says_so(run_config, capsys):
    from rich.console import Console

    from tuneforge.eval import NO_TEST_ROWS
    from tuneforge.train.pipeline import finetune as run_pipeline

    path = run_config(name="no-test", data={"split": {"validation": 0.1, "test": 0}}, eval={"enabled": True})
    console = Console(record=True, width=200)
    result = run_pipeline(load_config(path), console=console)
    run = RunDir(result.run_dir)
    assert result.eval is None and not run.eval.exists()
    assert NO_TEST_ROWS in console.export_text()
    assert json.loads(run.manifest.read_text())["eval_skipped"] == NO_TEST_ROWS
    capsys.readouterr()
    assert main(["eval", str(run.root)]) == 2  # evaluating the run later says the same, not "0 examples"
    assert "no test rows (set data.test or data.split.test)" in capsys.readouterr().err.replace("\n", " ")
