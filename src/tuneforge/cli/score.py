"""``tuneforge score RUN --data FILE``: score preference pairs or completions with a reward model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli.options import trust_remote_code_option, warn_trust_remote_code


def score(
    target: str = typer.Argument(..., help="A reward-model run (training.objective: reward) or its merged folder."),
    data: Path = typer.Option(..., "--data", help="Pairs (prompt/chosen/rejected) or prompts with completions (JSONL, JSON, CSV, Parquet)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write one JSON line per row here; default: print them."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences scored per forward pass."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> int:
    """Score each row with a reward model; for pairs, also the pairwise accuracy with its 95% CI."""
    from rich.console import Console

    from tuneforge.eval.score_file import score_file

    warn_trust_remote_code(trust_remote_code, target)
    result = score_file(target, data, out=out, batch_size=batch_size, trust_remote_code=trust_remote_code)
    console = Console(stderr=True)  # the summary; the rows go to stdout (or --out), ready for a pipe
    if out is None:
        for row in result.rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
    if result.eval is not None:
        acc = result.eval.metrics["pairwise_accuracy"]
        lo, hi = acc.tuned_ci
        console.print(f"pairwise_accuracy {acc.tuned:.3f} (95% CI [{lo:.3f}, {hi:.3f}], n={acc.n}; chance 0.5)",
                      highlight=False)
    console.print(f"scored {len(result.rows)} {result.kind}" + (f" into {out}" if out else ""), highlight=False)
    return 0
