"""Server-sent event streams: the runs list as it changes, and a run's metrics as they are appended.

Server-sent events rather than websockets: the browser's ``EventSource`` reconnects by
itself and sends back the last event id, which here is a byte offset into
``metrics.jsonl``, so a reconnect resumes without resending the file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tuneforge.rundir import RunDir
from tuneforge.ui.runs import pid_alive, list_runs, read_json, summarize
from tuneforge.ui.tail import read_new_records


def sse(data: Any, *, event: str | None = None, id: int | None = None) -> str:
    """One server-sent event; ``data`` as JSON on one line."""
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id is not None else "")
    return f"{head}data: {json.dumps(data, allow_nan=False, default=str)}\n\n"


async def runs_events(runs_dir: Path, disconnected: Callable[[], Any], interval_s: float = 1.0) -> AsyncIterator[str]:
    """The runs list now, then again whenever it changes (a comment every 15 s keeps proxies from closing it)."""
    last, quiet = None, 0.0
    while not await disconnected():
        runs = [r.to_dict() for r in await asyncio.to_thread(list_runs, runs_dir)]
        if runs != last:
            last, quiet = runs, 0.0
            yield sse(runs, event="runs")
        elif quiet >= 15:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(interval_s)
        quiet += interval_s


async def metrics_events(
    runs_dir: Path, run: Path, offset: int, disconnected: Callable[[], Any], interval_s: float = 0.5,
) -> AsyncIterator[str]:
    """New ``metrics.jsonl`` records from ``offset`` while the run is running (or a ``tuneforge eval`` of
    it is); ``end`` once it is not.

    Each event holds a batch of records and has the offset after them as its id. The evaluation's
    progress (``eval/progress.json``, the run's final one or a later ``tuneforge eval RUN``) comes as an
    ``eval`` event each time it changes.
    """
    path, progress, seen = run / "metrics.jsonl", RunDir(run).eval_progress, None
    while not await disconnected():
        # read before the files: no line is missed at the end
        running = summarize(runs_dir, run).state == "running" or evaluating(runs_dir, progress)
        while True:  # in batches of up to 1 MiB until the end of what is there
            records, offset = await asyncio.to_thread(read_new_records, path, offset)
            if not records:
                break
            yield sse(records, event="metrics", id=offset)
        stamp = _stamp(progress)
        if stamp is not None and stamp != seen:
            seen, done = stamp, read_json(runs_dir, progress)
            if isinstance(done, dict):
                yield sse(done, event="eval")
        if not running:
            yield sse({"state": summarize(runs_dir, run).state}, event="end", id=offset)
            return
        await asyncio.sleep(interval_s)


def evaluating(runs_dir: Path, progress: Path) -> bool:
    """Whether a ``tuneforge eval`` process (its pid in ``eval/progress.json``) is evaluating the run now."""
    done = read_json(runs_dir, progress) if progress.is_file() else None
    if not isinstance(done, dict) or not isinstance(done.get("pid"), int):
        return False  # written by the training process, whose own state says whether it runs
    return done.get("done", 0) < done.get("total", 0) and pid_alive(done["pid"])


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
