"""Several runs' evaluation results side by side: a table, ``compare.md`` and ``compare.png``.

Reads each run's saved ``eval/metrics.json``; no model runs. Each cell shows
the tuned value and, when the run had a baseline, its difference from it with
the 95% interval, so runs evaluated against the same base line up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import EvalError
from tuneforge.eval.plots import plot_runs
from tuneforge.eval.result import EvalResult, fmt, fmt_ci
from tuneforge.rundir import RunDir


@dataclass
class RunsComparison:
    """The runs compared, their results, and the files written."""

    results: dict[str, EvalResult]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def metric_names(self) -> list[str]:
        return list(dict.fromkeys(n for r in self.results.values() for n in r.metrics))

    def rows(self) -> list[list[str]]:
        """One row per metric: the metric, then per run ``tuned (Δ ±, CI)``."""
        out = []
        for name in self.metric_names:
            row = [name]
            for result in self.results.values():
                mc = result.metrics.get(name)
                if mc is None:
                    row.append("-")
                elif mc.diff is None:
                    row.append(fmt(mc.tuned))
                else:
                    row.append(f"{fmt(mc.tuned)} (Δ {fmt(mc.diff, signed=True)} {fmt_ci(mc.diff_ci)})")
            out.append(row)
        return out

    def table(self) -> Any:
        """The comparison as a ``rich`` table (metric rows, run columns)."""
        from rich.table import Table

        table = Table(title="Runs compared (tuned value, Δ vs each run's baseline, 95% CI)")
        table.add_column("metric")
        for run in self.results:
            table.add_column(run, justify="right")
        for row in self.rows():
            table.add_row(*row)
        return table


def _load(target: Path) -> EvalResult:
    metrics = RunDir(target).eval / "metrics.json" if target.is_dir() else target
    if target.is_dir() and not metrics.is_file():
        metrics = target / "metrics.json"  # an evaluation folder given directly
    if not metrics.is_file():
        raise EvalError(f"{target}: no evaluation found (expected {RunDir(target).eval / 'metrics.json'}); "
                        "run `tuneforge eval` on it first")
    try:
        return EvalResult.from_dict(json.loads(metrics.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EvalError(f"{metrics} is not an evaluation result: {exc}") from exc


def compare_runs(targets: Sequence[str | Path], *, output: str | Path = ".") -> RunsComparison:
    """Put several runs' metrics side by side and write ``compare.md`` and ``compare.png`` into ``output``.

    Args:
        targets: Run directories, evaluation folders, or ``metrics.json`` files.
        output: Folder for the files (created when missing).

    Raises:
        EvalError: fewer than two targets, or a target without a saved evaluation.

    Example:
        >>> compare_runs(["runs/lora-r8", "runs/lora-r16"], output="reports").paths["markdown"]
        PosixPath('reports/compare.md')
    """
    if len(targets) < 2:
        raise EvalError("compare needs at least two runs")
    results: dict[str, EvalResult] = {}
    for target in targets:
        target = Path(target)
        label = target.stem if target.is_file() else target.name
        while label in results:  # two runs with the same folder name in different places
            label += "'"
        results[label] = _load(target)
    comparison = RunsComparison(results)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_runs({run: r.metrics for run, r in results.items()}, out / "compare.png")
    lines = ["# Runs compared", "", "Tuned value; Δ and 95% paired-bootstrap CI against each run's own baseline.", ""]
    lines += ["| metric | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in comparison.rows()]
    lines += ["", "| run | baseline | examples | forgetting (ppl rise) |", "|---|---|---|---|"]
    for run, r in results.items():
        f = r.forgetting
        forget = "-" if f is None else f"{f.rise:+.1%}" + (" FLAGGED" if f.flagged else "")
        lines.append(f"| {run} | {r.baseline_name or 'none'} | {r.examples} | {forget} |")
    if plot:
        lines += ["", "![Runs compared](compare.png)"]
        comparison.paths["plot"] = plot
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    comparison.paths["markdown"] = out / "compare.md"
    return comparison
