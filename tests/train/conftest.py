"""A small alpaca dataset and a config for tiny-model training runs."""

import json
import random

import pytest
import yaml

LABELS = ["billing", "shipping", "account", "refund"]
TICKETS = {
    "billing": ["I was charged twice for order {n}", "my invoice {n} shows the wrong amount", "why is there an extra fee of {n} dollars"],
    "shipping": ["where is my parcel {n}", "the package {n} has not arrived", "tracking {n} has not updated for days"],
    "account": ["I cannot log in since {n} attempts", "reset my password please, code {n}", "my account {n} is locked"],
    "refund": ["please refund order {n}", "I want my money back for {n}", "return item {n} and refund me"],
}


def write_tickets(path, n=60, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        text = rng.choice(TICKETS[label]).format(n=rng.randint(100, 999999))
        rows.append({"instruction": "Classify the ticket.", "input": text, "output": label})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def run_config(tmp_path, tiny_model_dir):
    """Write a config for the tiny model and return a function that customises and saves it."""

    def make(name="tiny", **sections):
        data_file = write_tickets(tmp_path / "tickets.jsonl")
        cfg = {
            "name": name,
            "out_dir": str(tmp_path / "runs"),
            "model": str(tiny_model_dir),
            "method": {"name": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"},
            "data": {"train": str(data_file), "split": {"validation": 0.1, "test": 0.1}},
            "training": {"max_steps": 6, "per_device_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 2,
                         "save_steps": 3, "max_seq_length": 128, "precision": "fp32"},
            "eval": {"enabled": False},
        }
        for section, values in sections.items():
            if section != "method" and isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section] = {**cfg[section], **values}
            else:
                cfg[section] = values
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make
