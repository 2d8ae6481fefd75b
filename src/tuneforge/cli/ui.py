"""``tuneforge ui``: the web dashboard over a runs folder (runs, live curves, eval evidence, predictions)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def ui(
    runs: Path = typer.Option(Path("runs"), "--runs", help="The folder holding one folder per run."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; beyond loopback --api-keys-file is required."),
    port: int = typer.Option(7860, min=1, max=65535, help="Port to listen on (1-65535)."),
    api_keys_file: Optional[Path] = typer.Option(
        None, "--api-keys-file", help="Keys file from `tuneforge keys create`; required off loopback."
    ),
) -> None:
    """Open the dashboard in a browser: every run, its curves while it trains, base vs tuned, predictions."""
    from tuneforge.ui import run

    run(runs, host=host, port=port, keys_file=api_keys_file)
