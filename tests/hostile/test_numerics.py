"""Hostile hyperparameters: a run that diverges stops with a clear error and saves no weights."""

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerControl, TrainerState, TrainingArguments

from tuneforge import TrainingError
from tuneforge.cli.main import main
from tuneforge.models import load
from tuneforge.train.callbacks import NonFiniteCallback
from tuneforge.train.trainer import TuneforgeTrainer


def _config(tmp_path, model_dir, **training):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Question {i}?", "output": f"Answer {i % 4}."}) + "\n" for i in range(40)))
    cfg = {
        "name": "diverge", "out_dir": str(tmp_path / "runs"), "model": str(model_dir),
        "method": {"name": "full"}, "data": {"train": str(data), "split": {"validation": 0, "test": 0.1}},
        "training": {"max_steps": 8, "per_device_batch_size": 2, "max_seq_length": 64, "precision": "fp32",
                     "logging_steps": 10, "save_steps": 100, "warmup_ratio": 0, **training},
        "eval": {"enabled": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_huge_learning_rate_stops_with_an_error_and_saves_nothing(tmp_path, tiny_model_dir, capsys):
    assert main(["train", str(_config(tmp_path, tiny_model_dir, learning_rate=1e30, save_steps=1, save_total_limit=None))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "training diverged at step" in err and "not finite" in err
    assert "Lower training.learning_rate (it is 1e+30)" in err
    # Detected on the step it happened, long before the first log (logging_steps 10) or the last step.
    step = int(err.split("training diverged at step ")[1].split(":")[0])
    assert step < 8
    run = tmp_path / "runs" / "diverge"
    assert not (run / "model").exists() and not (run / "adapter").exists() and not (run / "manifest.json").exists()
    # Checkpoints every step: only those before the diverged step exist, and their weights are finite.
    saved = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*"))
    assert saved == list(range(1, step))
    for n in saved:
        weights = load_file(run / "checkpoints" / f"checkpoint-{n}" / "model.safetensors")
        assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_sane_learning_rate_still_trains(tmp_path, tiny_model_dir):
    assert main(["train", str(_config(tmp_path, tiny_model_dir, learning_rate=1e-3, max_steps=2))]) == 0
    assert (tmp_path / "runs" / "diverge" / "model").is_dir()


@pytest.fixture
def trainer(tmp_path, tiny_model_dir):
    model = load(tiny_model_dir).model
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], learning_rate=0.5, use_cpu=True)
    return TuneforgeTrainer(model=model, args=args, train_dataset=[{"input_ids": [1, 2], "labels": [1, 2]}])


def test_infinite_gradient_norm_stops_before_the_optimizer_step(trainer):
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    assert math.isfinite(float(trainer._get_grad_norm(trainer.model)))
    params[0].grad[0, 0] = float("inf")
    before = params[0].detach().clone()
    with pytest.raises(TrainingError, match=r"step 1: grad_norm is inf .*learning_rate \(it is 0.5\)"):
        trainer._get_grad_norm(trainer.model)
    assert torch.equal(before, params[0].detach())


@pytest.mark.parametrize("key, value", [("loss", float("nan")), ("grad_norm", float("inf")), ("eval_loss", float("-inf"))])
def test_callback_stops_on_a_non_finite_log(key, value, tmp_path):
    state = TrainerState(global_step=7)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], learning_rate=3e-4)
    with pytest.raises(TrainingError, match=rf"step 7: {key} is {value}"):
        NonFiniteCallback().on_log(args, state, TrainerControl(), logs={key: value, "learning_rate": 3e-4})
    NonFiniteCallback().on_log(args, state, TrainerControl(), logs={"loss": 1.5, "grad_norm": 0.3, "eval_loss": 2.0})
