"""``tuneforge serve``: an OpenAI-compatible HTTP server over a model, a run, or adapters.

Limit and batching options default to ``None``, meaning "the server's default":
the defaults live once, in :class:`tuneforge.serve.ServeLimits` and
:class:`tuneforge.serve.BatchingConfig`, which this module cannot import at
the top without slowing ``tuneforge --help`` (they pull in torch).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli.options import trust_remote_code_option, warn_trust_remote_code
from tuneforge.errors import ConfigError


class Batching(str, Enum):
    """How requests share the model (see :class:`tuneforge.serve.BatchingConfig`)."""

    continuous = "continuous"
    static = "static"


def _adapters(specs: list[str]) -> dict[str, str]:
    adapters: dict[str, str] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep or not name or not target:
            raise ConfigError(f"--adapter {spec!r}: expected NAME=RUN_OR_ADAPTER_DIR")
        if name in adapters:
            raise ConfigError(f"--adapter {name}: given twice")
        adapters[name] = target
    return adapters


def _given(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}


def serve(
    target: str = typer.Argument(..., help="A run directory, adapter folder, model folder, .gguf file or alias."),
    adapter: list[str] = typer.Option(
        [], "--adapter", help="Also serve NAME=RUN_OR_ADAPTER_DIR over the same base (repeatable)."
    ),
    name: Optional[str] = typer.Option(None, help="Name to serve TARGET under; default its run/folder name or alias."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on (1-65535)."),
    api_keys_file: Optional[Path] = typer.Option(
        None, "--api-keys-file", help="Keys file from `tuneforge keys create`; required unless --no-auth."
    ),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without API keys (only on a loopback host)."),
    rate_limit: Optional[str] = typer.Option(None, help="Requests per key, e.g. 60/min (also N/s, N/h); default none."),
    max_tokens_limit: Optional[int] = typer.Option(None, min=1, help="Largest max_tokens a request may ask for."),
    default_max_tokens: Optional[int] = typer.Option(None, min=1, help="max_tokens when a request gives none."),
    max_prompt_tokens: Optional[int] = typer.Option(None, min=1, help="Longest prompt in tokens (after the template)."),
    max_body_bytes: Optional[int] = typer.Option(None, min=1, help="Largest request body in bytes (413 above)."),
    body_timeout: Optional[float] = typer.Option(
        None, min=0.1, help="Seconds a client may take to send its request body (408 after); default 30."
    ),
    max_n: Optional[int] = typer.Option(None, min=1, help="Most choices (n x prompts) per request."),
    max_batch_size: Optional[int] = typer.Option(None, min=1, help="Rows generated together; 1 turns batching off."),
    batch_window_ms: Optional[float] = typer.Option(None, min=0, help="How long a request waits for others to join."),
    batching_mode: Optional[Batching] = typer.Option(
        None, "--batching", help="continuous: requests join the running batch at the next token (the default for "
        "models with full attention in every layer); static: a batch is one generate call that later requests "
        "wait for (the default for models with sliding-window layers).",
    ),
    cors_origin: list[str] = typer.Option(
        [], "--cors-origin", help="Browser origin allowed to call the API (repeatable); none by default."
    ),
    log_prompts: bool = typer.Option(False, "--log-prompts", help="Put prompt and completion text in the access log."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> None:
    """Serve a model over an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models)."""
    from tuneforge.serve import BatchingConfig, ServeLimits, parse_rate_limit, run

    limits = ServeLimits(**_given(
        rate_per_minute=parse_rate_limit(rate_limit) if rate_limit else None, max_tokens=max_tokens_limit,
        default_max_tokens=default_max_tokens, max_prompt_tokens=max_prompt_tokens, max_body_bytes=max_body_bytes,
        max_n=max_n, body_timeout_s=body_timeout,
    ))
    continuous = None if batching_mode is None else batching_mode is Batching.continuous
    batching = BatchingConfig(**_given(max_batch_size=max_batch_size, window_ms=batch_window_ms, continuous=continuous))
    warn_trust_remote_code(trust_remote_code, target)
    run(
        target, adapters=_adapters(adapter), host=host, port=port, keys_file=api_keys_file, no_auth=no_auth,
        limits=limits, batching=batching, cors_origins=cors_origin, log_prompts=log_prompts, name=name,
        trust_remote_code=trust_remote_code,
    )
