"""The scoring endpoint of a served reward model: ``POST /v1/rewards``.

``{"model": NAME, "input": [{"prompt": ..., "completion": ...}, ...]}`` answers one scalar
reward per input, higher = preferred. The prompt is a string (one user turn) or chat
messages; every input is encoded by :func:`tuneforge.eval.reward.encode`, as in training.
The route shares the app's keys, scopes, rate and size limits and metrics with the
generation routes; a reward model answers no generation route, and a generative model
no scoring route (each refusal says which route to use).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tuneforge.errors import DataError
from tuneforge.serve.http_errors import APIError
from tuneforge.serve.routes import _check_model, _ctx  # the model and scope checks every route shares
from tuneforge.serve.schemas import ChatMessage, _Request

router = APIRouter()


@dataclass
class RewardService:
    """A reward model served under one name. Scoring runs one request at a time, off the event loop."""

    scorer: Any
    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def names(self) -> list[str]:
        return [self.name]


class RewardInput(_Request):
    prompt: Union[str, list[ChatMessage]]
    completion: str


class RewardRequest(_Request):
    model: str = Field(..., description="The served reward model (GET /v1/models).")
    input: list[RewardInput] = Field(..., min_length=1, description="The (prompt, completion) pairs to score.")


class RewardScore(BaseModel):
    object: Literal["reward"] = "reward"
    index: int
    score: float


class RewardUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RewardResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[RewardScore]
    usage: RewardUsage


@router.post("/v1/rewards")
async def rewards(body: RewardRequest, request: Request) -> RewardResponse:
    from tuneforge.eval.reward import encode, score_ids

    ctx = _ctx(request)
    _check_model(ctx, request, body.model)
    if ctx.rewards is None:
        raise APIError(400, f"the model {body.model!r} generates text and has no reward head; /v1/rewards needs a "
                       "reward model (training.objective: reward); use /v1/chat/completions or /v1/completions",
                       param="model", code="not_a_reward_model")
    if len(body.input) > ctx.limits.max_n:
        raise APIError(400, f"{len(body.input)} inputs is over this server's limit of {ctx.limits.max_n} per request",
                       param="input")
    scorer = ctx.rewards.scorer
    ids = []
    for i, item in enumerate(body.input):
        prompt = item.prompt if isinstance(item.prompt, str) else [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in item.prompt
        ]
        try:
            ids.append(encode(scorer.tokenizer, prompt, item.completion))
        except DataError as exc:
            raise APIError(400, f"input[{i}]: {exc}", param="input") from exc
        except Exception as exc:  # jinja raises its own errors for messages a template refuses
            raise APIError(400, f"input[{i}]: cannot apply the model's chat template: {exc}", param="input") from exc
        if len(ids[-1]) > ctx.limits.max_prompt_tokens:
            raise APIError(400, f"input[{i}] has {len(ids[-1])} tokens, over this server's limit of "
                           f"{ctx.limits.max_prompt_tokens}", param="input", code="context_length_exceeded")
    tokens = sum(len(x) for x in ids)
    request.state.prompt_tokens = tokens
    ctx.metrics.prompt_tokens.labels(body.model).inc(tokens)

    def run() -> list[float]:
        with ctx.rewards.lock:
            return score_ids(scorer.model, ids, pad_token_id=scorer.tokenizer.pad_token_id)

    try:
        scores = await run_in_threadpool(run)
    except Exception as exc:
        raise APIError(500, f"scoring failed: {type(exc).__name__}", type="server_error") from exc
    return RewardResponse(model=body.model, data=[RewardScore(index=i, score=s) for i, s in enumerate(scores)],
                          usage=RewardUsage(prompt_tokens=tokens, total_tokens=tokens))
