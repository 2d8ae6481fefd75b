"""Direct preference optimisation (``training.objective: dpo``): prefer the chosen answer over the rejected one.

setup (precision, model, pairs, LoRA config) → train (``trl.DPOTrainer``) → save (adapter,
manifest) → evaluate (preference accuracy of base vs tuned on held-out pairs, then the
usual generation eval with the chosen answers as references).

The reference model is never a second copy: the model goes to TRL unwrapped, with the
LoRA/DoRA config as ``peft_config``; TRL wraps it and computes the reference log-probs
with the adapter disabled (``trl/trainer/dpo_trainer.py``: ``ref_model is None`` and a
PEFT model → ``self.ref_model = None``, then ``use_adapter(model, adapter_name=None)``,
i.e. ``model.disable_adapter()``). Passing an already wrapped ``PeftModel`` instead would
make TRL add a second, "ref" adapter that would then be saved with ours.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from trl import DPOTrainer

from tuneforge.config.schema import RunConfig
from tuneforge.train import steps
from tuneforge.train.context import RunContext
from tuneforge.train.result import FinetuneResult


# Pairs per device batch when training.per_device_batch_size is unset: each pair is two sequences,
# so 2 pairs of <= 256 tokens stay near SFT's default token budget (384-512 tokens per forward).
DPO_PAIRS_PER_BATCH = 2


def run(ctx: RunContext, cfg: RunConfig, console: Any, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train a LoRA adapter with DPO on the pairs of ``cfg.data``; see the module docstring for the steps."""
    from trl import DPOConfig

    from tuneforge import methods
    from tuneforge.train.args import resolve_precision, training_arguments

    started = time.perf_counter()

    # --- setup
    precision = resolve_precision(cfg.training.precision)
    model, tokenizer, base_path = steps.load_base(cfg)
    pairs = steps.prepare_pairs(ctx, cfg, tokenizer, console)
    dpo = cfg.training.dpo

    # --- train
    args = training_arguments(
        cfg, ctx.paths.checkpoints, precision=precision, has_validation=bool(pairs.validation), args_class=DPOConfig,
        # TRL batches pairs itself (no token budget): per_device_batch_size pairs, default DPO_PAIRS_PER_BATCH.
        rows_per_batch=cfg.training.per_device_batch_size or DPO_PAIRS_PER_BATCH,
        beta=dpo.beta, loss_type=list(dpo.loss_type), loss_weights=dpo.loss_weights,
        label_smoothing=dpo.label_smoothing, max_length=cfg.training.max_seq_length,
        include_num_input_tokens_seen="non_padding", model_init_kwargs=None,
    )
    trainer = _DpoTrainer(
        model=model, ref_model=None, args=args, peft_config=methods.lora_config(cfg.method),
        train_dataset=_dataset(pairs.train), eval_dataset=_dataset(pairs.validation) if pairs.validation else None,
        processing_class=tokenizer,
    )
    trainable, total = methods.trainable_parameters(trainer.model)
    meter = steps.attach_logging(ctx, trainer, console, extra=callbacks)
    output, result = steps.train(ctx, trainer, meter)
    train_seconds = time.perf_counter() - started
    if not ctx.is_main:
        return result

    # --- save
    weights, result.manifest = steps.save_run(
        ctx, cfg, trainer, tokenizer, output, meter, pairs.sources, full=False,
        wall_seconds=train_seconds, precision=precision, packing=False,
        trainable_parameters=trainable, total_parameters=total, objective="dpo", dpo=cfg.training.dpo.model_dump(),
    )
    console.print(
        f"[bold green]trained[/] {trainer.state.global_step} DPO steps{steps.budget_summary(trainer)[1]} in {train_seconds:.0f}s, "
        f"{meter.overall():.0f} tokens/s ({precision}); adapter in {weights}"
    )

    # --- evaluate: generation first, as it rewrites eval/; then the pairs, the objective's own measure
    generation = steps.evaluate(ctx, cfg, trainer.model, tokenizer, base_path, pairs, console, result.manifest)
    result.eval = steps.evaluate_pairs(ctx, cfg, trainer.model, tokenizer, pairs.test, console, result.manifest)
    result.eval = result.eval or generation
    return result


def _dataset(pairs: list[dict]) -> Any:
    """Pairs in TRL's conversational preference form: the prompt turns, and each answer as one assistant turn."""
    from datasets import Dataset

    return Dataset.from_list([
        {
            "prompt": pair["prompt"],
            "chosen": [{"role": "assistant", "content": pair["chosen"]}],
            "rejected": [{"role": "assistant", "content": pair["rejected"]}],
        }
        for pair in pairs
    ])


class _DpoTrainer(DPOTrainer):
    """``DPOTrainer`` plus the ``tokens_seen`` the run's logging reads (non-padding tokens of both answers)."""

    @property
    def tokens_seen(self) -> int:
        return int(self.state.num_input_tokens_seen)
