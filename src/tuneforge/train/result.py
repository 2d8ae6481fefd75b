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
    stages: list["FinetuneResult"] = field(default_factory=list)
    """A multi-stage run's results, one per stage in order (this result is the last one's)."""

    @classmethod
    def from_run(cls, paths: RunDir) -> "FinetuneResult":
        """The stored numbers of a finished run: its ``manifest.json`` and evaluation (``eval/metrics.json``)."""
        manifest = _read_json(paths.manifest) or {}
        stored_eval = _read_json(paths.eval / "metrics.json")
        evaluation = None
        if stored_eval is not None:
            from tuneforge.eval.result import EvalResult

            try:
                evaluation = EvalResult.from_dict(stored_eval)
            except (KeyError, TypeError, ValueError):
                evaluation = None  # an evaluation from another version: the report files still hold it
        return cls(
            run_dir=paths.root, global_step=int(manifest.get("global_step", 0)),
            train_loss=manifest.get("train_loss"), tokens_per_second=float(manifest.get("tokens_per_second", 0.0)),
            manifest=manifest, eval=evaluation, already_finished=True,
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
