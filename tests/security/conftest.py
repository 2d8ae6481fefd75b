"""An encrypted tiny-model run shared by the encryption tests (training it once takes ~20 s)."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest
import yaml

from tuneforge import finetune, load_config
from tuneforge.rundir import RunDir

CANARY = "CANARY-q8Zx31"
KEY_ENV = "TF_TEST_RUN_KEY"


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def canary_rows(path: Path, n: int = 40) -> Path:
    labels = ["billing", "shipping", "account", "refund"]
    rows = [{"instruction": "Classify the ticket.", "input": f"{CANARY} ticket {i} about {labels[i % 4]}",
             "output": labels[i % 4]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def scan(folder: Path) -> list[str]:
    """Every file under ``folder`` whose bytes hold the canary."""
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]


def encrypted_config(tmp: Path, model_dir: Path, name: str = "enc", **sections) -> Path:
    cfg = {
        "name": name, "out_dir": str(tmp / "runs"), "model": str(model_dir),
        "method": {"name": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"},
        "data": {"train": str(canary_rows(tmp / "tickets.jsonl")), "split": {"validation": 0.1, "test": 0.1}},
        "training": {"max_steps": 4, "per_device_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 2,
                     "save_steps": 2, "max_seq_length": 128, "precision": "fp32"},
        "eval": {"enabled": True, "max_examples": 3, "baseline": "base", "generation": {"max_new_tokens": 4}},
        "security": {"encrypt": True, "key_env": KEY_ENV},
        **sections,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def encrypted_run(tmp_path_factory, tiny_model_dir):
    """One encrypted LoRA run with evaluation: (run, the temp folder it ran under, its key)."""
    tmp = tmp_path_factory.mktemp("encrypted")
    key = new_key()
    outer_tmp = tmp / "system-tmp"
    outer_tmp.mkdir()
    config = encrypted_config(tmp, tiny_model_dir)
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, key)
    # The run's own temp folder is inside the run; anything spilled to the outer one is scanned too.
    mp.setenv("TMPDIR", str(outer_tmp))
    mp.setattr("tempfile.tempdir", str(outer_tmp))
    try:
        result = finetune(load_config(config))
    finally:
        mp.undo()
    return RunDir(result.run_dir), outer_tmp, key


@pytest.fixture
def run_key(encrypted_run, monkeypatch):
    """The encrypted run, with its key in the environment variable its config names."""
    run, _, key = encrypted_run
    monkeypatch.setenv(KEY_ENV, key)
    return run
