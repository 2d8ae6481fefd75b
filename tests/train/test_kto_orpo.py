"""The KTO and ORPO recipes on the tiny model: they train, the loss falls, the adapter saves and loads."""

from __future__ import annotations

import json
from typing import get_args

import pytest
import yaml

from tuneforge import ConfigError, finetune, load_config
from tuneforge.config.kto import KtoLoss
from tuneforge.train.recipes import get_recipe

from .test_dpo import write_pairs


def write_judged(path, n=80):
    """The DPO test's ticket pairs as judged answers: "Queue: <label>" desirable, the bare label undesirable."""
    pairs = [json.loads(line) for line in write_pairs(path, n=n).read_text().splitlines()]
    rows = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in pairs for side in ("chosen", "rejected")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def objective_config(run_config, tmp_path):
    def make(objective, data, name=None, **training):
        path = run_config(name or objective)
        cfg = yaml.safe_load(path.read_text())
        cfg["data"] = {"train": str(data), "split": {"validation": 0.05, "test": 0.2}}
        cfg["eval"] = {"enabled": True, "bootstrap_samples": 100, "forgetting": {"enabled": False},
                       "generation": {"max_new_tokens": 4}}
        cfg["training"] = {**cfg["training"], "objective": objective, "max_steps": 40, "logging_steps": 10,
                           "save_steps": 100, "learning_rate": 3e-2, "per_device_batch_size": 8, **training}
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def _train_logs(result, key="loss"):
    logs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in logs if key in r and "eval_loss" not in r]


def _loads_with_one_adapter(result):
    from tuneforge.models.load import load

    adapter = result.run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "ref").exists()
    loaded = load(result.run_dir)
    assert loaded.adapter_path is not None
    return loaded


def test_kto_learns_the_desirable_answers_and_the_adapter_loads(objective_config, tmp_path):
    result = finetune(objective_config("kto", write_judged(tmp_path / "judged.jsonl"), kto={"beta": 1.0}))
    train = _train_logs(result)
    assert len(train) >= 3 and train[-1]["loss"] < train[0]["loss"] - 0.05
    assert "kl" in train[-1] and train[-1]["rewards/chosen"] > train[-1]["rewards/rejected"]
    # Held-out judged answers: the implied reward's sign agrees with the label far above chance.
    metrics = result.eval.metrics
    assert metrics["judged_reward_accuracy"].tuned >= 0.8 and metrics["judged_reward_margin"].tuned_ci[0] > 0
    stored = json.loads((result.run_dir / "eval" / "preference.json").read_text())
    assert stored["settings"]["kind"] == "judged answers"
    loaded = _loads_with_one_adapter(result)
    from tuneforge.eval.preference import judged_logps

    test_rows = [json.loads(line) for line in (result.run_dir / "data" / "test.jsonl").read_text().splitlines()]
    tuned = judged_logps(loaded.model.eval(), loaded.tokenizer, test_rows)
    with loaded.model.disable_adapter():
        base = judged_logps(loaded.model, loaded.tokenizer, test_rows)
    agree = [(t - b > 0) == r["label"] for t, b, r in zip(tuned, base, test_rows)]
    assert sum(agree) / len(agree) == pytest.approx(metrics["judged_reward_accuracy"].tuned)
    assert json.loads((result.run_dir / "manifest.json").read_text())["tokens_seen"] > 0


def test_kto_takes_pairs_and_reports_their_preference_accuracy(objective_config, tmp_path):
    result = finetune(objective_config("kto", write_pairs(tmp_path / "pairs.jsonl"), name="kto-pairs", max_steps=20,
                                       kto={"beta": 1.0, "loss_type": "apo_zero_unpaired"}))
    metrics = result.eval.metrics
    assert metrics["reward_accuracy"].tuned >= 0.8 and metrics["preference_accuracy"].base is not None


def test_orpo_prefers_the_chosen_answer_and_the_adapter_loads(objective_config, tmp_path):
    result = finetune(objective_config("orpo", write_pairs(tmp_path / "pairs.jsonl"), orpo={"beta": 1.0}))
    train = _train_logs(result)
    assert len(train) >= 3 and train[-1]["loss"] < train[0]["loss"] - 0.2
    assert train[-1]["log_odds_ratio"] > train[0]["log_odds_ratio"]
    # Held-out pairs: tuning moved the chosen answer up against the rejected one (tuned vs base log-ratios).
    metrics = result.eval.metrics
    assert metrics["reward_accuracy"].tuned >= 0.9 and metrics["reward_margin"].tuned_ci[0] > 0
    assert metrics["preference_accuracy"].tuned >= metrics["preference_accuracy"].base
    _loads_with_one_adapter(result)
    assert json.loads((result.run_dir / "manifest.json").read_text())["tokens_seen"] > 0


def test_kto_needs_two_rows_per_batch_for_its_kl_estimate(objective_config, tmp_path):
    path = objective_config("kto", write_judged(tmp_path / "j.jsonl", n=8), name="kto-one", per_device_batch_size=1)
    with pytest.raises(ConfigError, match=r"training.per_device_batch_size must be at least 2 for training.kto.loss_type 'kto'"):
        load_config(path)


def test_kto_loss_names_are_those_trl_offers_and_the_recipes_are_registered():
    from trl import KTOConfig

    assert set(get_args(KtoLoss)) == set(KTOConfig.__dataclass_fields__["loss_type"].metadata["choices"])
    with pytest.raises(ConfigError, match=r"training.kto.loss_type"):
        load_config(data={"data": {"train": "x.jsonl"}, "training": {"kto": {"loss_type": "sigmoid"}}})
    with pytest.raises(ConfigError, match=r"training.orpo.beta"):
        load_config(data={"data": {"train": "x.jsonl"}, "training": {"orpo": {"beta": 0}}})
    assert get_recipe("kto").__module__ == "tuneforge.train.recipes.kto"
    assert get_recipe("orpo").__module__ == "tuneforge.train.recipes.orpo"
