"""Serving: an OpenAI-compatible HTTP API over a tuned model and its adapters.

``create_app`` builds the FastAPI app (keys, limits, dynamic batching,
Prometheus metrics); ``run`` loads a model and serves it with uvicorn
(``tuneforge serve``); ``background_server`` runs an app in a thread.

Example:
    >>> from tuneforge.serve import background_server, create_app, load_engine
    >>> app = create_app(load_engine("runs/support-bot"), keys="keys.json")  # doctest: +SKIP
"""

from tuneforge.extras import require_extra

# The HTTP stack is an optional extra: say which one to install rather than fail on an import deep inside.
require_extra("serve", "fastapi", "uvicorn", "prometheus_client", "starlette")

from tuneforge.serve.app import background_server, create_app, run  # noqa: E402
from tuneforge.serve.batcher import BatchingConfig, GenerationHandle, GenerationRequest, SamplingParams
from tuneforge.serve.engine import Engine, load_engine, served_name
from tuneforge.serve.limits import ServeLimits, parse_rate_limit

__all__ = [
    "BatchingConfig", "Engine", "GenerationHandle", "GenerationRequest", "SamplingParams", "ServeLimits",
    "background_server", "create_app", "load_engine", "parse_rate_limit", "run", "served_name",
]
