"""``tuneforge merge RUN``: fold a run's adapter into the base weights (a plain Hugging Face folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneforge.cli.options import overwrite_option, trust_remote_code_option, warn_trust_remote_code


def merge(
    run: Annotated[str, typer.Argument(help="A run directory (runs/NAME) or a PEFT adapter folder.")],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Where to write the merged model (default: RUN/merged).")
    ] = None,
    overwrite: bool = overwrite_option(),
    trust_remote_code: bool = trust_remote_code_option(),
) -> int:
    """Merge a LoRA/DoRA adapter into its base model and save it as safetensors with the tokenizer."""
    from tuneforge.export import merge as merge_adapter

    warn_trust_remote_code(trust_remote_code, run)
    path = merge_adapter(run, output, overwrite=overwrite, trust_remote_code=trust_remote_code)
    typer.echo(f"merged model written to {path}")
    return 0
