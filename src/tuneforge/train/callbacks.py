"""Trainer callbacks: a rich progress bar, the metrics.jsonl log, per-rank reports and a divergence stop.

Throughput is measured in real (non-padding) tokens per second: the collator
counts them, the trainer sums them, and these callbacks read the sum.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from transformers import TrainerCallback

from tuneforge.errors import TrainingError


class ThroughputMeter:
    """Real tokens per second between two readings, and over the whole run."""

    def __init__(self, tokens_seen: Callable[[], int]):
        self._tokens_seen = tokens_seen
        self.start = time.perf_counter()
        self._last_time = self.start
        self._last_tokens = 0

    def interval(self) -> float:
        now, tokens = time.perf_counter(), self._tokens_seen()
        rate = (tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_tokens = now, tokens
        return rate

    def overall(self) -> float:
        return self._tokens_seen() / max(time.perf_counter() - self.start, 1e-9)


class NonFiniteCallback(TrainerCallback):
    """Stop with :class:`TrainingError` when a logged loss, gradient norm or eval loss is not finite.

    A backstop to :class:`~tuneforge.train.trainer.TuneforgeTrainer`'s per-step checks that also
    covers evaluation; it runs on the log event, before the Trainer saves that step's checkpoint.
    """

    KEYS = ("loss", "grad_norm", "eval_loss")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in self.KEYS:
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise TrainingError(key, float(value), state.global_step, args.learning_rate)


class MetricsLogCallback(TrainerCallback):
    """Append every log event (loss, lr, eval metrics, tokens/s) to ``metrics.jsonl`` on the main process.

    ``append`` writes one record: :meth:`tuneforge.train.context.RunContext.append_metrics`.
    """

    def __init__(self, append: Callable[[dict], None], meter: ThroughputMeter):
        self.append = append
        self.meter = meter

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        if "loss" in logs:
            record["tokens_per_second"] = round(self.meter.interval(), 2)
        logs.update({k: v for k, v in record.items() if k == "tokens_per_second"})
        self.append(record)


class RichProgressCallback(TrainerCallback):
    """A progress bar with loss, learning rate, tokens/s and ETA (plain log lines when not a terminal)."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.progress = None
        self.task = None
        self.fields = {"loss": "-", "lr": "-", "tps": "-"}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, **self.fields)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            # total follows state.max_steps: a time budget (train/budget.py) re-plans it during training
            self.progress.update(self.task, completed=state.global_step, total=state.max_steps, **self.fields)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        if "loss" in logs:
            self.fields = {
                "loss": f"{logs['loss']:.4f}", "lr": f"{logs.get('learning_rate', 0):.2e}",
                "tps": f"{logs.get('tokens_per_second', 0):.0f}",
            }
            self.progress.update(self.task, **self.fields)
        if not self.console.is_terminal:
            shown = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in logs.items()}
            self.progress.console.print(f"step {state.global_step}/{state.max_steps} {shown}", highlight=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class RankReportCallback(TrainerCallback):
    """Each process writes what it trained (steps, tokens, a checksum of its trainable weights).

    With DDP the checksums of all ranks must agree: that is how a test sees
    that gradients were synchronised and every rank took part.
    """

    def __init__(self, write_json: Callable[[str, dict], Any], tokens_seen: Callable[[], int], model: Any):
        self.write_json = write_json  # RunContext.write_json: a path relative to the run folder, and a dict
        self.tokens_seen = tokens_seen
        self.model = model
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step  # > 0 when resumed from a checkpoint

    def on_train_end(self, args, state, control, **kwargs):
        import torch

        total = sum(float(p.detach().double().sum()) for p in self.model.parameters() if p.requires_grad)
        rank = args.process_index
        info = {"rank": rank, "world_size": args.world_size, "global_step": state.global_step,
                "start_step": self.start_step, "tokens_seen": self.tokens_seen(), "trainable_checksum": total,
                "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None}
        self.write_json(f"ranks/rank-{rank}.json", info)
