"""Group relative policy optimisation (``training.objective: grpo``): online RL from rewards.

setup (precision, model, prompts, rewards, LoRA config) → train (``trl.GRPOTrainer``: for each
prompt sample ``num_generations`` completions with the model's own ``generate``, KV cache on, no
vLLM; score them with the rewards; raise the completions that beat their group's mean) → save
(adapter, manifest) → evaluate (the usual generation eval, the prompts' references as answers).

With ``beta > 0`` the KL penalty's reference is the same weights with the adapter disabled
(``GRPOTrainer``: a PEFT model gets ``ref_model = None`` and ``use_adapter(model, None)``), never
a second copy. Per logging step the run's metrics get TRL's ``reward`` and ``reward_std`` (the
weighted sum), ``rewards/<name>/mean`` per source, ``kl`` and ``completions/mean_length``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from trl import GRPOTrainer

from tuneforge.config.schema import RunConfig
from tuneforge.train import steps
from tuneforge.train.context import RunContext
from tuneforge.train.recipes._trl import train_save_evaluate
from tuneforge.train.result import FinetuneResult


def run(ctx: RunContext, cfg: RunConfig, console: Any, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train a LoRA adapter with GRPO on the prompts of ``cfg.data``; see the module docstring for the steps."""
    from trl import GRPOConfig

    from tuneforge import methods
    from tuneforge.train.args import resolve_precision, training_arguments
    from tuneforge.train.rewards import build_rewards, reference_labels

    started = time.perf_counter()
    grpo = cfg.training.grpo

    # --- setup
    precision = resolve_precision(cfg.training.precision)
    model, tokenizer, base_path = steps.load_base(cfg)
    prompts = steps.prepare_pairs(ctx, cfg, tokenizer, console)
    # Built before training, so a bad `function:` or `model:` reward fails before any step is spent.
    rewards = build_rewards(grpo.rewards, normalize=cfg.eval.normalize, max_tokens=grpo.max_completion_length,
                            labels=reference_labels(prompts.train, cfg.eval.labels))

    # --- train
    args = training_arguments(
        cfg, ctx.paths.checkpoints, precision=precision, has_validation=bool(prompts.validation), args_class=GRPOConfig,
        # Completions per device batch (TRL counts completions, not prompts): two groups unless set.
        rows_per_batch=cfg.training.per_device_batch_size or 2 * grpo.num_generations,
        num_generations=grpo.num_generations, max_completion_length=grpo.max_completion_length, beta=grpo.beta,
        temperature=grpo.temperature, top_p=grpo.top_p, loss_type=grpo.loss_type, scale_rewards=grpo.scale_rewards,
        reward_weights=[s.weight for s in grpo.rewards], use_vllm=False, model_init_kwargs=None,
    )
    trainer = _GrpoTrainer(
        model=model, reward_funcs=rewards, args=args, peft_config=methods.lora_config(cfg.method),
        train_dataset=prompt_dataset(prompts.train),
        eval_dataset=prompt_dataset(prompts.validation) if prompts.validation else None, processing_class=tokenizer,
    )
    return train_save_evaluate(ctx, cfg, console, trainer, tokenizer, base_path, prompts,
                               callbacks=callbacks, started=started, precision=precision, beta=None)


def prompt_dataset(rows: list[dict]) -> Any:
    """Prompts in TRL's conversational form, with the ``reference`` column the rewards read."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": row["prompt"], "reference": row.get("reference")} for row in rows])


class _GrpoTrainer(GRPOTrainer):
    """``GRPOTrainer`` plus the ``tokens_seen`` the run's logging reads (prompt and completion tokens)."""

    @property
    def tokens_seen(self) -> int:
        return int(self.state.num_input_tokens_seen)
