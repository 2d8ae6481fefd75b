"""The ``training.reward`` section: settings of ``training.objective: reward`` (a reward model, ``trl.RewardTrainer``)."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config._types import Float, Section as _Section


class RewardConfig(_Section):
    """Reward-model training (``training.objective: reward``).

    The base gets a one-output sequence-classification head (``score``) and a LoRA/DoRA
    adapter; the head is trained and saved with the adapter. The loss is TRL's pairwise
    ``-log sigmoid(r(chosen) - r(rejected))``.
    """

    center_rewards_coefficient: Float | None = Field(
        None, ge=0,
        description="Weight of a penalty on (r(chosen) + r(rejected))^2 that keeps rewards centred on 0 "
        "(TRL's center_rewards_coefficient; 0.01 is the usual value). Unset: no penalty.",
    )
