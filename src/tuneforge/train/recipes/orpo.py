"""Odds-ratio preference optimisation (``training.objective: orpo``): SFT and preference in one stage.

setup (precision, model, pairs, LoRA config) → train (``ORPOTrainer``) → save (adapter, manifest)
→ evaluate (the usual generation eval with the chosen answers as references, then preference
accuracy of base vs tuned on held-out pairs, as for DPO).

ORPO needs no reference model: its loss is the chosen answer's NLL plus ``beta`` times the log
odds ratio of chosen over rejected, both under the model being trained. TRL 1.16 keeps
``ORPOTrainer`` in ``trl.experimental`` (its API may change without notice; pinned TRL keeps it
stable here); a test trains through it so an upgrade that breaks it is caught.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.train import steps
from tuneforge.train.context import RunContext
from tuneforge.train.recipes.dpo import DPO_PAIRS_PER_BATCH, pair_dataset
from tuneforge.train.recipes._trl import train_save_evaluate
from tuneforge.train.result import FinetuneResult


def run(ctx: RunContext, cfg: RunConfig, console: Any, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train a LoRA adapter with ORPO on the pairs of ``cfg.data``; see the module docstring for the steps."""
    from tuneforge import methods
    from tuneforge.train.args import resolve_precision, training_arguments

    ORPOConfig, trainer_class = _trl_orpo()
    started = time.perf_counter()

    # --- setup
    precision = resolve_precision(cfg.training.precision)
    model, tokenizer, base_path = steps.load_base(cfg)
    pairs = steps.prepare_pairs(ctx, cfg, tokenizer, console)
    orpo = cfg.training.orpo

    # --- train
    args = training_arguments(
        cfg, ctx.paths.checkpoints, precision=precision, has_validation=bool(pairs.validation), args_class=ORPOConfig,
        rows_per_batch=cfg.training.per_device_batch_size or DPO_PAIRS_PER_BATCH,
        beta=orpo.beta, max_length=cfg.training.max_seq_length, include_num_input_tokens_seen="non_padding",
        model_init_kwargs=None,
    )
    trainer = trainer_class(
        model=model, args=args, peft_config=methods.lora_config(cfg.method), train_dataset=pair_dataset(pairs.train),
        eval_dataset=pair_dataset(pairs.validation) if pairs.validation else None, processing_class=tokenizer,
    )
    return train_save_evaluate(ctx, cfg, console, trainer, tokenizer, base_path, pairs,
                               callbacks=callbacks, started=started, precision=precision, beta=orpo.beta)


def _trl_orpo() -> tuple[Any, Any]:
    """``(ORPOConfig, our ORPOTrainer subclass)``, imported from ``trl.experimental`` without its import warning."""
    # The warning says the API is unstable; the module docstring says so once, a test guards it.
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    class _OrpoTrainer(ORPOTrainer):
        """``ORPOTrainer`` plus the ``tokens_seen`` the run's logging reads.

        Its batches hold ``chosen_*``/``rejected_*`` tensors and no ``input_ids``, so the Trainer's own
        count finds nothing; the non-padding tokens of both answers are counted here instead.
        """

        def _track_num_input_tokens(self, inputs: dict) -> None:
            import torch

            masks = [inputs[k] for k in ("chosen_attention_mask", "rejected_attention_mask") if k in inputs]
            seen = torch.as_tensor(sum(int(m.sum()) for m in masks), device=self.args.device, dtype=torch.int64)
            self.state.num_input_tokens_seen += self.accelerator.gather(seen).sum().item()

        @property
        def tokens_seen(self) -> int:
            return int(self.state.num_input_tokens_seen)

    return ORPOConfig, _OrpoTrainer
