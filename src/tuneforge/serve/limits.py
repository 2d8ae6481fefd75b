"""Request limits: body size, prompt and output tokens, choices, and a per-key rate limit.

The rate limit is a token bucket per key name: ``rate`` requests per minute on
average, with bursts up to ``rate`` requests. It is written by hand because it
is fifteen lines and the libraries for it (slowapi, limits) bring storage
backends and decorators we do not need.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.errors import ConfigError
from tuneforge.serve.http_errors import APIError, send_error

_PER = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for.

    Attributes:
        rate_per_minute: Requests per minute per key (token bucket); ``None`` for no limit.
        max_tokens: Largest ``max_tokens`` a request may ask for.
        default_max_tokens: ``max_tokens`` when a request gives none (capped by ``max_tokens``).
        max_prompt_tokens: Longest prompt, in tokens after the chat template.
        max_body_bytes: Largest request body.
        max_n: Most choices (``n`` x prompts) per request.
        body_timeout_s: Longest time a client may take to send its whole request body (408 after).
    """

    rate_per_minute: float | None = None
    max_tokens: int = 1024
    default_max_tokens: int = 256
    max_prompt_tokens: int = 4096
    max_body_bytes: int = 1 << 20
    max_n: int = 8
    body_timeout_s: float = 30.0


def parse_rate_limit(text: str) -> float:
    """Parse ``N/min`` (also ``N/s``, ``N/h``) into requests per minute.

    Raises:
        ConfigError: the text is not of that form.

    Example:
        >>> parse_rate_limit("120/min"), parse_rate_limit("2/s")
        (120.0, 120.0)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*", text)
    if not match or match.group(2) not in _PER or float(match.group(1)) <= 0:
        raise ConfigError(f"--rate-limit {text!r}: expected a positive N/min, N/s or N/h, e.g. 60/min")
    return float(match.group(1)) * 60 / _PER[match.group(2)]


class RateLimiter:
    """Token buckets keyed by API key name.

    Args:
        per_minute: Average requests per minute allowed; also the burst size.
        clock: Seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, per_minute: float, clock=time.monotonic):
        self.capacity = max(per_minute, 1.0)
        self.refill_per_s = per_minute / 60
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one request from ``key``'s bucket; return 0 when allowed, else the seconds to wait."""
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_s)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.refill_per_s


def retry_after_header(wait_s: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(wait_s)))}


class BodySizeLimit:
    """ASGI middleware answering 413 to bodies over ``max_bytes``, and 408 to bodies that arrive too slowly.

    It checks ``Content-Length`` first, and otherwise counts the bytes as they arrive
    (chunked uploads), buffering at most ``max_bytes`` before replaying them to the app.
    The whole body must arrive within ``timeout_s``: a client that declares 100 bytes and
    sends 4 would otherwise hold its connection (and a server slot) forever, since
    uvicorn's ``timeout_keep_alive`` only covers the time *between* requests.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(scope, send, self._too_large())
        chunks, size = [], 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - time.monotonic(), 0))
            except asyncio.TimeoutError:
                return await send_error(scope, send, self._too_slow())
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await send_error(scope, send, self._too_large())
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for http.disconnect (streaming needs it)

        await self.app(scope, replay, send)

    def _too_large(self) -> APIError:
        return APIError(413, f"request body larger than {self.max_bytes} bytes", code="request_too_large")

    def _too_slow(self) -> APIError:
        # Connection: close, since the rest of the declared body may still trickle in.
        return APIError(
            408, f"the request body did not arrive within {self.timeout_s:g}s", code="request_timeout",
            headers={"Connection": "close"},
        )
