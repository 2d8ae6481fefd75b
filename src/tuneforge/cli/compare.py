"""``tuneforge compare RUN_A RUN_B ...``: several runs' evaluation metrics side by side."""

from __future__ import annotations

from pathlib import Path

import typer


def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more run directories (or evaluation folders)."),
    output: Path = typer.Option(Path("."), "--output", help="Folder for compare.md and compare.png."),
) -> int:
    """Compare evaluated runs: prints a table and writes compare.md and compare.png."""
    from rich.console import Console

    from tuneforge.eval import compare_runs

    comparison = compare_runs(runs, output=output)
    console = Console()
    console.print(comparison.table())
    console.print(f"written: {', '.join(str(p) for p in comparison.paths.values())}", soft_wrap=True, highlight=False)
    return 0
