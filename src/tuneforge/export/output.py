"""Output folders of merge and export: what may be replaced, and writing them atomically.

A folder tuneforge writes carries a small ``.tuneforge`` marker file. An
existing non-empty folder without it (someone's model, notes, a home
directory) is never replaced unless the user says ``--overwrite``; folders
holding the source weights or the base model are never replaced at all.
Everything is written into a hidden sibling folder first and renamed into
place at the end, so a crash or a full disk never leaves a folder that looks
like a complete model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from tuneforge.errors import ExportError

MARKER = ".tuneforge"
# Merged folders written before the marker existed carry this provenance file instead.
_LEGACY_MARKERS = ("tuneforge_merge.json",)


def written_by_tuneforge(folder: Path) -> bool:
    """Whether ``folder`` was written by a tuneforge merge or export (its marker file is there)."""
    return any((folder / name).is_file() for name in (MARKER, *_LEGACY_MARKERS))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(
    output: str | Path, *, protected: Iterable[str | Path] = (), not_above: Iterable[str | Path] = (),
    overwrite: bool = False,
) -> Path:
    """Refuse an output folder that cannot or must not be written; return it resolved.

    Args:
        output: The folder to (re)write.
        protected: Folders the output may be neither inside nor above (the source weights, the base model).
        not_above: Folders the output may be inside but not be or hold (a run directory: ``RUN/merged`` is fine).
        overwrite: Replace an existing folder that tuneforge did not write.

    Raises:
        ExportError: the output is a file or under one, inside or above a protected folder, an existing
            folder tuneforge did not write (without ``overwrite``), or its parent is not writable.
    """
    out = Path(output).expanduser().resolve()
    for keep in protected:
        keep = Path(keep).expanduser().resolve()
        if _inside(out, keep) or _inside(keep, out):
            raise ExportError(
                f"output {output} would overwrite {keep} (the source weights or base model); choose another folder"
            )
    for keep in not_above:
        keep = Path(keep).expanduser().resolve()
        if _inside(keep, out):
            raise ExportError(f"output {output} would overwrite {keep}; choose another folder")
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {output} is a file, not a folder; give a folder path (--output DIR)")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"output {output}: {parent} is a file, so no folder can be made under it")
    if out.is_dir() and any(out.iterdir()) and not written_by_tuneforge(out) and not overwrite:
        raise ExportError(
            f"output {output} exists and was not written by tuneforge (no {MARKER} file); "
            "choose an empty or new folder, or pass --overwrite to replace it"
        )
    if not os.access(parent, os.W_OK | os.X_OK):  # the output is created (or swapped) in its parent
        raise ExportError(f"output {output}: no permission to write in {parent}")
    return out


@contextlib.contextmanager
def atomic_folder(output: str | Path, what: str) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``output`` to write into; on success mark it and swap it in.

    Call :func:`check_output` first. On an exception the partial folder is removed and
    ``output`` is left as it was.

    Args:
        output: The final folder.
        what: What is written (``"merge"``, ``"export hf"``...), recorded in the marker.

    Raises:
        ExportError: the folder cannot be created or renamed (permissions, read-only file system).
    """
    out = Path(output)
    tag = uuid.uuid4().hex[:8]
    # Not tempfile.mkdtemp: its 0700 mode would stay on the renamed folder and lock out a server's user.
    tmp = out.parent / f".{out.name}.{tag}.partial"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise ExportError(f"cannot create output {out}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        stamp = {"written_by": "tuneforge", "what": what, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (tmp / MARKER).write_text(json.dumps(stamp) + "\n")
        old = out.parent / f".{out.name}.{tag}.old"
        if out.exists():
            out.rename(old)  # two renames: the old folder stays whole until the new one is in place
        try:
            tmp.rename(out)
        except OSError:
            if old.exists():
                old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:  # permissions, read-only or full disk, name too long...: say where, not a traceback
        raise ExportError(f"cannot write output {out}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
