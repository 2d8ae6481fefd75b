"""The DPO recipe on the tiny model: the margin grows and the loss falls, the adapter loads, bad data is refused."""

from __future__ import annotations

import json
import random
from typing import get_args

import pytest
import yaml

from tuneforge import ConfigError, finetune, load_config
from tuneforge.config.schema import DpoLoss
from tuneforge.errors import DataError
from tuneforge.train.recipes import get_recipe

from .conftest import LABELS, TICKETS


def write_pairs(path, n=80, seed=0):
    """Ticket pairs preferring a style: chosen = "Queue: <label>", rejected = the bare label.

    The base gives the shorter, rejected answer more probability on almost every pair (fewer
    tokens to pay for), so its preference accuracy starts low; the style does not depend on the
    ticket, so what DPO teaches shows on held-out prompts too.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        text = rng.choice(TICKETS[label]).format(n=rng.randint(100, 999999))
        rows.append({"prompt": f"Classify the ticket: {text}", "chosen": f"Queue: {label}", "rejected": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def dpo_config(run_config, tmp_path):
    def make(name="dpo", **sections):
        path = run_config(name, **sections)
        cfg = yaml.safe_load(path.read_text())
        cfg["data"] = {"train": str(write_pairs(tmp_path / "pairs.jsonl")), "split": {"validation": 0.05, "test": 0.2}}
        cfg["training"] = {**cfg["training"], "objective": "dpo", "max_steps": 60, "logging_steps": 10,
                           "save_steps": 100, "learning_rate": 3e-2, "per_device_batch_size": 8, "dpo": {"beta": 2.0},
                           **sections.get("training", {})}
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def test_dpo_margin_grows_loss_falls_and_the_adapter_loads(dpo_config):
    cfg = dpo_config(eval={"enabled": True, "bootstrap_samples": 100, "forgetting": {"enabled": False},
                           "generation": {"max_new_tokens": 4}})
    result = finetune(cfg)
    logs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logs if "rewards/margins" in r]
    assert len(train) >= 3
    assert train[-1]["rewards/margins"] > train[0]["rewards/margins"] + 0.5
    assert train[-1]["loss"] < train[0]["loss"] - 0.1
    # Held-out pairs: the implicit reward (tuned vs base log-ratio) ranks chosen first, by a clear CI.
    metrics = result.eval.metrics
    assert metrics["reward_accuracy"].tuned >= 0.9 and metrics["reward_margin"].tuned_ci[0] > 0.5
    # Raw log-prob preference, base vs tuned with the paired CI: the shorter rejected answer still wins
    # here (DPO moves log-ratios, not lengths), but never less often than before.
    pref = metrics["preference_accuracy"]
    assert pref.base is not None and pref.diff_ci is not None and pref.tuned >= pref.base
    stored = json.loads((result.run_dir / "eval" / "preference.json").read_text())
    assert stored["metrics"]["preference_accuracy"]["tuned"] == pref.tuned
    # One adapter saved (no "ref" copy), loadable by PEFT, giving the same preference as in training.
    adapter = result.run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "ref").exists()
    from tuneforge.eval.preference import pair_logps
    from tuneforge.models.load import load

    loaded = load(result.run_dir)
    test_pairs = [json.loads(line) for line in (result.run_dir / "data" / "test.jsonl").read_text().splitlines()]
    tuned = pair_logps(loaded.model.eval(), loaded.tokenizer, test_pairs)
    with loaded.model.disable_adapter():
        base = pair_logps(loaded.model, loaded.tokenizer, test_pairs)
    margin = (tuned - base) @ [1.0, -1.0]
    assert (margin > 0).mean() == pytest.approx(metrics["reward_accuracy"].tuned)
    assert 2.0 * margin.mean() == pytest.approx(metrics["reward_margin"].tuned, rel=1e-3)  # beta 2
    # `tuneforge eval RUN` re-runs the generation eval on the stored test pairs (prompt + chosen answer).
    from tuneforge.cli.main import main

    assert main(["eval", str(result.run_dir)]) == 0
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["tokens_seen"] > 0 and "preference_eval_seconds" in manifest


def test_dpo_refuses_supervised_data_before_training(run_config, tmp_path):
    path = run_config("dpo-sft-data", training={"objective": "dpo"})
    with pytest.raises(DataError, match=r"tickets\.jsonl: holds supervised alpaca rows, but training.objective 'dpo'"):
        finetune(path)


def test_dpo_needs_an_adapter_method(run_config):
    with pytest.raises(ConfigError, match=r"training.objective 'dpo' needs method.name 'lora' or 'dora' \(got 'full'\)"):
        load_config(run_config("dpo-full", method={"name": "full"}, training={"objective": "dpo"}))


def test_dpo_loss_names_are_those_trl_offers():
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    assert all(f"'{name}'" in help_text for name in get_args(DpoLoss))
    with pytest.raises(ConfigError, match=r"training.dpo.loss_type"):
        load_config(data={"data": {"train": "x.jsonl"}, "training": {"dpo": {"loss_type": "simpo"}}})
    assert get_recipe("dpo").__module__ == "tuneforge.train.recipes.dpo"


def test_sft_still_refuses_pairs(run_config, tmp_path):
    path = run_config("sft-pairs")
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["train"] = str(write_pairs(tmp_path / "p.jsonl", n=10))
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(DataError, match=r"p\.jsonl: preference data .* trains with `training.objective: dpo`, not sft"):
        finetune(path)


def test_validate_reads_pairs_for_dpo_and_checks_labels_on_the_chosen_answers(dpo_config, capsys):
    from tuneforge.cli.main import main

    path = dpo_config("dpo-validate", eval={"enabled": True, "labels": [f"Queue: {label}" for label in LABELS]})
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Data (preference)" in out and "(preference format)" in out
    bad = dpo_config("dpo-bad-labels", eval={"enabled": True, "labels": ["spam", "ham"]})
    assert main(["validate", str(bad)]) == 2
    assert "eval.labels match none of the" in capsys.readouterr().err
