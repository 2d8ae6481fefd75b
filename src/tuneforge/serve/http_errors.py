"""Every error the server returns, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Handlers raise :class:`APIError`; FastAPI's validation errors, Starlette's
404/405 and unexpected exceptions are converted here too, so a client never
sees a traceback or FastAPI's own ``{"detail": ...}`` body. The error type is
recorded on the request so the metrics middleware can count errors by type.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Scope, Send

from tuneforge.serve.schemas import ErrorBody, ErrorDetail

log = logging.getLogger("tuneforge.serve")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error answered to the client as OpenAI does.

    Args:
        status: HTTP status.
        message: What went wrong, for the client.
        type: OpenAI error type; default from the status.
        param: The request field at fault, if any.
        code: A short machine-readable code.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self, status: int, message: str, *, type: str | None = None, param: str | None = None,
        code: str | None = None, headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(
            message=message, type=type or _TYPE_BY_STATUS.get(status, "server_error"), param=param, code=code
        )
        self.headers = headers


def error_body(detail: ErrorDetail) -> bytes:
    """The JSON bytes of an error (also sent as one SSE event when a stream fails midway)."""
    return ErrorBody(error=detail).model_dump_json().encode()


def error_response(scope: Scope, error: APIError) -> JSONResponse:
    """Build the response for ``error`` and note its type and code on the request state for the metrics."""
    state = scope.setdefault("state", {})
    state["error_type"] = error.detail.type
    state["error_code"] = error.detail.code or str(error.status)
    return JSONResponse(json.loads(error_body(error.detail)), status_code=error.status, headers=error.headers)


async def send_error(scope: Scope, send: Send, error: APIError) -> None:
    """Answer ``error`` from an ASGI middleware, before the app (and its handlers) ever run."""

    async def no_body() -> Message:  # a JSONResponse never reads the request
        return {"type": "http.disconnect"}

    await error_response(scope, error)(scope, no_body, send)


def describe_validation(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """Turn pydantic/FastAPI errors into one message and the first faulty field (dotted, no ``body.`` prefix).

    Example:
        >>> describe_validation([{"loc": ("body", "n"), "msg": "Input should be a valid integer"}])
        ("'n': Input should be a valid integer", 'n')
    """
    parts, first = [], None
    for err in errors:
        if err.get("type") == "json_invalid":
            return f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}", None
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = ".".join(loc) or None
        first = first or field
        parts.append(f"'{field}': {err.get('msg')}" if field else str(err.get("msg")))
    return "; ".join(parts) or "invalid request", first


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` answer in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(request.scope, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(list(exc.errors()))
        return error_response(request.scope, APIError(400, message, param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no route {request.method} {request.url.path}", 405: f"method {request.method} not allowed"}
        error = APIError(exc.status_code, message.get(exc.status_code, str(exc.detail)), headers=exc.headers)
        return error_response(request.scope, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request.scope, APIError(500, "internal server error", type="server_error"))
