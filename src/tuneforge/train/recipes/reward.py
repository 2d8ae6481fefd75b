"""Reward model (``training.objective: reward``): learn a scalar score that ranks the chosen answer above the rejected one.

setup (precision, the base with a one-output ``score`` head, pairs, LoRA config) → train
(``trl.RewardTrainer``, loss ``-log sigmoid(r(chosen) - r(rejected))``) → save (adapter + head,
manifest with ``task: reward``) → evaluate (pairwise accuracy on held-out pairs, trained vs
untrained head, with bootstrap CIs; chance is 0.5).

The model goes to TRL as an ``AutoModelForSequenceClassification`` (``num_labels=1``) with
the LoRA/DoRA config as ``peft_config``, task ``SEQ_CLS``: the new head is a full trainable
module (``modules_to_save``) saved inside ``RUN/adapter``, so the adapter alone is the reward
model. Pairs are tokenized here with :func:`tuneforge.eval.reward.encode`, the function every
scorer uses, so TRL skips its own tokenization and a completion is scored exactly as trained.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from trl import RewardTrainer

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.train import steps
from tuneforge.train.context import RunContext
from tuneforge.train.recipes._trl import train_and_save
from tuneforge.train.result import FinetuneResult

# Pairs per device batch when training.per_device_batch_size is unset (two sequences each, as DPO).
REWARD_PAIRS_PER_BATCH = 4


def run(ctx: RunContext, cfg: RunConfig, console: Any, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train a reward model (LoRA + score head) on the pairs of ``cfg.data``; see the module docstring."""
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig as TrlRewardConfig

    from tuneforge import methods
    from tuneforge.train.args import resolve_precision, training_arguments

    started = time.perf_counter()
    if cfg.eval.baseline not in ("base", None):  # found now, not after training
        raise ConfigError(f"eval.baseline: a reward model is compared with its untrained head ('base') or with "
                          f"nothing (null), not {cfg.eval.baseline!r}")

    # --- setup
    precision = resolve_precision(cfg.training.precision)
    model, tokenizer, _ = steps.load_base(cfg, auto_class=AutoModelForSequenceClassification, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads each row's last non-pad token
    pairs = steps.prepare_pairs(ctx, cfg, tokenizer, console)
    peft_config = methods.lora_config(cfg.method, task_type="SEQ_CLS")
    head = "score" if hasattr(model, "score") else "classifier"  # transformers' name for the new head
    peft_config.modules_to_save = sorted({*(peft_config.modules_to_save or []), head})

    # --- train
    args = training_arguments(
        cfg, ctx.paths.checkpoints, precision=precision, has_validation=bool(pairs.validation),
        args_class=TrlRewardConfig, rows_per_batch=cfg.training.per_device_batch_size or REWARD_PAIRS_PER_BATCH,
        center_rewards_coefficient=cfg.training.reward.center_rewards_coefficient,
        max_length=cfg.training.max_seq_length, include_num_input_tokens_seen="non_padding", model_init_kwargs=None,
    )
    trainer = _RewardTrainer(
        model=model, args=args, peft_config=peft_config, processing_class=tokenizer,
        train_dataset=_dataset(pairs.train, tokenizer),
        eval_dataset=_dataset(pairs.validation, tokenizer) if pairs.validation else None,
    )
    result, weights = train_and_save(ctx, cfg, console, trainer, tokenizer, pairs, callbacks=callbacks,
                                     started=started, precision=precision, what=f"reward-model steps ({head} head)",
                                     task="reward", reward=cfg.training.reward.model_dump())
    if weights is None:  # not the main process
        return result

    # --- evaluate: pairwise accuracy on the held-out pairs (a reward model does not generate), in the
    # weights' own precision as load_reward_model() and the server score: without unwrapping, accelerate's
    # bf16 autocast stays on the forward and rewards differ by a few hundredths (a pair flipped on SmolLM2).
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    result.eval = evaluate(ctx, cfg, model, tokenizer, pairs.test, console, result.manifest)
    return result


def evaluate(ctx: RunContext, cfg: RunConfig, model: Any, tokenizer: Any, pairs: list[dict], console: Any,
             manifest: dict[str, Any]) -> Any:
    """Pairwise accuracy of the trained vs the untrained head on held-out pairs, into ``eval/`` and the report.

    The untrained side is the same weights with the adapter switched off (PEFT then uses the
    original, randomly initialised head), so it costs one more pass and no second model;
    ``eval.baseline: null`` skips it. Returns ``None`` when evaluation is off or there are no test pairs.
    """
    if not cfg.eval.enabled or not pairs:
        return None
    from tuneforge.eval.preference import compare_rewards
    from tuneforge.eval.report import write_report
    from tuneforge.eval.reward import RewardScorer

    started = time.perf_counter()
    scorer = RewardScorer(model.eval(), tokenizer, cfg.training.max_seq_length, str(ctx.root))
    tuned = scorer.score_pairs(pairs)
    base = None
    if cfg.eval.baseline is not None:
        with model.disable_adapter():
            base = scorer.score_pairs(pairs)
    result = compare_rewards(base, tuned, samples=cfg.eval.bootstrap_samples, seed=cfg.training.seed,
                             tuned_name=cfg.name)
    result.settings["data"] = "held-out test pairs"
    predictions = [
        {"index": i, "prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"],
         "chosen_reward": float(t[0]), "rejected_reward": float(t[1]), "correct": bool(t[0] > t[1]),
         **({} if base is None else {"untrained_chosen_reward": float(base[i][0]),
                                     "untrained_rejected_reward": float(base[i][1])})}
        for i, (pair, t) in enumerate(zip(pairs, tuned))
    ]
    ctx.write_json("eval/metrics.json", result.to_dict())
    ctx.write_jsonl("eval/predictions.jsonl", predictions)
    # The report's Markdown/HTML and plots are rendered from those two files, as `tuneforge report` does.
    result.paths.update(write_report(result, predictions, ctx.paths.eval, metrics_log=ctx.paths.metrics))
    console.print(result.summary_table())
    manifest["eval_seconds"] = round(time.perf_counter() - started, 1)
    ctx.write_json("manifest.json", manifest)
    return result


def _dataset(pairs: list[dict], tokenizer: Any) -> Any:
    """Pairs as TRL's tokenized preference rows (``chosen_ids``/``rejected_ids``), encoded as every scorer encodes."""
    from datasets import Dataset

    from tuneforge.eval.reward import encode

    return Dataset.from_list([
        {"chosen_ids": encode(tokenizer, pair["prompt"], pair["chosen"]),
         "rejected_ids": encode(tokenizer, pair["prompt"], pair["rejected"])}
        for pair in pairs
    ])


class _RewardTrainer(RewardTrainer):
    """``RewardTrainer`` plus the ``tokens_seen`` the run's logging reads (non-padding tokens of both answers)."""

    @property
    def tokens_seen(self) -> int:
        return int(self.state.num_input_tokens_seen)
