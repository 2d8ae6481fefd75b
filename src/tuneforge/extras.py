"""Optional extras: the parts of tuneforge whose dependencies a core install may leave out.

``pip install tuneforge`` installs what training, evaluation and export need;
``tuneforge[serve]`` adds the HTTP stack (FastAPI, uvicorn, Prometheus),
``tuneforge[plots]`` matplotlib for the report's images, ``tuneforge[interop]``
llama.cpp and lm-evaluation-harness, ``tuneforge[search]`` optuna for ``tuneforge tune``. ``make install`` installs them all.
"""

from __future__ import annotations

import importlib.util

from tuneforge.errors import TuneforgeError


class MissingExtraError(TuneforgeError):
    """A feature needs an optional extra that is not installed."""


def missing_modules(*modules: str) -> list[str]:
    """The modules of ``modules`` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require_extra(extra: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra to install when any of ``modules`` is missing."""
    missing = missing_modules(*modules)
    if missing:
        raise MissingExtraError(
            f"this needs the '{extra}' extra ({', '.join(missing)} not installed): pip install 'tuneforge[{extra}]'"
        )
