"""The dashboard app factory :func:`create_app` and the blocking :func:`run` behind ``tuneforge ui``.

Security is serve's: loopback without keys, API keys (from ``tuneforge keys create``)
required anywhere else, checked by serve's :class:`~tuneforge.serve.auth.AuthGate`
before any route runs. The dashboard only reads files under the runs folder.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from tuneforge.security import KeyStore
from tuneforge.errors import SecurityError
from tuneforge.serve.auth import AuthGate, Authenticator, is_loopback
from tuneforge.serve.listen import bind
from tuneforge.ui.auth import KeyCookie
from tuneforge.ui.exports import Exporter
from tuneforge.ui.launch import Launcher
from tuneforge.ui.playground import Playground
from tuneforge.ui.predictions import PredictionsCache
from tuneforge.ui.routes import RunNotFound, UIContext, error_page, router
from tuneforge.ui.runs import read_run_file
from tuneforge.ui.training_data import TrainingCache

STATIC = Path(__file__).parent / "static"
# Reachable without a key: the login page must be styled before anyone has signed in; the assets hold no run data.
PUBLIC = ("/health", "/login", "/static/dashboard.css", "/static/dashboard.js")


def create_app(
    runs_dir: str | Path, *, keys: KeyStore | str | Path | None, allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """Build the dashboard over the runs in ``runs_dir``.

    Args:
        runs_dir: The folder holding one folder per run (``runs/`` by default in the CLI).
        keys: Accepted API keys (a :class:`~tuneforge.security.KeyStore` or a keys file), or ``None``
            for no authentication. Required, so that no caller turns authentication off by omission.
        allowed_hosts: ``Host`` headers to answer (others get 400); ``None`` answers any. On loopback
            without keys, ``tuneforge ui`` allows only loopback names: a hostile page cannot then reach
            the dashboard through a domain of its own that resolves to 127.0.0.1 (DNS rebinding).

    Example:
        >>> app = create_app("runs", keys=None)  # doctest: +SKIP
    """
    if isinstance(keys, (str, Path)):
        keys = KeyStore(keys)
    playground = Playground(Path(runs_dir))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        playground.close()  # stop the engines' worker threads

    app = FastAPI(title="tuneforge dashboard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    predictions = PredictionsCache(read=lambda path: read_run_file(Path(runs_dir), path))
    app.state.ui = UIContext(Path(runs_dir), predictions, playground, Launcher(Path(runs_dir)), TrainingCache(),
                             Exporter(Path(runs_dir)))
    app.include_router(router)
    # Every asset is in the package (no CDN): the dashboard works on an air-gapped machine.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RunNotFound)
    async def _not_found(request: Request, exc: RunNotFound):
        return error_page(request, exc)

    app.add_middleware(AuthGate, authenticator=Authenticator(keys, None), public=PUBLIC)
    app.add_middleware(KeyCookie)  # AuthGate sees the cookie's key as a bearer header
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))  # outermost
    return app


def check_ui_auth(host: str, keys_file: object | None) -> None:
    """Refuse to show runs without keys beyond loopback (on loopback, keys are optional).

    Raises:
        SecurityError: no keys file and ``host`` is reachable from other machines.
    """
    if keys_file is None and not is_loopback(host):
        raise SecurityError(
            f"--host {host!r} is reachable from other machines: pass --api-keys-file KEYS (create one with "
            "`tuneforge keys create NAME --file KEYS`), or listen on 127.0.0.1"
        )


def run(runs_dir: str | Path, *, host: str = "127.0.0.1", port: int = 7860, keys_file: str | Path | None = None) -> None:
    """Serve the dashboard until interrupted.

    Raises:
        SecurityError: no keys beyond loopback, or the keys file is missing or malformed.
        ConfigError: the port is invalid or taken, or the host unknown.
    """
    import uvicorn

    check_ui_auth(host, keys_file)
    keys = KeyStore(keys_file) if keys_file is not None else None
    sock = bind(host, port)
    loopback_names = ["127.0.0.1", "localhost", "[::1]", "::1", host]
    app = create_app(runs_dir, keys=keys, allowed_hosts=loopback_names if is_loopback(host) else None)
    bound = sock.getsockname()[1]
    where = f"http://{host}:{bound}/" + ("login" if keys is not None else "")
    print(f"dashboard over {runs_dir} on {where}", file=sys.stderr)
    uvicorn.Server(uvicorn.Config(app, host=host, port=bound, access_log=False, log_level="warning")).run(sockets=[sock])
