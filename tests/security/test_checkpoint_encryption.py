"""Encrypted checkpoints: written and read through the run's key in memory, and a killed encrypted run resumes from them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from tuneforge import finetune, load_config
from tuneforge.models.sealed import ADAPTER_WEIGHTS, load_state
from tuneforge.rundir import RunDir
from tuneforge.security import read_file
from tuneforge.security.crypto import is_encrypted

from tests.security.conftest import CANARY, KEY_ENV, encrypted_config, new_key, scan

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
        """Complete checkpoints (the Trainer writes trainer_state.json last), their files all encrypted."""
        done = []
        for folder in run.checkpoints.glob("checkpoint-*"):
            files = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".pt", ".pth", ".bin")]
            if (folder / "trainer_state.json").exists() and all(is_encrypted(p) for p in files):
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
    assert not (run.root / ".tmp").exists()
    assert scan(run.root) == []
    # Same weights as a run never interrupted: the decrypted optimizer, scheduler and RNG states were restored.
    straight = finetune(load_config(path).model_copy(update={"name": "straight"}))
    resumed, uninterrupted = load_state(run.adapter / ADAPTER_WEIGHTS), load_state(RunDir(straight.run_dir).adapter / ADAPTER_WEIGHTS)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.allclose(resumed[name], uninterrupted[name], rtol=0, atol=1e-6), name


class _CrashAt(TrainerCallback):
    """Stops training with an error at ``step`` (after a checkpoint was written): a crash to resume from."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("simulated crash")


def _canary_pairs(path: Path, n: int = 40) -> Path:
    rows = [{"prompt": f"{CANARY} ticket {i}: classify it.", "chosen": f"Queue: label{i % 4}", "rejected": f"label{i % 4}"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("objective", ["sft", "dpo"])  # our Trainer, and a TRL trainer with its own checkpoint code
def test_no_checkpoint_file_is_ever_written_or_read_in_plaintext(objective, tmp_path, tiny_model_dir, monkeypatch):
    """Every torch.save / safetensors save_file to a path, and every torch.load of a path, during an
    encrypted run and its resume: none may touch a plaintext file in the run (the ciphertext is
    written from memory and read into memory)."""
    import peft.peft_model
    import safetensors.torch
    import transformers.modeling_utils

    monkeypatch.setenv(KEY_ENV, new_key())
    sections = {}
    if objective == "dpo":
        sections["data"] = {"train": str(_canary_pairs(tmp_path / "pairs.jsonl")), "split": {"validation": 0.1, "test": 0.1}}
    path = encrypted_config(tmp_path, tiny_model_dir, name="spied", eval={"enabled": False},
                            training={**_TRAINING, "max_steps": 8, "save_total_limit": None, "objective": objective},
                            **sections)
    cfg = load_config(path)
    run = RunDir(cfg.run_dir)
    writes: list[str] = []
    reads: list[str] = []

    def spy_save(original):
        def save(obj, f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)):
                writes.append(str(f))
            return original(obj, f, *args, **kwargs)
        return save

    def spy_load(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and str(Path(f).resolve()).startswith(str(run.root.resolve())):
            reads.append(str(f))
        return torch_load(f, *args, **kwargs)

    torch_load = torch.load
    monkeypatch.setattr(torch, "save", spy_save(torch.save))
    monkeypatch.setattr(torch, "load", spy_load)
    for module, name in ((safetensors.torch, "save_file"), (peft.peft_model, "safe_save_file"),
                         (transformers.modeling_utils, "safe_save_file")):
        monkeypatch.setattr(module, name, spy_save(getattr(module, name)))

    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, callbacks=[_CrashAt(6)])
    checkpoint = run.checkpoints / "checkpoint-4"
    names = sorted(p.name for p in checkpoint.iterdir())
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        assert name in names and is_encrypted(checkpoint / name), name
    result = finetune(load_config(path), resume=True)
    assert result.global_step == 8 and run.state() == "finished"
    rank = json.loads(read_file(run.root / "ranks" / "rank-0.json"))
    assert rank["start_step"] == 4  # continued from the encrypted checkpoint
    assert writes == [], f"written to a path in plaintext: {writes}"
    assert reads == [], f"read from a plaintext path: {reads}"
    assert scan(run.root) == []
