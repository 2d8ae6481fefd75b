"""Browser access with the API keys of ``tuneforge serve``: a key typed once into /login, kept in a cookie.

A browser cannot add an ``Authorization`` header to page loads or ``EventSource``
streams, so :class:`KeyCookie` turns the login cookie into that header and the
checking itself stays serve's :class:`~tuneforge.serve.auth.AuthGate` (same keys file,
same refusals). The cookie is HttpOnly (no script can read it) and SameSite=Strict
(no other site's page can send it along).
"""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "tuneforge_key"


class KeyCookie:
    """ASGI middleware: a request without ``Authorization`` but with the login cookie gets ``Bearer <cookie>``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            if "authorization" not in headers and "cookie" in headers:
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(headers["cookie"])
                except Exception:  # noqa: BLE001  (a malformed cookie header is just no key: AuthGate answers 401)
                    jar = SimpleCookie()
                if COOKIE in jar and jar[COOKIE].value:
                    scope = dict(scope)
                    scope["headers"] = [*scope["headers"], (b"authorization", f"Bearer {jar[COOKIE].value}".encode("latin-1"))]
        await self.app(scope, receive, send)


def same_origin(headers: Headers, scheme: str) -> bool:
    """Whether a state-changing request (launch, stop, sign in) comes from the dashboard's own pages.

    Any web page can make a browser POST a form to ``127.0.0.1``; browsers send ``Origin``
    with such posts, so one that names another site is refused. Clients that send no
    ``Origin`` (curl, scripts) are not browsers following a hostile page.

    Example:
        >>> same_origin(Headers({"origin": "https://evil.example", "host": "127.0.0.1:7860"}), "http")
        False
    """
    origin = headers.get("origin")
    return origin is None or origin == f"{scheme}://{headers.get('host', '')}"
