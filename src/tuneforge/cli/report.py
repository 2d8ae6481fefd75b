"""``tuneforge report RUN``: re-render a run's evaluation report from its saved files (no model runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def report(
    target: Path = typer.Argument(..., help="Run directory, or an evaluation folder holding metrics.json."),
    metrics_log: Optional[Path] = typer.Option(
        None, "--metrics-log", help="Training log for the loss plot; default RUN/metrics.jsonl."
    ),
) -> int:
    """Re-render report.md, report.html and the plots from eval/metrics.json and predictions.jsonl."""
    from rich.console import Console

    from tuneforge.eval import render_report

    result = render_report(target, metrics_log=metrics_log)
    console = Console()
    console.print(result.summary_table())
    console.print(f"report: {result.paths['html']}", soft_wrap=True, highlight=False)
    return 0
