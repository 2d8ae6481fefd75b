"""A small alpaca dataset and a config for tiny-model training runs."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def train_env():
    """The environment of a `tuneforge train` subprocess: offline, unbuffered, this checkout's sources first."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def kill_after_checkpoint(config, checkpoints, timeout=300):
    """Run `tuneforge train CONFIG` in a subprocess and SIGKILL it once a complete checkpoint is in ``checkpoints``.

    A complete checkpoint has its trainer_state.json (written last); the next one may be half written
    when the kill lands, which resume must skip.
    """
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "train", str(config)], env=train_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not list(Path(checkpoints).glob("checkpoint-*/trainer_state.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
