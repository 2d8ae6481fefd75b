"""Fixtures for dashboard tests: run folders written file by file, LoRA runs over the tiny model, tiny configs."""

from __future__ import annotations

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.train.conftest import write_tickets
from tests.ui.fake_runs import write_run


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "alpha")
    write_run(root, "beta", state="failed", error="loss became NaN at step 7")
    write_run(root, "old", state=None)
    return root


@pytest.fixture
def client(runs_dir):
    from tuneforge.ui import create_app

    with TestClient(create_app(runs_dir, keys=None)) as c:
        yield c


@pytest.fixture(scope="session")
def model_runs(tiny_model_dir, tmp_path_factory):
    """A runs folder with two LoRA runs over the tiny model (different random adapters) and one without weights."""
    from tests.serve.conftest import save_lora_adapter

    root = tmp_path_factory.mktemp("model-runs") / "runs"
    for seed, name in enumerate(["tuned-a", "tuned-b"], 1):
        run = write_run(root, name, predictions=5)
        (run / "config.yaml").write_text(f"name: {name}\nmodel:\n  name_or_path: {tiny_model_dir}\nmethod:\n  name: lora\n")
        save_lora_adapter(tiny_model_dir, run / "adapter", seed)
    write_run(root, "no-weights")
    return root


@pytest.fixture
def tiny_config(tmp_path, tiny_model_dir):
    """A function name -> YAML text of a two-step LoRA run of the tiny model (evaluation off unless asked)."""
    data = write_tickets(tmp_path / "tickets.jsonl", n=60)

    def make(name: str, max_steps: int = 2, evaluate: bool = False) -> str:
        return yaml.safe_dump({
            "name": name, "model": str(tiny_model_dir), "method": {"name": "lora", "r": 4, "alpha": 8},
            "data": {"train": str(data), "split": {"validation": 0.1, "test": 0.1}},
            "training": {"max_steps": max_steps, "per_device_batch_size": 2, "logging_steps": 1, "save_steps": 1000,
                         "max_seq_length": 128, "precision": "fp32"},
            "eval": {"enabled": True, "max_examples": 4, "bootstrap_samples": 100,
                     "generation": {"max_new_tokens": 4, "batch_size": 1}} if evaluate else {"enabled": False},
        })

    return make


@pytest.fixture(scope="session")
def finished_run(tiny_model_dir, tmp_path_factory):
    """A real two-step LoRA run of the tiny model, trained in this process, with its final evaluation
    (8 test examples, generated two at a time so the evaluation reports progress several times)."""
    from tuneforge import finetune, load_config

    root = tmp_path_factory.mktemp("finished")
    data = write_tickets(root / "tickets.jsonl", n=60)
    (root / "tiny.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "out_dir": str(root / "runs"), "model": str(tiny_model_dir),
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "data": {"train": str(data), "split": {"validation": 0.1, "test": 0.15}},
        "training": {"max_steps": 2, "per_device_batch_size": 2, "logging_steps": 1, "save_steps": 1000,
                     "max_seq_length": 128, "precision": "fp32"},
        "eval": {"enabled": True, "max_examples": 8, "bootstrap_samples": 100,
                 "generation": {"max_new_tokens": 4, "batch_size": 2}},
    }))
    finetune(load_config(root / "tiny.yaml"))
    return root / "runs" / "tiny"
