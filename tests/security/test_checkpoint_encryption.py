"""Encrypted checkpoints: sealed right after each save, and a killed encrypted run resumes from them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tuneforge import finetune, load_config
from tuneforge.models.sealed import ADAPTER_WEIGHTS, load_state
from tuneforge.rundir import RunDir
from tuneforge.security import read_file
from tuneforge.security.crypto import is_encrypted

from tests.security.conftest import KEY_ENV, encrypted_config, new_key, scan

_TRAINING = {"max_steps": 16, "save_steps": 4, "save_total_limit": 2, "logging_steps": 8, "per_device_batch_size": 2,
             "learning_rate": 1e-3, "max_seq_length": 128, "precision": "fp32"}


def test_a_killed_encrypted_run_resumes_from_its_encrypted_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    path = encrypted_config(tmp_path, tiny_model_dir, name="killed", training=_TRAINING, eval={"enabled": False})
    cfg = load_config(path)
    run = RunDir(cfg.run_dir)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "train", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240

    def sealed() -> list[Path]:
        """Checkpoints whose weight, optimizer, scheduler and RNG files are all encrypted already."""
        done = []
        for folder in run.checkpoints.glob("checkpoint-*"):
            files = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".pt", ".pth", ".bin")]
            if (folder / "training_args.bin").exists() and all(is_encrypted(p) for p in files):
                done.append(folder / ADAPTER_WEIGHTS)
        return done

    while not sealed() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not run.adapter.exists(), "the run finished before it was killed"
    checkpoint = sealed()[0].parent
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        if (checkpoint / name).exists():
            assert is_encrypted(checkpoint / name), name
    result = finetune(cfg, resume=True)
    assert result.global_step == 16 and run.state() == "finished"
    rank = json.loads(read_file(run.root / "ranks" / "rank-0.json"))
    assert rank["start_step"] % 4 == 0 and 4 <= rank["start_step"] < 16  # continued from a checkpoint
    for file in run.checkpoints.rglob("*"):
        if file.suffix in (".safetensors", ".pt", ".pth", ".bin"):
            assert is_encrypted(file), file
    assert not (run.root / ".tmp").exists()  # the decrypted copy the Trainer resumed from is gone
    assert scan(run.root) == []
    # Same weights as a run never interrupted: the decrypted optimizer, scheduler and RNG states were restored.
    straight = finetune(load_config(path).model_copy(update={"name": "straight"}))
    resumed, uninterrupted = load_state(run.adapter / ADAPTER_WEIGHTS), load_state(RunDir(straight.run_dir).adapter / ADAPTER_WEIGHTS)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.allclose(resumed[name], uninterrupted[name], rtol=0, atol=1e-6), name
