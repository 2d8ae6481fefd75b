"""Supervised fine-tuning (``training.objective: sft``): learn to give the reference answers.

setup (precision, model, data, method) → train (packed rows, loss on answer
tokens only) → save (weights, manifest) → evaluate (tuned vs baseline).

Every process of a multi-process launch (``accelerate launch``) runs this; only
the main process writes the run and evaluates.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from tuneforge.config.schema import RunConfig
from tuneforge.train import steps
from tuneforge.train.context import RunContext
from tuneforge.train.result import FinetuneResult


def run(ctx: RunContext, cfg: RunConfig, console: Any, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Fine-tune on the answers of ``cfg.data``; see the module docstring for the order of steps."""
    started = time.perf_counter()

    # --- setup
    model, tokenizer, base_path = steps.load_base(cfg)
    prepared = steps.prepare_data(ctx, cfg, tokenizer, console)
    return fit(ctx, cfg, console, model, tokenizer, base_path, prepared, started=started, callbacks=callbacks)


def fit(ctx: RunContext, cfg: RunConfig, console: Any, model: Any, tokenizer: Any, base_path: str, prepared: Any, *,
        started: float, callbacks: Sequence[Any] = (), trainer_class: Any = None,
        trainer_kwargs: dict[str, Any] | None = None, manifest: dict[str, Any] | None = None) -> FinetuneResult:
    """Apply the method, train on ``prepared`` with answer-only labels, save and evaluate.

    The part of SFT that other recipes share: distillation trains the same way with its own
    trainer (``trainer_class`` + ``trainer_kwargs``) or on the teacher's answers (``prepared``).

    Args:
        started: ``time.perf_counter()`` when the recipe began (the manifest's wall time).
        trainer_class: A :class:`TuneforgeTrainer` subclass (default: that class).
        manifest: Extra manifest fields of the recipe (objective, its settings).
    """
    from tuneforge import methods
    from tuneforge.data.pack import Collator
    from tuneforge.train.args import loader_items, packing_enabled, resolve_precision, training_arguments
    from tuneforge.train.estimate import MIB, check_run
    from tuneforge.train.frozen import bf16_frozen_weights
    from tuneforge.train.trainer import TuneforgeTrainer

    precision = resolve_precision(cfg.training.precision)
    model = methods.apply(model, cfg.method)
    trainable, total = methods.trainable_parameters(model)
    # Virtual tokens (prefix/prompt tuning) need one example per row; the schema refuses packing 'on' with them.
    packing = packing_enabled(cfg)
    # Batches sized by a token budget (training.batch_tokens) unless per_device_batch_size is set.
    train_rows = loader_items(prepared.train, cfg, seed=cfg.training.seed)
    eval_rows = loader_items(prepared.validation, cfg, seed=0)
    # Estimated peak memory: warns when over the limit and turns gradient checkpointing on ('auto').
    plan = check_run(cfg, model, train_rows, precision=precision, packed=packing, console=console if ctx.is_main else None,
                     teacher=(trainer_kwargs or {}).get("teacher"))

    # --- train
    args = training_arguments(cfg, ctx.paths.checkpoints, precision=precision, has_validation=bool(eval_rows),
                              gradient_checkpointing=plan.gradient_checkpointing)
    trainer = (trainer_class or TuneforgeTrainer)(
        model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows or None,
        data_collator=Collator(tokenizer.pad_token_id, packed=packing, pad_to_multiple_of=cfg.training.pad_to_multiple_of),
        processing_class=tokenizer,
        selective_head=cfg.method.name not in methods.PROMPT_LEARNING,
        validation_scorer=_validation_scorer(cfg, tokenizer, prepared.validation_examples, autocast=plan.bf16_frozen),
        **(trainer_kwargs or {}),
    )
    meter = steps.attach_logging(ctx, trainer, console, extra=callbacks, step_seconds=plan.step_seconds,
                                 eval_batches=_batches(eval_rows, cfg))
    early = cfg.training.early_stopping
    if early is not None:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early.patience, early.threshold))
    # training.frozen_weights: the frozen base in bf16 while it trains; the exact fp32 weights are back
    # before anything below saves, merges or evaluates.
    with bf16_frozen_weights(model, plan.bf16_frozen):
        output, result = steps.train(ctx, trainer, meter)
    train_seconds = time.perf_counter() - started
    if not ctx.is_main:
        return result

    # --- save
    budget_words = steps.budget_summary(trainer)[1]
    weights, result.manifest = steps.save_run(
        ctx, cfg, trainer, tokenizer, output, meter, prepared.sources, full=cfg.method.name == "full",
        wall_seconds=train_seconds, precision=precision, packing=packing,
        trainable_parameters=trainable, total_parameters=total,
        estimated_peak_mb=round(plan.memory.total / MIB), gradient_checkpointing=plan.gradient_checkpointing,
        frozen_weights="bf16" if plan.bf16_frozen else "fp32",
        **(manifest or {}),
    )
    console.print(
        f"[bold green]trained[/] {trainer.state.global_step} steps{budget_words} in {train_seconds:.0f}s, "
        f"{meter.overall():.0f} tokens/s ({precision}, packing {'on' if packing else 'off'}); weights in {weights}"
    )

    # --- evaluate
    result.eval = steps.evaluate(ctx, cfg, trainer.model, tokenizer, base_path, prepared, console, result.manifest)
    return result


def _batches(items: list[Any], cfg: RunConfig) -> int:
    """Loader batches over ``items`` (token batches already are one each)."""
    size = cfg.training.per_device_batch_size if cfg.training.token_budget is None else 1
    return -(-len(items) // (size or 1))


def _validation_scorer(cfg: RunConfig, tokenizer: Any, examples: list[dict], *, autocast: bool = False) -> Any:
    """Generation metrics on validation, when early stopping or the search watches one (not the loss).

    ``autocast``: the frozen weights are bf16 while training (``training.frozen_weights``), so generation runs
    under the same bf16 autocast as the training step (the Trainer only wraps the model's own forward).
    """
    watched = [cfg.training.early_stopping.metric if cfg.training.early_stopping else None,
               cfg.search.metric if cfg.search else None]
    metrics = sorted({m.removeprefix("eval_") for m in watched if m} - {"loss", "perplexity"})
    if not metrics or not examples:
        return None
    import contextlib

    import torch

    from tuneforge.eval import score

    def scorer(model: Any) -> dict[str, float]:
        with torch.autocast(model.device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            return score(model, tokenizer, examples, cfg.eval, metrics=metrics)

    return scorer
