"""``tuneforge eval RUN_OR_MODEL``: evaluate a run or model against its baseline and write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli.options import trust_remote_code_option, warn_trust_remote_code


def _split(value: Optional[str]) -> Optional[list[str]]:
    return [item.strip() for item in value.split(",") if item.strip()] if value is not None else None


def evaluate(
    target: str = typer.Argument(..., help="Run directory, adapter folder, model folder, .gguf file or alias."),
    data: Optional[Path] = typer.Option(None, "--data", help="Test file; default: the run's held-out test split."),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", help="'base' (the starting model), 'none', or a run/model to compare with; default: the config's."
    ),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics, e.g. accuracy,macro_f1."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated label set for classification."),
    max_examples: Optional[int] = typer.Option(None, "--max-examples", min=1, help="Evaluate at most N examples."),
    output: Optional[Path] = typer.Option(None, "--output", help="Report folder; default RUN/eval or ./eval-<name>."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> int:
    """Evaluate a run or model: task metrics, base vs tuned with 95% CIs, forgetting check, report."""
    from rich.console import Console

    from tuneforge.eval import evaluate as run_evaluation
    from tuneforge.eval.target import KEEP

    warn_trust_remote_code(trust_remote_code, target)
    result = run_evaluation(
        target, data=data, baseline=KEEP if baseline is None else baseline, metrics=_split(metrics),
        labels=_split(labels), max_examples=max_examples, output=output,
        trust_remote_code=trust_remote_code,
    )
    console = Console()
    console.print(result.summary_table())
    if result.forgetting is not None and result.forgetting.flagged:
        console.print(f"[bold yellow]forgetting:[/] general-text perplexity rose {result.forgetting.rise:+.1%}")
    console.print(f"report: {result.paths['html']}", soft_wrap=True, highlight=False)
    return 0
