"""``tuneforge prune MODEL --keep-layers N -o DIR``: a depth-pruned copy of a model, as a plain Hugging Face folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.options import overwrite_option, trust_remote_code_option, warn_trust_remote_code
from tuneforge.errors import ModelError


def prune(
    model: Annotated[str, typer.Argument(help="A run directory, PEFT adapter folder, model folder or alias.")],
    keep_layers: Annotated[str, typer.Option(
        "--keep-layers", help="How many layers to keep (spread evenly, first and last included), e.g. 15, "
        "or a comma-separated list of layer indices, e.g. 0,2,4,29.",
    )],
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write.")],
    overwrite: bool = overwrite_option(),
    trust_remote_code: bool = trust_remote_code_option(),
) -> int:
    """Keep some of a model's decoder layers (a smaller distillation student) and save it with its tokenizer."""
    from tuneforge.models.prune import prune as prune_model

    warn_trust_remote_code(trust_remote_code, model)
    path = prune_model(model, parse_keep_layers(keep_layers), output, overwrite=overwrite,
                       trust_remote_code=trust_remote_code)
    typer.echo(f"pruned model written to {path}")
    return 0


def parse_keep_layers(text: str) -> int | list[int]:
    """``"15"`` -> 15, ``"0,2,4"`` -> [0, 2, 4].

    Raises:
        ModelError: not a number or a comma-separated list of numbers.
    """
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ModelError(f"--keep-layers: expected a count such as 15 or indices such as 0,2,4 (got {text!r})")
    return int(parts[0]) if len(parts) == 1 and "," not in text else [int(p) for p in parts]
