"""Paths the dashboard may read: only inside the runs folder, named by plain run names.

A browser sends run names in URLs, so a name is untrusted input: ``..``, absolute
paths, separators and symlinks that lead out of the runs folder are refused here,
in one place, before any file is opened.
"""

from __future__ import annotations

import re
from pathlib import Path

from tuneforge.errors import SecurityError

# One path component of ordinary characters: no separators, no leading dot (so no "." or "..").
_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


def run_path(runs_dir: Path, name: str) -> Path:
    """The folder of run ``name`` under ``runs_dir``, refusing anything that leaves it.

    Raises:
        SecurityError: ``name`` is not a plain folder name, or it resolves (through a symlink) outside ``runs_dir``.

    Example:
        >>> run_path(Path("runs"), "quickstart")
        PosixPath('runs/quickstart')
    """
    if not _RUN_NAME.fullmatch(name):
        raise SecurityError(f"run name {name!r}: expected a folder name of letters, digits, '.', '_' or '-'")
    return confined(runs_dir, Path(runs_dir) / name)


def confined(runs_dir: Path, path: Path) -> Path:
    """``path`` if it resolves (following symlinks) inside ``runs_dir``, else raise.

    Raises:
        SecurityError: the path resolves outside ``runs_dir``.
    """
    root = Path(runs_dir).resolve()
    if not Path(path).resolve().is_relative_to(root):
        raise SecurityError(f"{path}: leads outside the runs folder {runs_dir}")
    return Path(path)
