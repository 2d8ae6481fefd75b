"""The ``method: {name: bottleneck}`` section: bottleneck adapter layers (Houlsby / Pfeiffer)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tuneforge.config._types import Float, Int, Section

DEFAULT_REDUCTION_FACTOR = 16
"""Hidden size / bottleneck width when neither is given (AdapterHub's default for both placements)."""


class BottleneckMethod(Section):
    """Bottleneck adapters: a small down-projection, non-linearity and up-projection added with a residual
    after the attention block and the MLP (Houlsby) or after the MLP only (Pfeiffer) of each decoder layer.
    Trained as a PEFT adapter; it cannot be merged into the base weights (the non-linearity has no weight-matrix
    equivalent), so the run is served and evaluated with its adapter.
    """

    name: Literal["bottleneck"] = "bottleneck"
    reduction_factor: Int | None = Field(
        None, gt=0,
        description=f"Bottleneck width = hidden size / reduction_factor (rounded down); default "
        f"{DEFAULT_REDUCTION_FACTOR} unless bottleneck_size is set. SmolLM2 (hidden 576) with 16: 36 units.",
    )
    bottleneck_size: Int | None = Field(
        None, gt=0, description="The bottleneck width in units, instead of reduction_factor."
    )
    non_linearity: Literal["relu", "gelu", "silu", "swish"] = Field(
        "relu", description="Activation between the down- and up-projection (swish is silu)."
    )
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby",
        description="houlsby: an adapter after the attention block and one after the MLP of each decoder layer; "
        "pfeiffer: one after the MLP only (half the parameters).",
    )
    init: Literal["identity", "random"] = Field(
        "identity",
        description="identity: the up-projection starts at zero, so the untrained model is exactly the base model; "
        "random: both projections start random (the untrained adapter already changes the outputs).",
    )
    layers: list[Int] | None = Field(
        None, description="Decoder layer indices that get adapters, e.g. [20, 21, ..., 29]; null: every layer."
    )
    dropout: Float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input.")

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: list[int] | None) -> list[int] | None:
        # The upper bound needs the model's depth: checked when the adapter is applied.
        if value is not None:
            if not value:
                raise ValueError("an empty list adapts no layer; give layer indices or leave it out (every layer)")
            if min(value) < 0 or len(set(value)) != len(value):
                raise ValueError(f"layer indices must be distinct and >= 0 (got {value})")
        return value

    @model_validator(mode="after")
    def _one_width(self) -> "BottleneckMethod":
        if self.reduction_factor is not None and self.bottleneck_size is not None:
            raise ValueError(
                "method.reduction_factor and method.bottleneck_size both set the bottleneck width; set only one "
                f"(got reduction_factor={self.reduction_factor}, bottleneck_size={self.bottleneck_size})"
            )
        return self

    def width(self, hidden_size: int) -> int:
        """The bottleneck width for a model of ``hidden_size``.

        Raises:
            ValueError: the reduction factor leaves no unit (it exceeds the hidden size).
        """
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        factor = self.reduction_factor or DEFAULT_REDUCTION_FACTOR
        if hidden_size // factor < 1:
            raise ValueError(
                f"method.reduction_factor {factor} exceeds the model's hidden size {hidden_size}: the bottleneck "
                f"would have no unit; use a factor of at most {hidden_size}"
            )
        return hidden_size // factor
