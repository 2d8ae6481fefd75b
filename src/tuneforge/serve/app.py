"""The app factory :func:`create_app`, the blocking :func:`run` behind ``tuneforge serve``, and
:func:`background_server` (a real uvicorn server in a thread, for tests, benchmarks and notebooks).

Middleware, outermost first: metrics + access log (sees every answer, 401s
and 413s included), CORS (only with ``cors_origins``; it answers preflights,
which carry no key), keys + scopes + rate limit, body size and time limit, then FastAPI.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

from fastapi import FastAPI

from tuneforge.models import LoadedModel
from tuneforge.security import KeyStore
from tuneforge.security.refusals import RefusalAudit
from tuneforge.serve.auth import AuthGate, Authenticator, check_auth_setup, is_loopback
from tuneforge.serve.batcher import BatchingConfig
from tuneforge.serve.engine import Engine, load_engine, served_name
from tuneforge.serve.http_errors import install_error_handlers
from tuneforge.serve.limits import BodySizeLimit, RateLimiter, ServeLimits
from tuneforge.serve.listen import bind
from tuneforge.serve.metrics import ACCESS_LOGGER, Observability, ServeMetrics
from tuneforge.serve.rewards import RewardService, router as rewards_router
from tuneforge.serve.routes import ServeContext, router
from tuneforge.serve.schemas import now


def create_app(
    engine_or_loaded: Engine | LoadedModel | RewardService,
    *,
    keys: KeyStore | str | Path | None,
    limits: ServeLimits | None = None,
    cors_origins: Sequence[str] = (),
    log_prompts: bool = False,
    name: str | None = None,
    batching: BatchingConfig | None = None,
    host: str = "127.0.0.1",
) -> FastAPI:
    """Build the OpenAI-compatible app around an engine (or a loaded model, wrapped in one).

    Args:
        engine_or_loaded: An :class:`~tuneforge.serve.engine.Engine`, or a
            :class:`~tuneforge.models.LoadedModel` to serve on its own, or a reward model
            (:class:`~tuneforge.serve.rewards.RewardService`), served on ``/v1/rewards`` only.
        keys: Accepted API keys (a :class:`~tuneforge.security.KeyStore` or a keys file), or ``None``
            for no authentication. Required, so that no caller turns authentication off by omission.
        limits: Rate, token and size limits; default :class:`~tuneforge.serve.limits.ServeLimits`.
        cors_origins: Origins allowed to call from a browser; none by default (no CORS headers at all).
        log_prompts: Put prompt and completion text in the access log.
        name: Served name of a ``LoadedModel`` (ignored for an engine).
        batching: Batching of a ``LoadedModel`` (ignored for an engine).
        host: The address the app will listen on: beyond loopback, ``/metrics`` needs an admin key.

    Returns:
        The FastAPI app; its lifespan stops the engine's worker thread on shutdown.

    Example:
        >>> app = create_app(load_engine("runs/support-bot"), keys="keys.json")  # doctest: +SKIP
    """
    rewards = engine_or_loaded if isinstance(engine_or_loaded, RewardService) else None
    engine: Engine | None
    if rewards is not None:
        engine = None
    elif isinstance(engine_or_loaded, Engine):
        engine = engine_or_loaded
    else:
        loaded = engine_or_loaded
        default = loaded.run.root if loaded.run else (loaded.adapter_path or loaded.base_path)
        engine = Engine(loaded, name=name or served_name(default), batching=batching)
    if isinstance(keys, (str, Path)):
        keys = KeyStore(keys)
    limits = limits or ServeLimits()
    metrics = ServeMetrics()
    if engine is not None:
        engine.batcher.listeners.append(metrics.batch_size.observe)

    refusals = RefusalAudit.for_keys_file(keys.path if keys is not None else None)  # 401/403/429, aggregated

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if engine is not None:
            engine.close()
        if refusals is not None:
            refusals.close()

    # No /docs or /openapi.json: an inference endpoint need not describe itself to the internet.
    app = FastAPI(title="tuneforge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    limiter = RateLimiter(limits.rate_per_minute) if limits.rate_per_minute else None
    app.state.serve = ServeContext(engine, limits, metrics, log_prompts, now(), rewards)
    app.include_router(router)
    app.include_router(rewards_router)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    # Metrics reveal traffic, model and key names: public on loopback only, else for admin keys.
    metrics_public = is_loopback(host)
    app.add_middleware(
        AuthGate, authenticator=Authenticator(keys, limiter),
        public=("/health", "/metrics") if metrics_public else ("/health",),
        admin=() if metrics_public else ("/metrics",), refusals=refusals,
    )
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    routes = [r.path for r in (*router.routes, *rewards_router.routes)]
    app.add_middleware(Observability, metrics=metrics, routes=routes, log_prompts=log_prompts)
    return app


def run(
    target: str | Path,
    *,
    adapters: Mapping[str, str | Path] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    keys_file: str | Path | None = None,
    no_auth: bool = False,
    limits: ServeLimits | None = None,
    batching: BatchingConfig | None = None,
    cors_origins: Sequence[str] = (),
    log_prompts: bool = False,
    name: str | None = None,
    trust_remote_code: bool = False,
) -> None:
    """Load ``target`` (+ adapters) and serve it until interrupted.

    Args:
        target: Anything :func:`tuneforge.models.load` accepts.
        adapters: Extra served names -> run directories or adapter folders over the same base.
        host: Address to listen on; ``no_auth`` needs a loopback one.
        port: Port to listen on.
        keys_file: Keys file (``tuneforge keys create``); required unless ``no_auth``.
        no_auth: Serve without keys (loopback hosts only).
        limits: Request limits.
        batching: Dynamic batching settings.
        cors_origins: Browser origins allowed to call the API.
        log_prompts: Put prompt and completion text in the access log.
        name: Served name of ``target``; default its run or folder name, or the alias.
        trust_remote_code: Run custom model code shipped with the model (``--trust-remote-code``).

    Raises:
        SecurityError: authentication settings are missing or unsafe.
        ConfigError: the port is invalid or taken, or the host unknown.
        ModelError: the model or an adapter cannot be loaded.
    """
    import uvicorn

    check_auth_setup(host, keys_file, no_auth)  # before the slow model load
    keys = KeyStore(keys_file) if keys_file is not None else None
    sock = bind(host, port)  # a bad or taken port fails now, not after the model load
    try:
        served = _load_served(target, adapters=adapters, name=name, batching=batching,
                              trust_remote_code=trust_remote_code)
    except BaseException:
        sock.close()
        raise
    app = create_app(served, keys=keys, limits=limits, cors_origins=cors_origins, log_prompts=log_prompts, host=host)
    access = logging.getLogger(ACCESS_LOGGER)
    if not access.handlers:  # one JSON object per line on stderr, not wrapped in a log format
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    bound = sock.getsockname()[1]
    print(f"serving {', '.join(served.names)} on http://{host}:{bound}/v1", file=sys.stderr)
    config = uvicorn.Config(app, host=host, port=bound, access_log=False, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def _load_served(target: str | Path, *, adapters: Mapping[str, str | Path] | None, name: str | None,
                 batching: BatchingConfig | None, trust_remote_code: bool) -> Engine | RewardService:
    """A generation engine, or a reward model when ``target`` is one (it answers ``/v1/rewards`` only)."""
    from tuneforge.errors import ConfigError
    from tuneforge.models.target import resolve_target

    if resolve_target(target).task != "reward":
        return load_engine(target, adapters=adapters, name=name, batching=batching, trust_remote_code=trust_remote_code)
    if adapters:
        raise ConfigError(f"--adapter: {target} is a reward model; extra adapters are served over generative models only")
    from tuneforge.eval.reward import load_reward_model

    return RewardService(load_reward_model(target, trust_remote_code=trust_remote_code), name or served_name(target))


@contextlib.contextmanager
def background_server(app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server in a background thread; yield its base URL.

    Args:
        app: The app to serve.
        host: Address to listen on.
        port: Port; 0 lets the OS pick a free one (no race between picking and binding).
        timeout_s: How long to wait for start-up and shutdown.

    Example:
        >>> with background_server(app) as url:  # doctest: +SKIP
        ...     openai.OpenAI(base_url=url + "/v1", api_key=key).models.list()
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning"))
    thread = threading.Thread(target=server.run, name="tuneforge-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
