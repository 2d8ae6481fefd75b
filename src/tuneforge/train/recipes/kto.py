"""Kahneman-Tversky optimisation (``training.objective: kto``): raise desirable answers, lower undesirable ones.

setup (precision, model, judged rows, LoRA config) → train (``trl.KTOTrainer``) → save (adapter,
manifest) → evaluate (the usual generation eval with the desirable answers as references, then
base vs tuned on held-out pairs and the implied reward of held-out judged answers).

KTO learns from single answers labelled desirable or not (``prompt``/``completion``/``label``);
pairs are taken too, each giving its chosen answer as desirable and its rejected one as
undesirable (TRL's ``unpair_preference_dataset`` does the same). As for DPO, the reference is
the same weights with the adapter disabled: the model goes to TRL unwrapped with ``peft_config``,
and ``KTOTrainer`` computes reference log-probs under ``use_adapter(model, None)``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from trl import KTOTrainer

from tuneforge.config.schema import RunConfig
from tuneforge.train import steps
from tuneforge.train.context import RunContext
from tuneforge.train.recipes._trl import train_save_evaluate
from tuneforge.train.result import FinetuneResult

# Rows per device batch when training.per_device_batch_size is unset: the KL estimate of the kto
# loss pairs each row with another row's answer in the same batch, so TRL refuses batches of 1.
KTO_ROWS_PER_BATCH = 4


def run(ctx: RunContext, cfg: RunConfig, console: Any, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train a LoRA adapter with KTO on the judged answers (or pairs) of ``cfg.data``; see the module docstring."""
    from trl import KTOConfig

    from tuneforge import methods
    from tuneforge.train.args import resolve_precision, training_arguments

    started = time.perf_counter()

    # --- setup
    precision = resolve_precision(cfg.training.precision)
    kto = cfg.training.kto
    rows = cfg.training.per_device_batch_size or KTO_ROWS_PER_BATCH  # the schema refuses 1 with the kto loss
    model, tokenizer, base_path = steps.load_base(cfg)
    data = steps.prepare_pairs(ctx, cfg, tokenizer, console)

    # --- train
    args = training_arguments(
        cfg, ctx.paths.checkpoints, precision=precision, has_validation=bool(data.validation), args_class=KTOConfig,
        rows_per_batch=rows, beta=kto.beta, loss_type=kto.loss_type, desirable_weight=kto.desirable_weight,
        undesirable_weight=kto.undesirable_weight, max_length=cfg.training.max_seq_length,
        include_num_input_tokens_seen="non_padding", model_init_kwargs=None,
    )
    trainer = _KtoTrainer(
        model=model, ref_model=None, args=args, peft_config=methods.lora_config(cfg.method),
        train_dataset=judged_dataset(data.train), eval_dataset=judged_dataset(data.validation) if data.validation else None,
        processing_class=tokenizer,
    )
    return train_save_evaluate(ctx, cfg, console, trainer, tokenizer, base_path, data,
                               callbacks=callbacks, started=started, precision=precision, beta=kto.beta)


def judged_dataset(rows: list[dict]) -> Any:
    """Rows in TRL's conversational unpaired form; each pair gives a desirable and an undesirable row."""
    from datasets import Dataset

    def judged(prompt: list[dict], answer: str, label: bool) -> dict:
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}], "label": label}

    out = []
    for row in rows:
        if "chosen" in row:
            out += [judged(row["prompt"], row["chosen"], True), judged(row["prompt"], row["rejected"], False)]
        else:
            out.append(judged(row["prompt"], row["completion"], row["label"]))
    return Dataset.from_list(out)


class _KtoTrainer(KTOTrainer):
    """``KTOTrainer`` plus the ``tokens_seen`` the run's logging reads."""

    @property
    def tokens_seen(self) -> int:
        return int(self.state.num_input_tokens_seen)
