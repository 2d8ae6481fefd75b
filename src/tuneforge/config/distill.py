"""The ``distill:`` section: knowledge distillation from a teacher (``training.objective: distill``)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator, model_validator

from tuneforge.config._types import Float, Int, Section as _Section


class EndpointTeacher(_Section):
    """A teacher behind an OpenAI-compatible chat endpoint (another ``tuneforge serve``, vLLM, ...)."""

    base_url: str = Field(..., description="The API root, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (sent as a Bearer token); the key itself "
        "never goes in a config file.",
    )
    model: str = Field("default", description="The model name the endpoint serves (the 'model' of each request).")
    timeout_seconds: Float = Field(120.0, gt=0, description="Seconds one request may take before it is retried.")

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL such as http://127.0.0.1:8000/v1 (got {value!r})")
        return value.rstrip("/")


class DistillConfig(_Section):
    """Knowledge distillation: the student (``model:``) learns from a teacher.

    ``logit``: the student matches the teacher's next-token distributions on the answer
    tokens of the training data (same tokenizer needed). ``sequence``: the teacher answers
    the training prompts and the student is fine-tuned on those answers (any teacher).
    """

    teacher: Union[str, EndpointTeacher] = Field(
        ..., description="A tuneforge run directory, a model folder, an alias or hub id, or "
        "{base_url, api_key_env, model} for an OpenAI-compatible endpoint.",
    )
    mode: Literal["logit", "sequence"] | None = Field(
        None, description="logit or sequence; default: sequence for an endpoint teacher (it returns text, not "
        "logits), logit otherwise.",
    )
    alpha: Float = Field(0.5, ge=0, le=1, description="logit: weight of the KL term; 1 - alpha weighs the answer cross-entropy.")
    temperature: Float = Field(2.0, gt=0, description="logit: softens both distributions; the KL is scaled by T^2.")
    positions: Literal["answers", "all"] = Field(
        "answers", description="logit: where the KL is taken: the answer tokens, or every token of each example "
        "(prompt included; the cross-entropy stays on the answers), which helps a student pruned from the teacher "
        "relearn its whole distribution (the Minitron recipe).",
    )
    prompts: str | None = Field(
        None, description="sequence: a file of prompts (.jsonl with a 'prompt' field, or .txt, one per line) the "
        "teacher answers; default: the inputs of the training split.",
    )
    concurrency: Int = Field(4, gt=0, description="sequence: requests in flight at once to an endpoint teacher.")
    max_retries: Int = Field(3, ge=0, description="sequence: retries of a request that failed (5xx, timeout, connection).")
    backoff_seconds: Float = Field(1.0, ge=0, description="sequence: wait before the first retry, doubled each time.")
    max_new_tokens: Int = Field(128, gt=0, description="sequence: longest teacher answer, in tokens.")

    @model_validator(mode="after")
    def _endpoint_means_sequence(self) -> "DistillConfig":
        if isinstance(self.teacher, EndpointTeacher) and self.mode == "logit":
            raise ValueError("distill.mode 'logit' needs the teacher's logits, but an endpoint teacher "
                             "(distill.teacher.base_url) returns text; use distill.mode: sequence")
        return self

    @model_validator(mode="after")
    def _positions_need_logits(self) -> "DistillConfig":
        if self.positions != "answers" and self.resolved_mode != "logit":
            raise ValueError("distill.positions chooses where the KL to the teacher's logits is taken, which only "
                             "logit distillation has; leave it out with distill.mode: sequence")
        return self

    @property
    def resolved_mode(self) -> str:
        """The mode that runs: the configured one, else sequence for an endpoint and logit for a local teacher."""
        if self.mode is not None:
            return self.mode
        return "sequence" if isinstance(self.teacher, EndpointTeacher) else "logit"
