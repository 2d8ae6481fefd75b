"""Knowledge distillation (``training.objective: distill``): the student (``model:``) learns from ``distill.teacher``.

logit: setup (student, teacher with the same tokenizer, data) → train (SFT's steps with
:class:`~tuneforge.distill.logit.DistillTrainer`: KL to the teacher + answer CE) → save → evaluate.

sequence: setup (student, data) → the teacher answers the prompts (cached in the run,
failures counted in the data report) → train SFT on those answers → save → evaluate.

Either way the student is an ordinary model (``model.keep_layers`` makes it shallower),
saved like any SFT run, so eval, merge, export and serve work on it unchanged.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.train import steps
from tuneforge.train.context import RunContext
from tuneforge.train.frozen import sharding_engine
from tuneforge.train.recipes import sft
from tuneforge.train.result import FinetuneResult


def run(ctx: RunContext, cfg: RunConfig, console: Any, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Distil ``cfg.distill.teacher`` into the student; see the module docstring for the steps."""
    distill = cfg.distill
    started = time.perf_counter()
    settings = {"objective": "distill", "distill": distill.model_dump(mode="json") | {"mode": distill.resolved_mode}}

    # --- setup
    if distill.positions == "all" and (engine := sharding_engine()):
        raise ConfigError(
            f"distill.positions: all projects the LM heads outside the models' forward passes, a chunk at a time, "
            f"where {engine} has sharded their weights; use distill.positions: answers with {engine}, or DDP"
        )
    model, tokenizer, base_path = steps.load_base(cfg)
    if distill.resolved_mode == "logit":
        from tuneforge.distill.logit import DistillTrainer, load_teacher

        teacher = load_teacher(distill.teacher, tokenizer)  # tokenizer checked before the teacher's weights load
        prepared = steps.prepare_data(ctx, cfg, tokenizer, console)
        return sft.fit(ctx, cfg, console, model, tokenizer, base_path, prepared, started=started, callbacks=callbacks,
                       trainer_class=DistillTrainer, manifest=settings,
                       trainer_kwargs={"teacher": teacher, "alpha": distill.alpha, "temperature": distill.temperature,
                                       "positions": distill.positions})

    from tuneforge.distill.sequence import answered_data

    prepared = steps.prepare_data(ctx, cfg, tokenizer, console)
    prepared, asked = answered_data(ctx, cfg, tokenizer, prepared, console)
    settings["teacher_answers"] = asked
    return sft.fit(ctx, cfg, console, model, tokenizer, base_path, prepared, started=started, callbacks=callbacks,
                   manifest=settings)
