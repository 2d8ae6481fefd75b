"""`tuneforge validate CONFIG`: check a config and its data without loading a model for training."""

from __future__ import annotations

from pathlib import Path

import typer


def validate(
    config: Path = typer.Argument(..., help="Run config (YAML).", show_default=False),
    overrides: list[str] = typer.Option([], "--set", help="Override a config field (repeatable)."),
    report: Path = typer.Option(None, "--report", help="Also write the data report as JSON here."),
) -> int:
    """Validate the config and what it points to, read and clean the data with the model's tokenizer, print the data
    report and an estimate of peak memory and time per epoch on this machine (warning when it exceeds the memory limit)."""
    from rich.console import Console

    from tuneforge import load_config
    from tuneforge.data import prepare
    from tuneforge.models import load_tokenizer, resolve
    from tuneforge.config.preflight import preflight
    from tuneforge.config.schema import SUPERVISED_OBJECTIVES
    from tuneforge.train.estimate import plan_config

    console = Console()
    cfg = load_config(config, overrides)
    preflight(cfg)  # run folder, disk space, data files, target modules, labels: what `train` would trip on
    console.print(f"[green]config OK[/] ({config}): model {cfg.model.name_or_path}, method {cfg.method.name}")
    tokenizer = load_tokenizer(resolve(cfg.model), revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
    supervised = cfg.training.objective in SUPERVISED_OBJECTIVES
    if supervised:  # SFT, and distillation (its student trains on the same examples)
        prepared = prepare(cfg.data, tokenizer, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed,
                           labels=cfg.eval.labels)
    else:  # preference objectives learn from pairs
        from tuneforge.data.preferences import prepare_pairs

        prepared = prepare_pairs(cfg.data, tokenizer, max_seq_length=cfg.training.max_seq_length,
                                 seed=cfg.training.seed, objective=cfg.training.objective)
    console.print(prepared.report.table())
    if report is not None:
        prepared.report.write(report)
    console.print(
        f"[green]data OK[/]: {len(prepared.train)} train, {len(prepared.validation_examples)} validation, "
        f"{len(prepared.test_examples)} test examples ({prepared.format} format)"
    )
    if not supervised:  # the estimator models the token-budget batches of supervised objectives only
        console.print(f"no memory estimate for objective {cfg.training.objective!r} yet", highlight=False)
        return 0
    for line in plan_config(cfg, prepared.train).lines():
        console.print(f"[yellow]{line}[/]" if line.startswith("warning") else line, highlight=False)
    return 0
