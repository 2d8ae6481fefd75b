"""Monitoring: Prometheus metrics (one registry per app) and a JSON access log line per request.

Handlers leave what they know on ``request.state`` (key name, model, token
counts, error type); :class:`Observability`, an ASGI middleware around the
whole app, reads it once the response is fully sent, so streamed requests are
timed to their last byte. The access log never holds the API key, and holds
prompt and completion text only with ``log_prompts``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "tuneforge.serve.access"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# Answers that refuse a caller (no key, scope, rate, size, time) rather than fail a request.
REFUSED_STATUSES = (401, 403, 408, 413, 429)


class ServeMetrics:
    """The Prometheus instruments of one app, in their own registry (tests build many apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tuneforge_requests", "HTTP requests.", ["route", "status"], registry=r)
        self.latency = Histogram(
            "tuneforge_request_latency_seconds", "Request latency to the last byte.", ["route", "status"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("tuneforge_requests_in_flight", "Requests being handled.", registry=r)
        self.errors = Counter("tuneforge_errors", "Error responses by OpenAI error type.", ["type"], registry=r)
        self.refused = Counter(
            "tuneforge_refused_requests",
            "Requests refused before generation by reason: missing/invalid/expired key, model not allowed, "
            "admin required, rate limit, body too large or too slow.", ["reason"], registry=r,
        )
        self.prompt_tokens = Counter("tuneforge_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.generated_tokens = Counter("tuneforge_generated_tokens", "Tokens generated.", ["model"], registry=r)
        self.ttft = Histogram(
            "tuneforge_time_to_first_token_seconds", "From request to its first generated token.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "tuneforge_batch_size",
            "Rows generating together: per generate call (static), or after each admission (continuous).",
            buckets=_BATCH_BUCKETS, registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Observability:
    """ASGI middleware: request count, latency, in-flight gauge, error count and one access log line.

    Args:
        app: The wrapped app.
        metrics: Where to count.
        routes: Known paths; any other path is labelled ``other`` so scanners cannot blow up label sets.
        log_prompts: Put prompt and completion text in the access log.
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: Collection[str], log_prompts: bool = False):
        self.app = app
        self.metrics = metrics
        self.routes = set(routes)
        self.log_prompts = log_prompts
        self.access = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def observe_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observe_send)
        finally:
            latency = time.perf_counter() - start
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route, str(status)).observe(latency)
            state = scope.get("state", {})
            if status >= 400:
                state.setdefault("error_type", "server_error" if status >= 500 else "http_error")
            if "error_type" in state:  # also a stream that failed after its 200 status line
                self.metrics.errors.labels(state["error_type"]).inc()
            if status in REFUSED_STATUSES:
                self.metrics.refused.labels(state.get("error_code", str(status))).inc()
            self.access.info(json.dumps(self._record(scope, route, status, latency, state)))

    def _record(self, scope: Scope, route: str, status: int, latency: float, state: dict[str, Any]) -> dict[str, Any]:
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "key": state.get("key_name"),
            "method": scope["method"],
            "route": route,
            "model": state.get("model"),
            "status": status,
            "latency_ms": round(latency * 1000, 2),
            "prompt_tokens": state.get("prompt_tokens"),
            "completion_tokens": state.get("completion_tokens"),
        }
        if "error_type" in state:
            record["error"] = state["error_type"]
        if status in REFUSED_STATUSES:
            record["refused"] = state.get("error_code", str(status))
        elif self.log_prompts:  # a refused request's text is never logged, whatever --log-prompts says
            record["prompt"] = state.get("prompt_text")
            record["completion"] = state.get("completion_text")
        return record
