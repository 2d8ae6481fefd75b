"""Who may call the API: bearer keys checked against a keys file, per-key rate limits, loopback-only no-auth.

Serving without keys is refused unless the server only listens on a loopback
address: a typo in ``--host`` must not publish an open model endpoint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tuneforge.errors import SecurityError
from tuneforge.security import KeyStore
from tuneforge.security.refusals import RefusalAudit
from tuneforge.serve.http_errors import APIError, send_error
from tuneforge.serve.limits import RateLimiter, retry_after_header


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_setup(host: str, keys_file: object | None, no_auth: bool) -> None:
    """Refuse unsafe or ambiguous combinations of ``--host``, ``--api-keys-file`` and ``--no-auth``.

    Raises:
        SecurityError: no keys and no ``--no-auth``, both given, or ``--no-auth`` on a non-loopback host.
    """
    if keys_file is not None and no_auth:
        raise SecurityError("give either --api-keys-file or --no-auth, not both")
    if keys_file is None and not no_auth:
        raise SecurityError(
            "API keys are required: pass --api-keys-file KEYS (create one with `tuneforge keys create NAME "
            "--file KEYS`), or --no-auth to serve without keys on a loopback address"
        )
    if no_auth and not is_loopback(host):
        raise SecurityError(
            f"--no-auth is only allowed on a loopback host (127.0.0.1, ::1, localhost), not {host!r}: "
            "anyone who can reach the port could use the model; use --api-keys-file"
        )


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class Authenticator:
    """Checks a request's key (unless ``keys`` is None), then the key's rate limit.

    Args:
        keys: Accepted keys, or ``None`` to serve without authentication.
        limiter: Per-key rate limit, or ``None``.
    """

    def __init__(self, keys: KeyStore | None, limiter: RateLimiter | None):
        self.keys = keys
        self.limiter = limiter

    def check(self, authorization: str | None, client: str) -> str:
        """Return the caller's key name.

        Raises:
            APIError: 401 without a valid key, 429 over the rate limit (with ``Retry-After``).
        """
        if self.keys is None:
            # Without keys everyone shares one identity; limit per client address.
            name = f"anonymous@{client}"
        else:
            token = bearer_token(authorization)
            if token is None:
                raise APIError(
                    401, "missing API key: send the header 'Authorization: Bearer <key>'",
                    code="missing_api_key", headers={"WWW-Authenticate": "Bearer"},
                )
            name = self.keys.verify(token)
            if name is None:
                raise APIError(401, "invalid API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if self.limiter is not None:
            wait = self.limiter.acquire(name)
            if wait > 0:
                error = APIError(
                    429, f"rate limit exceeded for key {name!r}; retry in {wait:.1f}s",
                    code="rate_limit_exceeded", headers=retry_after_header(wait),
                )
                error.key_name = name  # type: ignore[attr-defined]  # for the audit's refusal counts
                raise error
        return name


class AuthGate:
    """ASGI middleware: every path but the public ones must pass :class:`Authenticator` first.

    Checking here, before FastAPI runs, means a caller without a valid key gets 401 before
    anything parses (or even reads) its body. Unknown paths are not public: deny by default.
    The key *name* (never the key) goes to ``scope["state"]["key_name"]`` for the access log.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator, public: Collection[str] = ("/health", "/metrics"),
                 refusals: RefusalAudit | None = None):
        self.app = app
        self.refusals = refusals
        self.authenticator = authenticator
        self.public = set(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.public:
            client = scope["client"][0] if scope.get("client") else "?"
            try:
                name = self.authenticator.check(Headers(scope=scope).get("authorization"), client)
            except APIError as error:
                if self.refusals is not None:  # counted, and written to the audit log in aggregate
                    self.refusals.record(error.status, error.detail.code or "", client, getattr(error, "key_name", None))
                return await send_error(scope, send, error)
            scope.setdefault("state", {})["key_name"] = name
        await self.app(scope, receive, send)
