"""The HTTP endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/health``, ``/metrics``
(and ``/v1/rewards`` of a reward model, in :mod:`tuneforge.serve.rewards`).

Both generation endpoints follow one path: check the model and limits,
tokenize, submit to the engine, then either wait for every choice or stream
Server-Sent Events (``data: {chunk}`` lines, then ``data: [DONE]``). The
per-app objects (engine, limits, metrics) live on
``app.state.serve`` (a :class:`ServeContext`); authentication happened
before, in :class:`tuneforge.serve.auth.AuthGate`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tuneforge.serve.batcher import GenerationHandle, GenerationRequest, SamplingParams
from tuneforge.serve.decode import Delta, Finished
from tuneforge.serve.engine import Engine
from tuneforge.serve.http_errors import APIError, error_body
from tuneforge.serve.limits import ServeLimits
from tuneforge.serve.metrics import ServeMetrics
from tuneforge.serve.schemas import (
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChatDelta, Completion, CompletionChoice, CompletionRequest, ModelCard, ModelList, Usage, new_id, now,
)

log = logging.getLogger("tuneforge.serve")
router = APIRouter()

MIN_TEMPERATURE = 1e-3
"""Temperatures above 0 but below this decode greedily."""


@dataclass
class ServeContext:
    """Everything the endpoints of one app share: a generation engine, or a reward model (``rewards``)."""

    engine: Engine | None
    limits: ServeLimits
    metrics: ServeMetrics
    log_prompts: bool = False
    created: int = 0
    rewards: Any = None
    """The :class:`~tuneforge.serve.rewards.RewardService` when a reward model is served (``engine`` is None)."""

    @property
    def names(self) -> list[str]:
        """Every served model name, the loaded model first."""
        return self.engine.names if self.engine is not None else self.rewards.names

    @property
    def primary(self) -> str:
        return self.engine.primary if self.engine is not None else self.rewards.name


def _ctx(request: Request) -> ServeContext:
    return request.app.state.serve


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    ctx = _ctx(request)
    if ctx.engine is None:
        return {"status": "ok", "models": ctx.names, "task": "reward"}
    engine = ctx.engine
    return {"status": "ok", "models": engine.names, "queued": engine.batcher.queued(), **engine.batcher.stats}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = _ctx(request).metrics.render()
    return Response(body, media_type=content_type)


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    ctx = _ctx(request)
    primary = ctx.primary
    return ModelList(data=[
        ModelCard(id=name, created=ctx.created, parent=None if name == primary else primary)
        for name in _allowed(request, ctx.names)
    ])


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    ctx = _ctx(request)
    _check_model(ctx, request, body.model)
    _check_generates(ctx, body.model)
    # "developer" is OpenAI's newer name for "system"; chat templates only know the latter.
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    try:
        prompt_ids = ctx.engine.encode_chat(messages)
    except Exception as exc:  # jinja raises its own errors for messages a template refuses
        raise APIError(400, f"cannot apply the model's chat template: {exc}", param="messages") from exc
    request.state.prompt_text = messages
    handle = _submit(ctx, request, body, [prompt_ids], body.max_completion_tokens or body.max_tokens, "messages")
    chat_id, created = new_id("chatcmpl"), now()
    if body.stream:
        def chunk(index: int, text: str | None, finish: str | None, first: bool = False) -> BaseModel:
            delta = ChatDelta(role="assistant", content="") if first else ChatDelta(content=text)
            choice = ChatChunkChoice(index=index, delta=delta, finish_reason=finish)
            return ChatCompletionChunk(id=chat_id, created=created, model=body.model, choices=[choice])

        def usage_chunk(usage: Usage) -> BaseModel:
            return ChatCompletionChunk(id=chat_id, created=created, model=body.model, choices=[], usage=usage)

        return _sse(ctx, request, handle, chunk, usage_chunk, body.stream_options, role_first=True)
    results, usage = await _complete(ctx, request, handle)
    choices = [
        ChatChoice(index=r.index, message=AssistantMessage(content=r.text), finish_reason=r.finish_reason)
        for r in results
    ]
    return ChatCompletion(id=chat_id, created=created, model=body.model, choices=choices, usage=usage)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    ctx = _ctx(request)
    _check_model(ctx, request, body.model)
    _check_generates(ctx, body.model)
    _check_choices(ctx, body.n, len(body.prompt))  # before tokenizing what may be thousands of prompts
    prompts = [ctx.engine.encode_text(p) for p in body.prompt]
    request.state.prompt_text = body.prompt
    handle = _submit(ctx, request, body, prompts, body.max_tokens, "prompt")
    cmpl_id, created = new_id("cmpl"), now()
    if body.stream:
        def chunk(index: int, text: str | None, finish: str | None, first: bool = False) -> BaseModel:
            choice = CompletionChoice(index=index, text=text or "", finish_reason=finish)
            return Completion(id=cmpl_id, created=created, model=body.model, choices=[choice])

        def usage_chunk(usage: Usage) -> BaseModel:
            return Completion(id=cmpl_id, created=created, model=body.model, choices=[], usage=usage)

        return _sse(ctx, request, handle, chunk, usage_chunk, body.stream_options, role_first=False)
    results, usage = await _complete(ctx, request, handle)
    choices = [CompletionChoice(index=r.index, text=r.text, finish_reason=r.finish_reason) for r in results]
    return Completion(id=cmpl_id, created=created, model=body.model, choices=choices, usage=usage)


# ---------------------------------------------------------------------------- shared steps


def _allowed(request: Request, names: list[str]) -> list[str]:
    """The served names the caller's key may use (all of them without authentication)."""
    caller = getattr(request.state, "caller", None)
    return [n for n in names if caller is None or caller.allows(n)]


