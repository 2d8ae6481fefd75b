"""The layout of a run directory, in one place.

``runs/<name>/`` holds everything a run produced (``runs/audit.jsonl``, beside it, is the audit log)::

    config.yaml          the resolved config (every default written out)
    data_report.json     what data cleaning kept, dropped and why
    data/                held-out splits (test.jsonl, validation.jsonl), training token lengths (lengths.json)
    adapter/             PEFT adapter + tokenizer (LoRA/DoRA/...), loadable by PeftModel.from_pretrained
    model/               full model + tokenizer (method: full), loadable by AutoModelForCausalLM
    checkpoints/         Trainer checkpoints (resume)
    metrics.jsonl        one JSON line per logging/eval event
    tensorboard/         TensorBoard event files
    manifest.json        package versions, data SHA-256, seed, wall time, tokens/s, peak memory
    status.json          running / finished / failed (with the error); written last when a run ends
    .lock                held (flock) by the process writing the run; holds its PID
    eval/                report.md, report.html, metrics.json, predictions.jsonl, *.png; progress.json while it runs
    README.md            the model card: base model + hash, data + SHA-256 + licence, eval, audit entry
    merged/              `tuneforge merge` output
    export/              `tuneforge export` output

This module only names paths and reads state; :class:`tuneforge.train.context.RunContext`
is the one writer of run files. Run folders are private (0700, files 0600): they hold
the test split, predictions and data report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RunState = Literal["new", "running", "finished", "failed", "killed"]


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data_report(self) -> Path:
        return self.root / "data_report.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def test_split(self) -> Path:
        """The held-out test examples (canonical messages), so `tuneforge eval RUN` reuses them."""
        return self.root / "data" / "test.jsonl"

    @property
    def validation_split(self) -> Path:
        return self.root / "data" / "validation.jsonl"

    @property
    def train_lengths(self) -> Path:
        """``{"train": [[tokens, count], ...]}``: the training split's lengths (the split itself is not stored)."""
        return self.root / "data" / "lengths.json"

    @property
    def eval_progress(self) -> Path:
        """``{"done", "total", "phase", "elapsed_s"}`` of the final evaluation while it generates."""
        return self.root / "eval" / "progress.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def state(self) -> RunState:
        """Where the run stands: ``running`` (a process holds its lock), ``killed`` (marked running,
        but no process holds the lock), ``finished``, ``failed`` or ``new`` (nothing started)."""
        from tuneforge.train.lock import holder_pid

        recorded = self.recorded_state()
        if recorded == "running" and holder_pid(self.lock) is None:
            return "killed"
        return recorded

    def recorded_state(self) -> RunState:
        """The state ``status.json`` records, without asking whether its writer is still alive."""
        try:
            recorded = json.loads(self.status.read_text(encoding="utf-8")).get("state")
        except (OSError, ValueError, AttributeError):
            # Runs from before status.json: finished when the manifest and weights are there.
            return "finished" if self.manifest.is_file() and self.is_run() else "new"
        return recorded if recorded in ("running", "finished", "failed", "killed") else "new"

    def is_run(self) -> bool:
        return self.config.is_file() and (self.adapter.is_dir() or self.model.is_dir())

    @property
    def weights(self) -> Path:
        """The trained weights: the adapter for PEFT methods, else the full model."""
        return self.adapter if self.adapter.is_dir() else self.model
