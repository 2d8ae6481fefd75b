"""The ``training.kto`` section: Kahneman-Tversky optimisation on judged answers (``training.objective: kto``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config._types import Float, Section

KtoLoss = Literal["kto", "apo_zero_unpaired"]
"""The ``loss_type`` names of ``trl.KTOConfig`` (TRL 1.16); a test checks them against the installed TRL."""


class KtoConfig(Section):
    """KTO through ``trl.KTOTrainer``: raise desirable answers, lower undesirable ones, each row judged alone.

    As with DPO, the reference is the starting model with the LoRA/DoRA adapter switched off (no second copy).
    """

    beta: Float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    desirable_weight: Float = Field(
        1.0, gt=0, description="Weight of the desirable (label true) rows' loss; raise it when they are the fewer."
    )
    undesirable_weight: Float = Field(
        1.0, gt=0, description="Weight of the undesirable (label false) rows' loss; raise it when they are the fewer."
    )
    loss_type: KtoLoss = Field(
        "kto", description="kto (the paper's loss, with a batch KL estimate; needs 2+ rows per batch) or "
        "apo_zero_unpaired (anchored preference optimisation, no KL estimate).",
    )
