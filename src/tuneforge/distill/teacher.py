"""Ask a teacher for answers: an OpenAI-compatible endpoint over HTTP, or a local model.

Endpoint: at most ``concurrency`` requests in flight; a request that fails with a 5xx,
429, timeout or connection error is retried up to ``max_retries`` times, waiting
``backoff_seconds`` and twice as long each time after. A request that still fails (or
fails with another 4xx, which a retry would not change) becomes an :class:`Failed`
value: the caller counts it, nothing is dropped silently. An endpoint that cannot be
reached at all, or refuses the key, is an error before any prompt is sent.

Each answer is handed to ``on_answer`` as soon as it arrives, so the caller can cache it
on disk and a killed run loses none of the answers it already paid for.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tuneforge.config.distill import EndpointTeacher
from tuneforge.errors import ConfigError

RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Failed:
    """A prompt the teacher did not answer, and why (the last error)."""

    reason: str
    attempts: int


def api_key(teacher: EndpointTeacher) -> str | None:
    """The key from ``teacher.api_key_env``.

    Raises:
        ConfigError: the variable is named but not set.
    """
    if teacher.api_key_env is None:
        return None
    key = os.environ.get(teacher.api_key_env)
    if not key:
        raise ConfigError(f"distill.teacher.api_key_env: the environment variable {teacher.api_key_env} is not set "
                          "(it should hold the teacher endpoint's API key)")
    return key


def ask_endpoint(teacher: EndpointTeacher, prompts: Sequence[list[dict]], *, max_new_tokens: int, concurrency: int,
                 max_retries: int, backoff_seconds: float,
                 on_answer: Callable[[int, str], None]) -> dict[int, str | Failed]:
    """Greedy answers of an OpenAI-compatible chat endpoint, one per prompt (a list of messages).

    Returns:
        Prompt index -> the answer text, or :class:`Failed`.

    Raises:
        ConfigError: the endpoint cannot be reached (after the retries) or refuses the API key.
    """
    return asyncio.run(_ask_all(teacher, prompts, max_new_tokens=max_new_tokens, concurrency=concurrency,
                                max_retries=max_retries, backoff_seconds=backoff_seconds, on_answer=on_answer))


async def _ask_all(teacher: EndpointTeacher, prompts: Sequence[list[dict]], *, max_new_tokens: int, concurrency: int,
                   max_retries: int, backoff_seconds: float, on_answer: Callable[[int, str], None]) -> dict[int, Any]:
    import httpx

    key = api_key(teacher)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=teacher.base_url + "/", headers=headers, timeout=teacher.timeout_seconds,
                                 limits=limits) as client:
        await _check_reachable(client, teacher, max_retries, backoff_seconds)
        gate = asyncio.Semaphore(concurrency)
        results: dict[int, Any] = {}

        async def one(i: int, messages: list[dict]) -> None:
            async with gate:
                body = {"model": teacher.model, "messages": messages, "max_tokens": max_new_tokens, "temperature": 0}
                results[i] = await _post_with_retries(client, body, max_retries, backoff_seconds)
            if isinstance(results[i], str):
                on_answer(i, results[i])

        await asyncio.gather(*(one(i, m) for i, m in enumerate(prompts)))
    return results


async def _check_reachable(client: Any, teacher: EndpointTeacher, max_retries: int, backoff_seconds: float) -> None:
    """``GET /models`` once (retried like a request): an unreachable endpoint or a refused key stops here."""
    import httpx

    last = ""
    for attempt in range(max_retries + 1):
        if attempt:
            await asyncio.sleep(backoff_seconds * 2 ** (attempt - 1))
        try:
            response = await client.get("models")
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            continue
        if response.status_code in (401, 403):
            hint = (f"check the key in ${teacher.api_key_env}" if teacher.api_key_env
                    else "set distill.teacher.api_key_env to the environment variable that holds the key")
            raise ConfigError(f"distill.teacher: {teacher.base_url} refused the request ({response.status_code}); {hint}")
        if response.status_code in RETRIED_STATUS:
            last = f"HTTP {response.status_code}"
            continue
        return  # 200, or a server without /models (404): the chat requests will tell
    raise ConfigError(f"distill.teacher.base_url: cannot reach the teacher endpoint {teacher.base_url} "
                      f"({last}, {max_retries + 1} attempts); is the server running and the URL right?")


async def _post_with_retries(client: Any, body: dict, max_retries: int, backoff_seconds: float) -> str | Failed:
    import httpx

    reason = ""
    for attempt in range(max_retries + 1):
        if attempt:
            await asyncio.sleep(backoff_seconds * 2 ** (attempt - 1))
        try:
            response = await client.post("chat/completions", json=body)
        except httpx.TransportError as exc:  # timeouts, refused and dropped connections
            reason = type(exc).__name__
            continue
        if response.status_code == 200:
            try:
                return response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                return Failed("malformed response (no choices[0].message.content)", attempt + 1)
        reason = f"HTTP {response.status_code}"
        if response.status_code not in RETRIED_STATUS:
            return Failed(reason, attempt + 1)  # 400, 404, 422: asking again gets the same answer
    return Failed(reason, max_retries + 1)


def ask_local(model: Any, tokenizer: Any, prompts: Sequence[list[dict]], *, max_new_tokens: int,
              on_answer: Callable[[int, str], None], batch_size: int = 16) -> dict[int, str | Failed]:
    """Greedy answers of a local model through eval's batched generation, handed over batch by batch."""
    from tuneforge.config.schema import GenerationConfig
    from tuneforge.data.prompts import render_prompt
    from tuneforge.eval.generate import generate_texts

    gen = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    results: dict[int, str | Failed] = {}
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        texts = generate_texts(model, tokenizer, [render_prompt(prompts[i], tokenizer) for i in chunk], gen).texts
        for i, text in zip(chunk, texts):
            results[i] = text
            on_answer(i, text)
    return results
