"""Map a tuneforge ``TrainingConfig`` onto ``transformers.TrainingArguments``, and choose the precision."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError

_GREATER_IS_WORSE = {"loss", "perplexity", "eval_loss", "eval_perplexity"}


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), where autocast pays."""
    if platform.system() != "Linux":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str) -> str:
    """Turn ``auto`` into bf16/fp32 for this machine, and refuse combinations that cannot run.

    ``auto`` picks bf16 autocast on a GPU that supports it and on CPUs with
    native bf16 instructions (measured ~3x faster matmuls on AVX512-BF16 here);
    fp32 elsewhere. Weights stay fp32 (autocast), so optimiser updates are exact.
    """
    cuda = torch.cuda.is_available()
    if requested == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if requested == "fp16" and not cuda:
        raise ConfigError("training.precision: fp16 needs a CUDA GPU; on a CPU use 'bf16' or 'fp32' (or 'auto')")
    return requested


def packing_enabled(cfg: RunConfig) -> bool:
    """Whether rows are packed: ``data.packing`` unless the method prepends virtual tokens (which shift positions)."""
    from tuneforge.methods import PROMPT_LEARNING

    return cfg.data.packing != "off" and cfg.method.name not in PROMPT_LEARNING


def loader_items(examples: list[dict], cfg: RunConfig, *, seed: int) -> list[Any]:
    """The dataset the trainer iterates: packed or single rows, grouped by the token budget when it applies."""
    from tuneforge.data.pack import training_rows

    t = cfg.training
    return training_rows(examples, packed=packing_enabled(cfg), max_length=t.max_seq_length,
                         token_budget=t.token_budget, pack_length=t.pack_length, seed=seed)


def training_arguments(
    cfg: RunConfig, output_dir: Path, *, precision: str, has_validation: bool, gradient_checkpointing: bool | None = None,
    rows_per_batch: int | None = None, args_class: Any = None, **extra: Any,
) -> Any:
    """Build the ``TrainingArguments`` for a run (checkpoints go to ``output_dir``).

    Args:
        gradient_checkpointing: The resolved setting (``auto`` decided by the memory estimate,
            :func:`tuneforge.train.estimate.plan_training`); None: ``training.gradient_checkpointing is True``.
        rows_per_batch: Dataset items per device batch, for recipes whose items are not token-budget batches
            (DPO pairs); default: ``per_device_batch_size``, or 1 when the dataset items are token batches.
        args_class: A ``TrainingArguments`` subclass to build instead (TRL's ``DPOConfig``, ...).
        extra: Its own fields (``beta=0.1``, ...).
    """
    from transformers import TrainingArguments

    t = cfg.training
    eval_strategy = t.eval_strategy if has_validation else "no"
    early = t.early_stopping
    metric = None
    greater = None
    if early is not None:
        if not has_validation:
            raise ConfigError("training.early_stopping needs validation data (data.validation or data.split.validation > 0)")
        metric = early.metric if early.metric.startswith("eval_") else f"eval_{early.metric}"
        greater = early.greater_is_better
        if greater is None:
            greater = metric not in _GREATER_IS_WORSE
    checkpointing = t.gradient_checkpointing is True if gradient_checkpointing is None else gradient_checkpointing
    # Sized by tokens, each dataset item is already a whole batch (a pack.TokenBatch).
    if rows_per_batch is None:
        rows_per_batch = t.per_device_batch_size if t.token_budget is None else 1
    warmup: float = t.warmup_steps if t.warmup_steps is not None else (t.warmup_ratio or 0.0)
    max_steps = t.max_steps or -1
    if t.max_time is not None:
        from tuneforge.train.budget import UNBOUNDED_STEPS

        # The budget callback plans the steps (and points the schedule at them); the Trainer only needs a bound.
        max_steps = t.max_steps or UNBOUNDED_STEPS
    return (args_class or TrainingArguments)(
        output_dir=str(output_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=max_steps,
        per_device_train_batch_size=rows_per_batch,
        per_device_eval_batch_size=rows_per_batch,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        warmup_steps=warmup,  # transformers 5: a float below 1 is a ratio of all steps
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        optim=t.optimizer,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=checkpointing,  # transformers 5 name of gradient_checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy=eval_strategy,
        eval_steps=(t.eval_steps or t.save_steps) if eval_strategy == "steps" else None,
        load_best_model_at_end=early is not None,
        metric_for_best_model=metric,
        greater_is_better=greater,
        seed=t.seed,
        data_seed=t.seed,
        dataloader_num_workers=t.dataloader_num_workers,
        report_to="none",  # tensorboard is attached by the pipeline with the run's own folder
        disable_tqdm=True,  # the rich progress bar replaces tqdm
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,  # every trainable parameter takes part; True costs a graph walk per step
        prediction_loss_only=True,
        run_name=cfg.name,
        **extra,
    )
