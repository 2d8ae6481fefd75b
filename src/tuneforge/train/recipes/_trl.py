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
    from tuneforge import methods

    objective = cfg.training.objective
    trainable, total = methods.trainable_parameters(trainer.model)
    meter = steps.attach_logging(ctx, trainer, console, extra=callbacks)
    output, result = steps.train(ctx, trainer, meter)
    train_seconds = time.perf_counter() - started
    if not ctx.is_main:
        return result

    # --- save
    weights, result.manifest = steps.save_run(
        ctx, cfg, trainer, tokenizer, output, meter, data.sources, full=False,
        wall_seconds=train_seconds, precision=precision, packing=False, trainable_parameters=trainable,
        total_parameters=total, objective=objective, **{objective: getattr(cfg.training, objective).model_dump()},
    )
    console.print(
        f"[bold green]trained[/] {trainer.state.global_step} {objective.upper()} steps{steps.budget_summary(trainer)[1]} "
        f"in {train_seconds:.0f}s, "
        f"{meter.overall():.0f} tokens/s ({precision}); adapter in {weights}"
    )

    # --- evaluate
    generation = steps.evaluate(ctx, cfg, trainer.model, tokenizer, base_path, data, console, result.manifest)
    if beta is not None:
        result.eval = steps.evaluate_pairs(ctx, cfg, trainer.model, tokenizer, data.test, console, result.manifest,
                                           beta=beta)
    result.eval = result.eval or generation
    return result
