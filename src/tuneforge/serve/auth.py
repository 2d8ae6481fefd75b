"""Who may call the API: bearer keys checked against a keys file, key scopes, per-key rate limits, loopback-only no-auth.

Serving without keys is refused unless the server only listens on a loopback
address: a typo in ``--host`` must not publish an open model endpoint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tuneforge.errors import SecurityError
from tuneforge.security import KeyRecord, KeyStore
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


@dataclass(frozen=True)
class Caller:
    """Who made a request: the key's name and its scopes (``record`` is ``None`` without authentication)."""

    name: str
    record: KeyRecord | None = None

    def allows(self, model: str) -> bool:
        return self.record is None or self.record.allows(model)

    @property
    def admin(self) -> bool:
        return self.record is not None and self.record.admin


class Authenticator:
    """Checks a request's key (unless ``keys`` is None), then the key's rate limit.

    Args:
        keys: Accepted keys, or ``None`` to serve without authentication.
        limiter: Per-key rate limit, or ``None``.
    """

    def __init__(self, keys: KeyStore | None, limiter: RateLimiter | None):
        self.keys = keys
        self.limiter = limiter

    def check(self, authorization: str | None, client: str) -> Caller:
        """Return the caller: its key name and scopes.

        Raises:
            APIError: 401 without a valid (unexpired) key, 429 over the rate limit (with ``Retry-After``).
        """
        if self.keys is None:
            # Without keys everyone shares one identity; limit per client address.
            caller = Caller(f"anonymous@{client}")
        else:
            token = bearer_token(authorization)
            if token is None:
                raise APIError(
                    401, "missing API key: send the header 'Authorization: Bearer <key>'",
                    code="missing_api_key", headers={"WWW-Authenticate": "Bearer"},
                )
            record = self.keys.find(token)
            if record is None:
                raise APIError(401, "invalid API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            if record.expired():
                raise APIError(
                    401, f"API key {record.name!r} expired at {record.expires}", code="expired_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            caller = Caller(record.name, record)
        if self.limiter is not None:
            wait = self.limiter.acquire(caller.name)
            if wait > 0:
                error = APIError(
                    429, f"rate limit exceeded for key {caller.name!r}; retry in {wait:.1f}s",
                    code="rate_limit_exceeded", headers=retry_after_header(wait),
                )
                error.key_name = caller.name  # type: ignore[attr-defined]  # for the audit's refusal counts
                raise error
        return caller


class AuthGate:
    """ASGI middleware: every path but the public ones must pass :class:`Authenticator` first.

    Checking here, before FastAPI runs, means a caller without a valid key gets 401 before
    anything parses (or even reads) its body. Unknown paths are not public: deny by default.
    Admin paths (``/metrics`` on a server reachable beyond loopback) also need a key with the
    ``admin`` scope (403 otherwise). The caller (key name and scopes, never the key) goes to
    ``scope["state"]["caller"]``, and its name to ``scope["state"]["key_name"]`` for the access log.
    """

    def __init__(
        self, app: ASGIApp, authenticator: Authenticator, public: Collection[str] = ("/health", "/metrics"),
        admin: Collection[str] = (), refusals: RefusalAudit | None = None,
    ):
        self.app = app
        self.refusals = refusals
        self.authenticator = authenticator
        self.public = set(public)
        self.admin = set(admin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.public:
            client = scope["client"][0] if scope.get("client") else "?"
            try:
                caller = self.authenticator.check(Headers(scope=scope).get("authorization"), client)
                state = scope.setdefault("state", {})
                state["key_name"], state["caller"] = caller.name, caller
                if scope["path"] in self.admin and not caller.admin:
                    raise APIError(
                        403, f"{scope['path']} needs a key with the admin scope (tuneforge keys create NAME --admin)",
                        code="admin_required",
                    )
            except APIError as error:
                if self.refusals is not None:  # counted, and written to the audit log in aggregate
                    self.refusals.record(error.status, error.detail.code or "", client, getattr(error, "key_name", None))
                return await send_error(scope, send, error)
        await self.app(scope, receive, send)
