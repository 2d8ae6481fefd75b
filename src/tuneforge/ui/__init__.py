"""The web dashboard behind ``tuneforge ui``: runs, live curves, eval evidence and predictions in a browser.

Example:
    >>> from tuneforge.ui import create_app
    >>> app = create_app("runs", keys=None)  # doctest: +SKIP
"""

from tuneforge.ui.app import create_app, run

__all__ = ["create_app", "run"]
