"""The reward-model recipe on the tiny model: pairwise accuracy rises from chance on a separable set."""

from __future__ import annotations

import json

import pytest

from tuneforge import ConfigError, finetune, load_config
from tuneforge.errors import DataError, ModelError

from ..conftest import REWARD_MARK, reward_run_config


def test_reward_accuracy_rises_from_chance_and_the_scorer_agrees(tiny_model_dir, tmp_path):
    config = reward_run_config(tiny_model_dir, tmp_path)
    result = finetune(config)
    logs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logs if "accuracy" in r and "loss" in r]
    assert len(train) >= 3 and train[-1]["loss"] < train[0]["loss"] - 0.2
    pairwise = result.eval.metrics["pairwise_accuracy"]
    # The untrained (random) head ranks no better than chance; the trained model ranks held-out pairs
    # clearly above chance and above it.
    assert pairwise.base is not None and pairwise.base <= 0.8
    assert pairwise.tuned >= 0.9 and pairwise.tuned_ci[0] > 0.5 and pairwise.diff_ci[0] > 0
    run = result.run_dir
    stored = json.loads((run / "eval" / "metrics.json").read_text())
    assert stored["metrics"]["pairwise_accuracy"]["tuned"] == pairwise.tuned
    assert "pairwise_accuracy" in (run / "eval" / "report.md").read_text()
    again = finetune(config)  # a finished run trains nothing and shows its stored evaluation
    assert again.eval.metrics["pairwise_accuracy"].tuned == pairwise.tuned
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["task"] == "reward" and manifest["objective"] == "reward" and manifest["tokens_seen"] > 0
    # The head is saved inside the adapter, and the loader gives the same scores as the evaluation.
    adapter_cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["task_type"] == "SEQ_CLS" and "score" in adapter_cfg["modules_to_save"]
    assert not any("score" in m for m in adapter_cfg["target_modules"])  # trained whole, not through LoRA
    from tuneforge.eval.reward import load_reward_model

    scorer = load_reward_model(run)
    rows = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    got = scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows], batch_size=3)
    assert got == pytest.approx([r["chosen_reward"] for r in rows], abs=1e-4)
    # A string prompt is one user turn; the marker wins on a prompt never seen.
    marked, plain = scorer.score(["Classify the ticket: where is my parcel 12"] * 2, [f"{REWARD_MARK} shipping", "shipping"])
    assert marked > plain


def test_a_reward_run_cannot_be_loaded_to_generate_and_a_causal_run_is_not_a_reward_model(reward_run, run_config):
    from tuneforge.eval.reward import load_reward_model
    from tuneforge.models.load import load

    with pytest.raises(ModelError, match=r"is a reward model: it scores .* cannot generate"):
        load(reward_run)
    # eval.baseline: null (this run's) skips the untrained head: no base column, no untrained rewards.
    stored = json.loads((reward_run / "eval" / "metrics.json").read_text())["metrics"]["pairwise_accuracy"]
    assert stored["base"] is None and stored["tuned"] >= 0.9
    first = json.loads((reward_run / "eval" / "predictions.jsonl").read_text().splitlines()[0])
    assert "chosen_reward" in first and "untrained_chosen_reward" not in first
    sft = finetune(run_config("sft-small", training={"max_steps": 1})).run_dir
    with pytest.raises(ModelError, match=r"is not a reward model \(it is a run of a causal language model\)"):
        load_reward_model(sft)


def test_reward_needs_pairs_and_an_adapter(run_config):
    with pytest.raises(DataError, match=r"holds supervised alpaca rows, but training.objective 'reward'"):
        finetune(run_config("reward-sft-data", training={"objective": "reward"}))
    with pytest.raises(ConfigError, match=r"'reward' needs method.name 'lora' or 'dora' \(got 'full'\): the score head"):
        load_config(run_config("reward-full", method={"name": "full"}, training={"objective": "reward"}))
    with pytest.raises(ConfigError, match=r"eval.baseline: a reward model is compared with its untrained head"):
        finetune(run_config("reward-baseline",
                            training={"objective": "reward"}, eval={"baseline": "runs/other"}))
    with pytest.raises(ConfigError, match=r"training.reward.center_rewards_coefficient"):
        load_config(run_config("reward-neg", training={"objective": "reward", "reward": {"center_rewards_coefficient": -1}}))


def test_the_evaluation_scores_as_the_reloaded_model_does_after_bf16_training(tiny_model_dir, tmp_path):
    # Trained under bf16 autocast, evaluated in the weights' precision: the rewards in eval/ are the ones
    # load_reward_model (and so `tuneforge score` and the server) gives, not autocast's approximations.
    from tuneforge.eval.reward import load_reward_model

    run = finetune(reward_run_config(tiny_model_dir, tmp_path, name="reward-bf16", precision="bf16", max_steps=10)).run_dir
    rows = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    got = load_reward_model(run).score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    assert got == pytest.approx([r["rejected_reward"] for r in rows], abs=1e-5)
