"""The ``training.orpo`` section: odds-ratio preference optimisation (``training.objective: orpo``)."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config._types import Float, Section


class OrpoConfig(Section):
    """ORPO through ``trl.experimental.orpo.ORPOTrainer``: SFT on the chosen answer plus an odds-ratio penalty
    on the rejected one, in one stage and without a reference model (so nothing is scored with the adapter off).
    """

    beta: Float = Field(
        0.1, gt=0, description="Weight of the odds-ratio term against the SFT loss (lambda in the ORPO paper)."
    )
