"""OpenAI-compatible request and response bodies (the subset tuneforge serves).

Requests ignore fields we do not know (``extra="ignore"``) because OpenAI
clients and frameworks send optional fields freely (``logprobs: false``,
``user``...); fields we do know are type-checked strictly (``true`` is not the
integer 1, ``"2"`` is not 2; Python's JSON parser accepts ``NaN`` and
``Infinity``, which are refused), and every number is bounded so that no value
reaches torch in a form it cannot take. Bad values become 400 errors in
OpenAI's error shape (see :mod:`tuneforge.serve.http_errors`).
"""

from __future__ import annotations

import time
import uuid
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


# OpenAI documents seed as a 64-bit integer; torch.manual_seed raises (a 500) outside this range.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
MAX_STOP_CHARS = 256
"""Longest stop string: each decoding step compares every prefix of every stop string with the output's end."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    """Decoding fields shared by both endpoints."""

    model: str = Field(..., description="A served model name (GET /v1/models).")
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate at most; default: the server's.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 (or below 0.001) is greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    n: int = Field(1, ge=1, description="Choices per prompt.")
    stop: Union[str, list[str], None] = Field(None, description="Up to 4 strings; the output ends before the first.")
    seed: int | None = Field(
        None, ge=SEED_MIN, le=SEED_MAX, description="Makes sampling reproducible (the request runs in its own batch)."
    )
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop strings must be at most {MAX_STOP_CHARS} characters")
        return stops


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens.")


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not prompts:
            raise ValueError("at least one prompt")
        if any(p == "" for p in prompts):
            # A model without a BOS token would get zero input tokens, which generate cannot start from.
            raise ValueError("prompts must not be empty")
        return prompts


# ---------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class _Choice(BaseModel):
    index: int
    finish_reason: str | None = None
    logprobs: None = None


class _Envelope(BaseModel):
    """The fields every completion object and chunk carries."""

    id: str
    created: int
    model: str
    usage: Usage | None = None


class ChatChoice(_Choice):
    message: AssistantMessage


class ChatCompletion(_Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Choice):
    delta: ChatDelta


class ChatCompletionChunk(_Envelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class CompletionChoice(_Choice):
    text: str


class Completion(_Envelope):
    """A ``text_completion``; streamed chunks use the same shape with partial text."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneforge"
    parent: str | None = Field(None, description="The base model an adapter runs over.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