def _check_model(ctx: ServeContext, request: Request, model: str) -> None:
    request.state.model = model  # for the access log, also when the request is refused below
    allowed = _allowed(request, ctx.names)
    if model not in ctx.names:
        # Only the names this key may use: a scoped key must not learn what else is served.
        raise APIError(
            404, f"the model {model!r} does not exist; served models: {', '.join(allowed) or 'none for this key'}",
            type="invalid_request_error", param="model", code="model_not_found",
        )
    if model not in allowed:
        raise APIError(
            403, f"API key {request.state.caller.name!r} may not use the model {model!r}",
            param="model", code="model_not_allowed",
        )


def _check_generates(ctx: ServeContext, model: str) -> None:
    if ctx.engine is None:
        raise APIError(
            400, f"the model {model!r} is a reward model: it scores (prompt, completion) pairs and cannot generate "
            "text; POST /v1/rewards instead", param="model", code="model_is_reward_model",
        )


def _check_choices(ctx: ServeContext, n: int, prompts: int) -> None:
    if n * prompts > ctx.limits.max_n:
        raise APIError(400, f"n x prompts = {n * prompts} is over the limit of {ctx.limits.max_n}", param="n")


def _submit(ctx: ServeContext, request: Request, body: Any, prompts: list[list[int]], max_tokens: int | None,
            prompt_field: str) -> GenerationHandle:
    """Apply the limits to a tokenized request and queue it."""
    limits, engine = ctx.limits, ctx.engine
    _check_choices(ctx, body.n, len(prompts))
    if any(not p for p in prompts):
        raise APIError(400, "a prompt encodes to no tokens; give some text", param=prompt_field, code="empty_prompt")
    if max_tokens is None:
        max_tokens = min(limits.default_max_tokens, limits.max_tokens)
    elif max_tokens > limits.max_tokens:
        raise APIError(
            400, f"max_tokens {max_tokens} is over this server's limit of {limits.max_tokens}",
            param="max_tokens", code="max_tokens_too_large",
        )
    longest = max(len(p) for p in prompts)
    if longest > limits.max_prompt_tokens:
        raise APIError(
            400, f"the prompt has {longest} tokens, over this server's limit of {limits.max_prompt_tokens}",
            param=prompt_field, code="context_length_exceeded",
        )
    if engine.context_length and longest + max_tokens > engine.context_length:
        raise APIError(
            400, f"prompt ({longest} tokens) + max_tokens ({max_tokens}) exceeds the model's context of "
            f"{engine.context_length} tokens", param="max_tokens", code="context_length_exceeded",
        )
    request.state.prompt_tokens = sum(len(p) for p in prompts)
    # Below MIN_TEMPERATURE sampling is greedy in effect, and torch turns logits / 1e-300 into inf and NaN.
    temperature = body.temperature if body.temperature >= MIN_TEMPERATURE else 0.0
    params = SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=body.top_p, stop=tuple(body.stop or ()),
        seed=body.seed, n=body.n,
    )
    return engine.submit(GenerationRequest(body.model, prompts, params))


def _account(ctx: ServeContext, request: Request, handle: GenerationHandle, results: list[Finished]) -> Usage:
    """Record tokens and time-to-first-token; return the usage block."""
    model = handle.request.model
    prompt_tokens = request.state.prompt_tokens
    completion_tokens = sum(r.completion_tokens for r in results)
    ctx.metrics.prompt_tokens.labels(model).inc(prompt_tokens)
    ctx.metrics.generated_tokens.labels(model).inc(completion_tokens)
    if handle.first_token_at is not None:
        ctx.metrics.ttft.labels(model).observe(handle.first_token_at - handle.submitted_at)
    request.state.completion_tokens = completion_tokens
    if ctx.log_prompts:
        request.state.completion_text = [r.text for r in sorted(results, key=lambda r: r.index)]
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


async def _complete(ctx: ServeContext, request: Request, handle: GenerationHandle) -> tuple[list[Finished], Usage]:
    try:
        results = await handle.result()
    except BaseException as exc:
        handle.cancel()
        if isinstance(exc, Exception):
            raise APIError(500, f"generation failed: {type(exc).__name__}", type="server_error") from exc
        raise
    return results, _account(ctx, request, handle, results)


def _sse(ctx: ServeContext, request: Request, handle: GenerationHandle, chunk: Callable[..., BaseModel],
         usage_chunk: Callable[[Usage], BaseModel], stream_options: Any, *, role_first: bool) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        done: list[Finished] = []
        try:
            if role_first:
                for index in range(handle.rows):
                    yield _event(chunk(index, None, None, first=True))
            async for event in handle.stream():
                if isinstance(event, Delta):
                    yield _event(chunk(event.index, event.text, None))
                else:
                    done.append(event)
                    yield _event(chunk(event.index, None, event.finish_reason))
            usage = _account(ctx, request, handle, done)
            if stream_options is not None and stream_options.include_usage:
                yield _event(usage_chunk(usage))
            yield "data: [DONE]\n\n"
        except Exception as exc:  # the status line is gone already: report in-band, as OpenAI does
            log.error("stream failed", exc_info=exc)
            request.state.error_type = "server_error"
            error = APIError(500, f"generation failed: {type(exc).__name__}", type="server_error")
            yield f"data: {error_body(error.detail).decode()}\n\n"
        finally:
            # Runs when the client disconnects too (Starlette cancels this generator): free the batch rows.
            handle.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _event(chunk: BaseModel) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"
