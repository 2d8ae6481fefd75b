"""The whole fine-tuning path for one config: open the run, run its recipe, mark it finished.

What is trained and how lives in the recipe that ``training.objective`` selects
(:mod:`tuneforge.train.recipes`); this function only owns the run's life cycle,
so a new objective never adds a branch here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from tuneforge.config.load import load_config
from tuneforge.config.preflight import preflight
from tuneforge.config.schema import RunConfig
from tuneforge.security.lineage import audited_finetune
from tuneforge.train.context import RunContext
from tuneforge.train.recipes import get_recipe
from tuneforge.train.result import FinetuneResult
from tuneforge.train.resume import latest_complete_checkpoint

__all__ = ["FinetuneResult", "finetune", "latest_complete_checkpoint"]


@audited_finetune  # audit log: who ran it, config, data and model hashes, artifacts, how it ended
def finetune(
    config: RunConfig | str | Path, *, resume: bool = False, console: Any = None, callbacks: Sequence[Any] = ()
) -> FinetuneResult:
    """Prepare data, train, save, and evaluate one run.

    Running it again on a finished run with the same config trains nothing: it returns the stored
    numbers (``already_finished``), so a command such as ``make quickstart`` works every time.

    Args:
        config: A :class:`RunConfig` or the path of a YAML config.
        resume: Continue from the newest complete checkpoint in ``RUN/checkpoints`` (after a crash or kill).
        console: A ``rich.console.Console`` for progress and tables (default: stderr).
        callbacks: Extra ``transformers.TrainerCallback`` objects added to the trainer (how the
            hyperparameter search reports validation metrics to optuna and prunes a trial).

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        ConfigError: the config is invalid, or names an objective without a recipe.
        RunDirError: the run directory is in use by another process, holds a run with a different
            config, holds an unfinished run and ``resume`` is off, or has nothing to resume.
    """
    from rich.console import Console

    from tuneforge.export.card import build_model_card

    cfg = config if isinstance(config, RunConfig) else load_config(config)
    console = console or Console(stderr=True)
    if cfg.stages:  # a chain of runs; each stage comes back here as a single run
        from tuneforge.train.stages import run_stages

        return run_stages(cfg, finetune, resume=resume, console=console, callbacks=callbacks)
    recipe = get_recipe(cfg.training.objective)
    preflight(cfg)  # out_dir, disk, data files, target_modules, eval.labels: fail before any folder or model
    with RunContext.open(cfg, resume=resume) as ctx:
        if ctx.finished:
            return _stored(ctx, console)
        result = recipe(ctx, cfg, console, callbacks=callbacks)
        if ctx.is_main:  # RUN/README.md: base model, data, eval, audit entry
            ctx.write_text("README.md", str(build_model_card(ctx.root, ctx.root)))
        ctx.mark_finished()
    return result


def _stored(ctx: RunContext, console: Any) -> FinetuneResult:
    result = FinetuneResult.from_run(ctx.paths)
    console.print(
        f"[bold]run {ctx.root} already finished[/] ({result.global_step} steps, train loss {result.train_loss}); "
        "nothing to train. Its stored results follow; to train again, start a new run: --set name=<new name>",
        highlight=False,
    )
    if result.eval is not None:
        console.print(result.eval.summary_table())
    return result
