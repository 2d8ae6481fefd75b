"""`tuneforge tune CONFIG`: hyperparameter search over whole runs (optuna)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def tune(
    config: Path = typer.Argument(..., help="Run config (YAML) with a search: section.", show_default=False),
    trials: Optional[int] = typer.Option(None, "--trials", help="Finished trials the study should hold (default: search.trials)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="End the search after this many seconds: a trial still training then is stopped and counted as failed."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="Optuna storage URL shared by workers (default: sqlite under out_dir/<study>/)."
    ),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: the config's name)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config field for every trial (repeatable)."),
) -> int:
    """Search hyperparameters: each trial is a real run; killed searches resume; workers can share a study."""
    from tuneforge.extras import require_extra

    require_extra("search", "optuna")  # named before anything is imported or trained
    from tuneforge.search import tune as run_search

    result = run_search(config, trials=trials, timeout=timeout, storage=storage, study=study, overrides=overrides)
    typer.echo(f"study directory: {result.study_dir}")
    if result.best_config is not None:
        typer.echo(f"best: {result.best_params} -> {result.best_value:.6g}; config: {result.best_config}")
    else:
        typer.echo("no trial completed; see the report for why")
    typer.echo(f"report: {result.report}")
    return 0
