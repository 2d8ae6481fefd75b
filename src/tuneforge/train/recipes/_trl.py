"""What the recipes built on a TRL trainer (dpo, kto, orpo, grpo) do once it is built: train → save → evaluate.

Only the trainer differs between them (its config class, loss settings, dataset form, rewards), so
each recipe builds its trainer and hands it here; the steps themselves are :mod:`tuneforge.train.steps`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.train import steps
from tuneforge.train.context import RunContext
from tuneforge.train.result import FinetuneResult


def train_save_evaluate(ctx: RunContext, cfg: RunConfig, console: Any, trainer: Any, tokenizer: Any, base_path: str,
                        data: Any, *, callbacks: Sequence[Any], started: float, precision: str,
                        beta: float | None) -> FinetuneResult:
    """Train the LoRA adapter ``trainer`` holds, save it with the manifest, then evaluate.

    Evaluation: the usual generation eval first (it rewrites ``eval/``), then, for the preference
    objectives, their own measure: base vs tuned on the held-out rows
    (:func:`tuneforge.train.steps.evaluate_pairs`, implied rewards scaled by ``beta``; ``None``: none).
    """
    objective = cfg.training.objective
    result, weights = train_and_save(ctx, cfg, console, trainer, tokenizer, data, callbacks=callbacks, started=started,
                                     precision=precision, what=f"{objective.upper()} steps", **{
                                         objective: getattr(cfg.training, objective).model_dump()})
    if weights is None:  # not the main process
        return result

    # --- evaluate
    generation = steps.evaluate(ctx, cfg, trainer.model, tokenizer, base_path, data, console, result.manifest)
    if beta is not None:
        result.eval = steps.evaluate_pairs(ctx, cfg, trainer.model, tokenizer, data.test, console, result.manifest,
                                           beta=beta)
    result.eval = result.eval or generation
    return result


def train_and_save(ctx: RunContext, cfg: RunConfig, console: Any, trainer: Any, tokenizer: Any, data: Any, *,
                   callbacks: Sequence[Any], started: float, precision: str, what: str,
                   **manifest: Any) -> tuple[FinetuneResult, Any]:
    """Train the LoRA adapter ``trainer`` holds and save it with the manifest (``manifest``: extra fields).

    Returns:
        The result and the weights folder; the folder is ``None`` on processes other than the main one.
    """
    from tuneforge import methods

    trainable, total = methods.trainable_parameters(trainer.model)
    meter = steps.attach_logging(ctx, trainer, console, extra=callbacks)
    output, result = steps.train(ctx, trainer, meter)
    train_seconds = time.perf_counter() - started
    if not ctx.is_main:
        return result, None
    weights, result.manifest = steps.save_run(
        ctx, cfg, trainer, tokenizer, output, meter, data.sources, full=False,
        wall_seconds=train_seconds, precision=precision, packing=False, trainable_parameters=trainable,
        total_parameters=total, objective=cfg.training.objective, **manifest,
    )
    console.print(
        f"[bold green]trained[/] {trainer.state.global_step} {what}{steps.budget_summary(trainer)[1]} "
        f"in {train_seconds:.0f}s, {meter.overall():.0f} tokens/s ({precision}); weights in {weights}"
    )
    return result, weights
