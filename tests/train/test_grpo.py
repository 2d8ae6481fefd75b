"""The GRPO recipe on the tiny model: the mean reward rises on a toy verifiable task; bad rewards are refused."""

from __future__ import annotations

import json

import pytest
import yaml

from tuneforge import ConfigError, finetune, load_config


def write_prompts(path, n=40):
    path.write_text("".join(json.dumps({"prompt": f"Say something about item {i}", "reference": "a"}) + "\n" for i in range(n)))
    return path


@pytest.fixture
def grpo_config(run_config, tmp_path):
    def make(name="grpo", grpo=None, **training):
        # The random tiny model's final norm keeps its logits within about +-0.6 of each other, out of reach
        # of a LoRA update of the layers below; training the output layer too lets the policy actually move.
        path = run_config(name, method={"name": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear",
                                        "modules_to_save": ["lm_head"]})
        cfg = yaml.safe_load(path.read_text())
        cfg["data"] = {"train": str(write_prompts(tmp_path / "prompts.jsonl")), "split": {"validation": 0, "test": 0.1}}
        cfg["eval"] = {"enabled": True, "bootstrap_samples": 100, "forgetting": {"enabled": False},
                       "generation": {"max_new_tokens": 4}}
        cfg["training"] = {
            **cfg["training"], "objective": "grpo", "max_steps": 40, "logging_steps": 5, "save_steps": 100,
            "learning_rate": 1e-1, "per_device_batch_size": 16, "warmup_ratio": 0, "lr_scheduler": "constant",
            # The toy task: start the answer with a lower-case letter (~25% of the random model's samples).
            "grpo": {"num_generations": 4, "max_completion_length": 4, "beta": 0.04,
                     "rewards": [{"regex": "^[a-z]"}], **(grpo or {})},
            **training,
        }
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def test_grpo_mean_reward_rises_on_a_verifiable_toy_task(grpo_config):
    result = finetune(grpo_config())
    logs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logs if "reward" in r]
    assert len(train) >= 4
    first, last = train[0], train[-1]
    # The random model starts near its base rate; GRPO must move most samples onto the rewarded start.
    assert first["reward"] < 0.5 and last["reward"] > 0.6 and last["reward"] > first["reward"] + 0.3
    for key in ("reward_std", "kl", "completions/mean_length", "rewards/reward_regex/mean"):
        assert key in last, key
    assert last["kl"] > 0  # the reference (adapter off) is scored: the policy has moved away from it
    adapter = result.run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["objective"] == "grpo" and manifest["tokens_seen"] > 0
    # The held-out prompts with a reference go through the usual generation eval, base vs tuned.
    assert result.eval.examples == 4 and "exact_match" in result.eval.metrics


def test_grpo_config_errors_name_the_field(tmp_path):
    def problems(batch=None, **grpo):
        data = {"data": {"train": "x.jsonl"}, "training": {"objective": "grpo", "grpo": grpo, "per_device_batch_size": batch}}
        with pytest.raises(ConfigError) as err:
            load_config(data=data)
        return str(err.value)

    assert "training.objective 'grpo' needs training.grpo.rewards" in problems()
    assert "is not a valid regular expression" in problems(rewards=[{"regex": "(["}])
    assert "is not 'module:function'" in problems(rewards=[{"function": "no_colon"}])
    assert "give exactly one of name, regex, function, model (got name, regex)" in problems(
        rewards=[{"name": "exact_match", "regex": "a"}])
    assert "training.grpo.rewards.0" in problems(rewards=["bleu"])
    assert ("training.per_device_batch_size x training.gradient_accumulation_steps (4) must be a multiple of "
            "training.grpo.num_generations (3)") in problems(batch=4, rewards=["json_valid"], num_generations=3)


def test_a_bad_user_reward_function_fails_before_training(grpo_config, tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def positional(prompts, completions):\n    return [1.0] * len(completions)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = grpo_config("grpo-fn", grpo={"rewards": [{"function": "my_rewards:positional"}]})
    with pytest.raises(ConfigError, match=r"training.grpo.rewards\[0\].function: my_rewards:positional must be callable "
                                          r"as f\(prompts, completions, \*\*kwargs\)"):
        finetune(path)
    assert not (tmp_path / "runs" / "grpo-fn" / "adapter").exists()


def test_validate_reads_supervised_rows_as_grpo_prompts_and_checks_labels_on_their_references(run_config, capsys):
    from tuneforge.cli.main import main

    # The tickets of the SFT tests (alpaca rows): their outputs become the references label_match reads.
    path = run_config("grpo-validate", training={"objective": "grpo", "per_device_batch_size": 8,
                                                 "grpo": {"rewards": ["label_match"]}},
                      eval={"enabled": True, "labels": ["billing", "shipping", "account", "refund"]})
    assert main(["validate", str(path)]) == 0
    assert "Data (prompt_only)" in capsys.readouterr().out
    bad = run_config("grpo-bad-labels", training={"objective": "grpo", "per_device_batch_size": 8,
                                                  "grpo": {"rewards": ["label_match"]}},
                     eval={"enabled": True, "labels": ["spam", "ham"]})
    assert main(["validate", str(bad)]) == 2
    assert "eval.labels match none of the" in capsys.readouterr().err


def test_rlhf_grpo_is_rewarded_by_a_trained_reward_model_run(grpo_config, reward_run):
    """`rewards: [{model: RUN}]`: completions are scored by the reward-model run (the same scorer as `tuneforge score`)."""
    import math

    from tuneforge.eval.reward import load_reward_model

    result = finetune(grpo_config(name="rlhf", grpo={"rewards": [{"model": str(reward_run)}]}, max_steps=4, logging_steps=2))
    logs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logs if "rewards/reward_model/mean" in r]
    assert train, "the reward model's column is not logged"
    assert all(math.isfinite(r["rewards/reward_model/mean"]) for r in train)
    assert any(r["reward_std"] > 0 for r in train)  # real scores vary within a group; a constant stand-in would not
    # The scorer separates the marker the reward model was trained on, so GRPO gets a usable signal from it.
    scorer = load_reward_model(reward_run)
    marked, plain = scorer.score(["Classify the ticket: refund please"] * 2, ["zq refund", "refund"])
    assert marked > plain
