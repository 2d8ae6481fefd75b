"""Evaluation fixtures: ticket-classification examples, a general-text file, and a LoRA run on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

LABELS = ["billing", "refund", "account", "shipping"]
TICKETS = [
    ("My invoice was charged twice this month.", "billing"),
    ("Please refund the duplicate payment.", "refund"),
    ("I cannot log in to my account.", "account"),
    ("Where is my package?", "shipping"),
    ("The tracking number has not updated for a week.", "shipping"),
    ("I was charged twice, please refund it.", "refund"),
]
GENERAL_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Translate to French: hello, how are you today?",
    "Extract the name, email and phone number from the text as JSON.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def ticket(text: str, label: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "Classify the support ticket: billing, technical, account, shipping, refund."},
            {"role": "user", "content": text},
            {"role": "assistant", "content": label},
        ],
        "meta": {"source": "tickets.jsonl", "line": 1},
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tickets() -> list[dict]:
    return [ticket(text, label) for text, label in TICKETS]


@pytest.fixture(scope="session")
def general_text(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("general") / "general.jsonl", [{"text": t} for t in GENERAL_TEXT])


def lora_model(base_dir: Path):
    """The tiny model wrapped in a LoRA whose weights are random (init_lora_weights=False), so it differs from base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))


@pytest.fixture(scope="session")
def lora_run(tiny_model_dir, general_text, tmp_path_factory) -> Path:
    """A run directory as training leaves it: config.yaml, adapter/, data/test.jsonl, metrics.jsonl."""
    from tuneforge.models import load_tokenizer

    root = tmp_path_factory.mktemp("runs") / "tickets"
    (root / "data").mkdir(parents=True)
    train = write_jsonl(root / "data" / "train.jsonl", [ticket(t, label) for t, label in TICKETS])
    write_jsonl(root / "data" / "test.jsonl", [ticket(t, label) for t, label in TICKETS])
    config = {
        "name": "tickets", "model": str(tiny_model_dir), "method": {"name": "lora", "r": 4},
        "data": {"train": [{"path": str(train), "format": "chat"}]},
        "training": {"max_seq_length": 256},
        "eval": {
            "labels": LABELS, "bootstrap_samples": 200,
            "generation": {"max_new_tokens": 4, "batch_size": 4},
            "forgetting": {"data": str(general_text)},
        },
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    model = lora_model(tiny_model_dir)
    model.save_pretrained(root / "adapter")
    load_tokenizer(tiny_model_dir).save_pretrained(root / "adapter")
    log = [{"step": s, "epoch": s / 10, "loss": 3.0 - 0.2 * s, "learning_rate": 2e-4} for s in range(1, 11)]
    log += [{"step": s, "epoch": s / 10, "eval_loss": 3.1 - 0.2 * s} for s in (5, 10)]
    write_jsonl(root / "metrics.jsonl", log)
    return root
