"""The ``training.grpo`` section: group relative policy optimisation, online RL (``training.objective: grpo``)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tuneforge.config._types import Float, Int, Section

BuiltinReward = Literal["exact_match", "label_match", "json_valid", "json_field_match", "length_penalty"]
"""Verifiable rewards built in (:mod:`tuneforge.train.rewards`); all but json_valid and length_penalty need a reference."""

GrpoLoss = Literal["grpo", "dr_grpo", "dapo", "bnpo"]
"""The ``loss_type`` names of ``trl.GRPOConfig`` (TRL 1.16) that need no extra settings."""

_SOURCES = ("name", "regex", "function", "model")


class RewardSource(Section):
    """One reward: exactly one of ``name`` (a built-in), ``regex``, ``function`` or ``model``, and its weight.

    A bare string is a built-in's name: ``rewards: [label_match]``.
    """

    name: BuiltinReward | None = Field(
        None, description="A built-in verifiable reward: exact_match or label_match (the answer against the row's "
        "reference, with eval.normalize and, for labels, eval.labels or the set of references), json_valid, "
        "json_field_match (fields of the reference object; see fields), length_penalty (see target_length).",
    )
    regex: str | None = Field(None, description="1 when the completion matches this Python regex (re.search), else 0.")
    function: str | None = Field(
        None, description="'module:function' of your own reward, called as f(prompts, completions, **columns) -> "
        "list[float | None] (completions are message lists; columns include reference). RUNS YOUR CODE: the module "
        "is imported only when named here, from the Python path of the run.",
    )
    model: str | None = Field(None, description="A trained reward-model run (objective reward) whose score is the reward (RLHF).")
    weight: Float = Field(1.0, description="Weight of this reward in the sum the advantages are computed from.")
    fields: list[str] | None = Field(None, description="json_field_match: the fields compared (default: the reference's keys).")
    target_length: Int | None = Field(
        None, gt=0, description="length_penalty: completions up to this many tokens are not penalised; beyond, "
        "the penalty grows to -1 at max_completion_length (default 0: every token costs).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> "RewardSource":
        given = [k for k in _SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_SOURCES)} (got {', '.join(given) or 'none'})")
        if self.fields is not None and self.name != "json_field_match":
            raise ValueError("fields applies to name: json_field_match only")
        if self.target_length is not None and self.name != "length_penalty":
            raise ValueError("target_length applies to name: length_penalty only")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
        return value

    @field_validator("function")
    @classmethod
    def _module_colon_function(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError(f"{value!r} is not 'module:function' (a dotted module path, a colon, a function name)")
        return value

    @property
    def label(self) -> str:
        """A short name for logs (``rewards/<label>/mean``)."""
        if self.name is not None:
            return self.name
        return "regex" if self.regex is not None else "function" if self.function is not None else "model"


class GrpoConfig(Section):
    """GRPO through ``trl.GRPOTrainer``: sample a group of completions per prompt, reward them, and raise the
    better-than-group-average ones. Generation uses the model's own ``generate`` (KV cache), no vLLM.
    """

    rewards: list[RewardSource] = Field(
        default_factory=list, description="The reward sources, summed by weight: built-in names, {regex: ...}, "
        "{function: 'module:function'} or {model: RUN}, each with an optional weight.",
    )
    num_generations: Int = Field(
        4, ge=2, description="Completions sampled per prompt (the group the advantages are relative to); "
        "per_device_batch_size x gradient_accumulation_steps must be a multiple of it.",
    )
    max_completion_length: Int = Field(32, gt=0, description="Longest generated completion, in tokens.")
    beta: Float = Field(
        0.04, ge=0, description="KL penalty towards the starting model (the adapter switched off); 0 skips the "
        "reference pass and the KL log.",
    )
    temperature: Float = Field(1.0, gt=0, description="Sampling temperature of the completions.")
    top_p: Float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold of the completions.")
    loss_type: GrpoLoss = Field("dapo", description="How token losses are averaged: grpo, dr_grpo, dapo (TRL's default), bnpo.")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the reward std of the group, of the batch, or not at all."
    )
