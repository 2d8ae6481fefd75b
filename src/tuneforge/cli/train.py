"""`tuneforge train CONFIG`: the whole fine-tuning path for one config."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="Run config (YAML).", show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint of this run."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config field: --set training.learning_rate=1e-4 (repeatable)."
    ),
) -> int:
    """Prepare the data, fine-tune, save the adapter or model, and evaluate base vs tuned."""
    from tuneforge import finetune, load_config

    result = finetune(load_config(config, overrides), resume=resume)
    typer.echo(f"run directory: {result.run_dir}")
    return 0
