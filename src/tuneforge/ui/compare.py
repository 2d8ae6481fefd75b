"""Compare runs: their headline numbers in one table and their loss curves overlaid.

Pure functions over what :mod:`tuneforge.ui.runs` and :mod:`tuneforge.ui.tail` read,
so the page and a notebook get the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.rundir import RunDir
from tuneforge.ui.paths import confined, run_path
from tuneforge.ui.runs import RunSummary, read_json, summarize
from tuneforge.ui.tail import read_all_records

CURVES = ("loss", "eval_loss")


@dataclass(frozen=True)
class ComparedRun:
    summary: RunSummary
    final_loss: float | None
    best_eval_loss: float | None
    metrics: dict[str, float | None]
    """Tuned value of each evaluation metric."""
    curves: dict[str, list[tuple[int, float]]]


def curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` for the training and validation loss of a metrics log.

    Example:
        >>> curves([{"step": 1, "loss": 2.0}, {"step": 2, "eval_loss": 1.5}])
        {'loss': [(1, 2.0)], 'eval_loss': [(2, 1.5)]}
    """
    return {key: [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]
            for key in CURVES}


def compare_run(runs_dir: Path, name: str) -> ComparedRun:
    """One run's row and curves (raises :class:`~tuneforge.errors.SecurityError` for a name that leaves runs_dir)."""
    folder = run_path(runs_dir, name)
    metrics_log = confined(runs_dir, RunDir(folder).metrics)
    lines = curves(read_all_records(metrics_log))
    evaluation = read_json(runs_dir, RunDir(folder).eval / "metrics.json") or {}
    tuned = {k: (v or {}).get("tuned") for k, v in (evaluation.get("metrics") or {}).items()}
    return ComparedRun(
        summary=summarize(runs_dir, folder),
        final_loss=lines["loss"][-1][1] if lines["loss"] else None,
        best_eval_loss=min(v for _, v in lines["eval_loss"]) if lines["eval_loss"] else None,
        metrics=tuned, curves=lines,
    )


def metric_names(runs: list[ComparedRun]) -> list[str]:
    """Every evaluation metric of the compared runs, in first-seen order (the table's columns)."""
    return list(dict.fromkeys(name for run in runs for name in run.metrics))
