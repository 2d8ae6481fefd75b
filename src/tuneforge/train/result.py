"""What a training run returns: :class:`FinetuneResult`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.rundir import RunDir


@dataclass
class FinetuneResult:
    """What a run produced: where it is, the training numbers and (main process) the evaluation."""

    run_dir: Path
    global_step: int
    train_loss: float | None
    tokens_per_second: float
    manifest: dict[str, Any] = field(default_factory=dict)
    eval: Any = None
    already_finished: bool = False
    """True when the run had finished before and nothing was trained (its stored numbers)."""

    @classmethod
    def from_run(cls, paths: RunDir) -> "FinetuneResult":
        """The stored numbers of a finished run (from its ``manifest.json``)."""
        try:
            manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
        return cls(
            run_dir=paths.root, global_step=int(manifest.get("global_step", 0)),
            train_loss=manifest.get("train_loss"), tokens_per_second=float(manifest.get("tokens_per_second", 0.0)),
            manifest=manifest, already_finished=True,
        )
