"""Training for a time budget (training.max_time): the plan, the schedule that ends on it, and the deadline."""

import json
import math

import torch
from transformers import TrainingArguments, get_scheduler

from tuneforge import finetune, load_config
from tuneforge.rundir import RunDir
from tuneforge.train.budget import retarget_schedule, steps_that_fit


def test_steps_that_fit_reserve_periodic_and_final_evaluations_and_saves():
    assert steps_that_fit(10.0, 0.5) == 20
    # 100 s, 1 s a step, a 5 s evaluation every 10 steps and one more at the end: 63 steps + 7 evaluations = 98 s.
    assert steps_that_fit(100.0, 1.0, eval_every=10, eval_seconds=5.0) == 63
    assert steps_that_fit(100.0, 1.0, save_every=50, save_seconds=10.0) == 75
    assert steps_that_fit(1.0, 2.0) == 0


def test_retargeted_schedule_is_the_library_schedule_for_the_new_horizon(tmp_path):
    args = TrainingArguments(str(tmp_path), lr_scheduler_type="cosine", warmup_steps=0.1, learning_rate=1.0,
                             report_to="none")
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight], lr=1.0)
    running = get_scheduler("cosine", optimizer, num_warmup_steps=10**8, num_training_steps=10**9)
    for _ in range(5):
        optimizer.step()
        running.step()
    retarget_schedule(running, args, 50)
    reference = get_scheduler("cosine", torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                              num_warmup_steps=5, num_training_steps=50)
    for _ in range(5):
        reference.optimizer.step()
        reference.step()
    for _ in range(45):  # the same learning rate at every remaining step, ending at 0
        assert running.get_last_lr() == reference.get_last_lr()
        optimizer.step()
        running.step()
        reference.optimizer.step()
        reference.step()
    assert running.get_last_lr()[0] == 0.0


def _cosine(step: int, warmup: int, horizon: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, horizon - warmup)))


def test_a_10s_budget_ends_on_time_with_the_schedule_on_its_planned_last_step(run_config):
    lr, budget = 1e-3, 10.0
    path = run_config(training={"max_steps": None, "max_time": "10s", "logging_steps": 5, "learning_rate": lr,
                                "eval_strategy": "steps", "eval_steps": 20, "save_steps": 40})
    result = finetune(load_config(path))
    manifest = result.manifest
    # Ends within the budget, give or take one step and the final checkpoint (generous: the CPU is shared).
    assert budget * 0.6 < manifest["train_loop_seconds"] < budget + 4, manifest
    assert manifest["max_time_seconds"] == budget and manifest["epochs_reached"] > 0
    planned = manifest["planned_steps"]
    records = [json.loads(line) for line in RunDir(result.run_dir).metrics.read_text().splitlines()]
    steps = [r for r in records if "learning_rate" in r]
    last = steps[-1]
    assert last["step"] == result.global_step == planned > 20
    assert any("eval_loss" in r for r in records)  # evaluations ran inside the budget
    # The last step ran at (nearly) zero after reaching the peak on the way.
    assert last["learning_rate"] < 0.01 * lr
    assert max(r["learning_rate"] for r in steps) > 0.5 * lr
    # The schedule's horizon is the plan: after the last step, the cosine factor is exactly cos(pi) -> 0
    # (with a horizon one step further it would still be above zero).
    scheduler = torch.load(RunDir(result.run_dir).checkpoints / f"checkpoint-{planned}" / "scheduler.pt")
    assert scheduler["last_epoch"] == planned and set(scheduler["_last_lr"]) == {0.0}


def test_max_steps_bounds_the_budget(run_config):
    path = run_config(training={"max_steps": 7, "max_time": "1h", "logging_steps": 1, "learning_rate": 1e-3})
    result = finetune(load_config(path))
    assert result.global_step == 7 and result.manifest["planned_steps"] == 7
    records = [json.loads(line) for line in RunDir(result.run_dir).metrics.read_text().splitlines()]
    last = [r for r in records if "learning_rate" in r][-1]
    assert math.isclose(last["learning_rate"], 1e-3 * _cosine(6, 1, 7), rel_tol=1e-6)


def test_two_processes_agree_on_the_plan_and_stop_together(run_config):
    # Each process times its own steps; if each followed its own plan, the first to stop would leave
    # the other waiting in an all-reduce forever. The launch's timeout turns such a hang into a failure.
    import os
    import subprocess
    import sys
    from pathlib import Path

    lora = {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    path = run_config(name="ddp-budget", method=lora,
                      training={"max_steps": None, "max_time": "8s", "per_device_batch_size": 2, "logging_steps": 5,
                                "save_strategy": "no"})
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541",
           "-m", "tuneforge", "train", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunDir(load_config(path).run_dir)
    ranks = [json.loads((run.root / "ranks" / f"rank-{i}.json").read_text()) for i in (0, 1)]
    manifest = json.loads(run.manifest.read_text())
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == manifest["global_step"] > 5
    assert manifest["train_loop_seconds"] < 8 + 6


def test_a_slowdown_late_in_the_run_still_ends_at_the_deadline(run_config):
    # Steps become much slower after step 15 (another job takes the machine): the plan made from the
    # fast steps no longer fits, and the run must re-plan or stop at the deadline, not overrun it.
    import time as clock

    from transformers import TrainerCallback

    from tuneforge.train.pipeline import finetune as run_finetune

    class SlowDown(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step >= 15:
                clock.sleep(0.25)

    path = run_config(training={"max_steps": None, "max_time": "8s", "logging_steps": 5, "save_strategy": "no"})
    result = run_finetune(load_config(path), callbacks=[SlowDown()])
    manifest = result.manifest
    assert manifest["train_loop_seconds"] < 8 + 1.5, manifest  # at most about one slow step over
    assert result.global_step > 15 and manifest["plans"] >= 2
