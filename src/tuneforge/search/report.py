"""The study's report: a table of trials (``trials.md`` + ``trials.csv``) and optuna's plots.

Plots use ``optuna.visualization.matplotlib``, which needs the optional ``plots`` extra; without
matplotlib the report says they were skipped instead of failing the search.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tuneforge.config.schema import SearchConfig


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, last step reported, params, run folder."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = sorted(t.intermediate_values)
        rows.append({
            "trial": t.number, "state": t.state.name.lower(),
            "value": t.value if t.value is not None else (t.intermediate_values[steps[-1]] if steps else None),
            "last_step": steps[-1] if steps else None,
            "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
            **{k: v for k, v in t.params.items()},
            "run_dir": t.user_attrs.get("run_dir", ""),
        })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)\n"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    fmt = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(study: optuna.Study, search: SearchConfig, study_dir: Path, console: Any) -> Path:
    """Write ``report.md``, ``trials.csv`` and the plots under ``study_dir``; print the table."""
    rows = trial_rows(study)
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    direction = "maximize" if search.maximize else "minimize"
    parts = [f"# Study {study.study_name}\n",
             f"Objective: validation {search.metric} ({direction}); sampler {search.sampler}, pruner {search.pruner}.\n",
             "Trials: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + ".\n"]
    if counts["complete"]:
        best = study.best_trial
        parts.append(f"Best: trial {best.number}, {search.metric} {best.value:.6g}, params {best.params}; "
                     "config in best.yaml.\n")
    parts += ["## Trials\n", markdown_table(rows)]
    parts.append("## Plots\n" + _plots(study, study_dir))
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    (study_dir / "trials.csv").write_text(buf.getvalue())
    report = study_dir / "report.md"
    report.write_text("\n".join(parts))
    console.print(markdown_table(rows), markup=False, highlight=False)
    return report


def _plots(study: optuna.Study, study_dir: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display on a training machine
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm
    except ImportError:
        return "Plots skipped: matplotlib is not installed (pip install 'tuneforge[plots]').\n"
    lines = []
    for name, plot in (("history.png", ovm.plot_optimization_history), ("importances.png", ovm.plot_param_importances)):
        try:
            ax = plot(study)
        except (ValueError, RuntimeError) as exc:  # importances need 2+ complete trials with varied params
            lines.append(f"- {name}: skipped ({exc})")
            continue
        ax.figure.savefig(study_dir / name, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        lines.append(f"![{name}]({name})")
    return "\n".join(lines) + "\n"
