"""The web dashboard behind ``tuneforge ui``: runs, live curves, eval evidence and predictions in a browser.

Example:
    >>> from tuneforge.ui import create_app
    >>> app = create_app("runs", keys=None)  # doctest: +SKIP
"""

from tuneforge.extras import require_extra

# The dashboard runs on serve's HTTP stack, an optional extra: name it rather than fail deep inside an import.
require_extra("serve", "fastapi", "uvicorn", "starlette", "jinja2")

from tuneforge.ui.app import create_app, run  # noqa: E402

__all__ = ["create_app", "run"]
