"""``tuneforge lm-eval RUN``: score base and tuned on the run's held-out split with lm-evaluation-harness."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def lm_eval(
    run: Path = typer.Argument(..., help="Run directory (runs/NAME) with trained weights."),
    data: Optional[Path] = typer.Option(None, "--data", help="Test file (messages JSONL); default: RUN/data/test.jsonl."),
    max_examples: Optional[int] = typer.Option(None, "--max-examples", min=1, help="Score at most N examples."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="lm-eval's generation batch size."),
    max_gen_toks: int = typer.Option(32, "--max-gen-toks", min=1, help="Generated tokens per answer, at most."),
) -> int:
    """Run lm-evaluation-harness on a local task built from the run's held-out split, for base and tuned."""
    from tuneforge.eval.lm_harness import run_lm_eval

    result = run_lm_eval(run, data=data, max_examples=max_examples, batch_size=batch_size, max_gen_toks=max_gen_toks)
    typer.echo(result.table())
    typer.echo(f"task: {result.task.yaml_path}\nresults: {result.results_path}")
    return 0
