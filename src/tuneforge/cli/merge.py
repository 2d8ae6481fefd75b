"""``tuneforge merge RUN``: fold a run's adapter into the base weights (a plain Hugging Face folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def merge(
    run: Annotated[str, typer.Argument(help="A run directory (runs/NAME) or a PEFT adapter folder.")],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Where to write the merged model (default: RUN/merged).")
    ] = None,
) -> int:
    """Merge a LoRA/DoRA adapter into its base model and save it as safetensors with the tokenizer."""
    from tuneforge.export import merge as merge_adapter

    path = merge_adapter(run, output)
    typer.echo(f"merged model written to {path}")
    return 0
