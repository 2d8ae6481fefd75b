"""Data files uploaded on the launch page: size-capped, stored under ``RUNS/_uploads/`` by generated name, validated.

Nothing the browser sends becomes part of a path: the file is stored as
``<random hex><extension>``, the extension taken from a fixed list, and later requests
name an upload only by that generated name (checked against its pattern). The file is
read by the loader ``tuneforge validate`` and training use (format detection, row
checks), and a file that fails is deleted, its problem reported with line and field
under the name the user gave.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tuneforge.errors import SecurityError, TuneforgeError
from tuneforge.ui.paths import confined

UPLOADS_DIR = "_uploads"
EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
MAX_UPLOAD_BYTES = 256 << 20
_STORED = re.compile(r"[0-9a-f]{32}\.(?:jsonl|json|csv|parquet)")


class UploadTooLarge(TuneforgeError):
    """The upload is over the size limit (nothing is kept)."""


@dataclass(frozen=True)
class Uploaded:
    """A stored upload and what the loader found in it, or the problem that got it deleted."""

    shown_name: str
    stored: str | None = None
    path: Path | None = None
    rows: int = 0
    format: str = ""
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def extension(filename: str) -> str:
    """The allowed extension of ``filename`` (lower case).

    Raises:
        TuneforgeError: not one of :data:`EXTENSIONS`.

    Example:
        >>> extension("Tickets.JSONL")
        '.jsonl'
    """
    suffix = Path(filename.replace("\\", "/")).suffix.lower()
    if suffix not in EXTENSIONS:
        raise TuneforgeError(f"{filename!r}: upload a {', '.join(EXTENSIONS)} file")
    return suffix


def upload_path(runs_dir: Path, stored: str) -> Path:
    """The path of upload ``stored`` (a generated name), refusing any other name.

    Raises:
        SecurityError: ``stored`` is not a name this module generated, or leads out of the runs folder.
    """
    if not _STORED.fullmatch(stored):
        raise SecurityError(f"upload {stored!r}: not the name of an upload")
    return confined(runs_dir, Path(runs_dir) / UPLOADS_DIR / stored)


async def store(runs_dir: Path, filename: str, chunks: AsyncIterator[bytes], limit: int = MAX_UPLOAD_BYTES) -> Uploaded:
    """Write the streamed body to a new file under ``RUNS/_uploads/`` (0600), then validate it.

    Raises:
        TuneforgeError: the extension is not allowed (nothing is written).
        UploadTooLarge: more than ``limit`` bytes arrived (the partial file is deleted).
    """
    import asyncio

    suffix = extension(filename)
    folder = Path(runs_dir) / UPLOADS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stored = secrets.token_hex(16) + suffix
    path = upload_path(runs_dir, stored)
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(f"{filename!r} is over the upload limit of {limit} bytes")
                f.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    checked = await asyncio.to_thread(check_upload, path, filename)
    if not checked.ok:
        path.unlink(missing_ok=True)
        return checked
    return Uploaded(filename, stored, path, checked.rows, checked.format)


def check_upload(path: Path, shown_name: str) -> Uploaded:
    """Read ``path`` as training reads a data source (format detection, every row checked, first bad row
    stops it); problems name ``shown_name`` with the line and field."""
    from tuneforge.data import load_examples
    from tuneforge.data.report import DataReport

    report = DataReport()
    try:
        examples = load_examples(str(path), on_bad_rows="error", report=report)
    except TuneforgeError as exc:
        return Uploaded(shown_name, problem=str(exc).replace(str(path), shown_name))
    return Uploaded(shown_name, rows=len(examples), format=report.source(str(path)).format)


def with_training_data(text: str, path: Path) -> str:
    """The config ``text`` with ``data.train`` set to ``path`` (other ``data`` settings kept).

    The YAML is rewritten, so comments in it are lost; an empty config becomes a skeleton to fill in.

    Raises:
        TuneforgeError: the text is not a YAML mapping (with its ``data`` a mapping).
    """
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise TuneforgeError(f"the config is not valid YAML, so the data source cannot be set in it: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data", {}), dict):
        raise TuneforgeError("the config must be a mapping with a `data:` mapping to set the data source in it")
    if not raw:
        raw = {"name": "my-run", "model": "smollm2-135m-instruct", "method": {"name": "lora"}}
    data = raw.get("data") or {}
    raw["data"] = {**data, "train": str(path)}
    return yaml.safe_dump(raw, sort_keys=False)
