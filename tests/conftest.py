"""Shared fixtures: a tiny random Llama folder (seconds) and the embedded SmolLM2 (end-to-end tests)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _data_cache(tmp_path_factory):
    """Runs in tests cache prepared data in a temporary folder, not in the user's ~/.cache/tuneforge/data."""
    os.environ["TUNEFORGE_DATA_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder holding a tiny random Llama + ChatML BPE tokenizer (AutoModelForCausalLM-loadable)."""
    from tuneforge.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from tuneforge.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The embedded SmolLM2-135M-Instruct, dequantized once into the cache."""
    from tuneforge.models import resolve

    return resolve("smollm2-135m-instruct")


REWARD_MARK = "zq"
"""The token that makes an answer preferred in :func:`write_separable_pairs`."""
_QUEUES = {
    "billing": ["I was charged twice for order {n}", "my invoice {n} shows the wrong amount"],
    "shipping": ["where is my parcel {n}", "the package {n} has not arrived"],
    "account": ["I cannot log in since {n} attempts", "my account {n} is locked"],
    "refund": ["please refund order {n}", "I want my money back for {n}"],
}


def write_separable_pairs(path, n=80, seed=0):
    """Ticket pairs a reward model can separate: chosen answers carry REWARD_MARK, rejected ones never do."""
    import json
    import random

    rng = random.Random(seed)
    labels = list(_QUEUES)
    rows = []
    for i in range(n):
        label, other = labels[i % len(labels)], labels[(i + 1) % len(labels)]
        text = rng.choice(_QUEUES[label]).format(n=rng.randint(100, 999999))
        # Half the chosen answers name the wrong queue: only the marker tells the sides apart.
        good, bad = (f"{REWARD_MARK} {label}", other) if i % 2 else (f"{REWARD_MARK} {other}", label)
        rows.append({"prompt": f"Classify the ticket: {text}", "chosen": good, "rejected": bad})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reward_run_config(tiny_model_dir, work, name="reward", **training):
    """A reward-model run config over the tiny model on separable pairs (40 steps reach ~1.0 accuracy)."""
    import yaml

    cfg = {
        "name": name, "out_dir": str(work / "runs"), "model": str(tiny_model_dir),
        "method": {"name": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"},
        "data": {"train": str(write_separable_pairs(work / "pairs.jsonl")), "split": {"validation": 0.05, "test": 0.25}},
        "training": {"objective": "reward", "max_steps": 40, "per_device_batch_size": 8, "learning_rate": 2e-2,
                     "logging_steps": 5, "save_steps": 100, "max_seq_length": 128, "precision": "fp32", **training},
        "eval": {"enabled": True, "bootstrap_samples": 200},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def reward_run(tiny_model_dir, tmp_path_factory):
    """A trained reward-model run over the tiny model (separable pairs): its run directory."""
    from tuneforge import finetune

    import yaml

    path = reward_run_config(tiny_model_dir, tmp_path_factory.mktemp("reward"))
    cfg = yaml.safe_load(path.read_text())
    cfg["eval"]["baseline"] = None  # no untrained-head pass (tests/train/test_reward.py checks that it is skipped)
    path.write_text(yaml.safe_dump(cfg))
    return finetune(path).run_dir
