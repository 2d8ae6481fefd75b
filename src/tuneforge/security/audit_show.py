"""Read an audit log as actions: one row per action, its start joined with its end.

``tuneforge audit show`` prints these rows; they are plain data, so a notebook can filter them too.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.security.audit import STARTED, AuditLog


@dataclass(frozen=True)
class ActionRow:
    """One action as ``audit show`` lists it."""

    seq: int
    time: str
    who: str
    action: str
    run: str
    status: str
    data: dict[str, str] = field(default_factory=dict)
    model: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _who(actor: dict[str, Any]) -> str:
    who = f"{actor.get('user', '?')}@{actor.get('host', '?')}"
    return f"{actor['api_key']} (key) via {who}" if actor.get("api_key") else who


def _unfinished(actor: dict[str, Any]) -> str:
    """A start without an end: still running, or killed (SIGKILL, power loss) before it could say so."""
    pid = actor.get("pid")
    if actor.get("host") == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "killed (unfinished, its process is gone)"
        except PermissionError:
            pass  # the process exists under another user
        else:
            return "running (unfinished)"
    return "unfinished (running or killed)"


def _subject(details: dict[str, Any]) -> str:
    """What an action was about: a run's name, a key's name, or how many requests were refused."""
    if "run" in details:
        return str(details["run"])
    if "name" in details:
        return f"key {details['name']}"
    if "total" in details:
        return f"{details['total']} requests"
    return ""


def action_rows(path: str | Path, run: str | None = None) -> list[ActionRow]:
    """The actions in the log at ``path``, oldest first; ``run`` keeps only that run's.

    Raises:
        AuditError: the log is missing or a line is not JSON.
    """
    entries = AuditLog(path).entries()
    ends = {e["details"]["started"]: e for e in entries if isinstance(e.get("details"), dict) and e["details"].get("started")}
    rows = []
    for e in entries:
        details = e.get("details") or {}
        if details.get("started"):
            continue  # shown with its start
        end = ends.get(e.get("hash"))
        if e.get("status") == STARTED:
            status = end["status"] if end else _unfinished(e.get("actor") or {})
            if end and end.get("details", {}).get("error"):
                status += f": {end['details']['error']}"
        else:
            status = str(e.get("status", "?"))
        base = details.get("base_model") or {}
        rows.append(ActionRow(
            seq=e.get("seq", 0), time=str(e.get("time", "")), who=_who(e.get("actor") or {}),
            action=str(e.get("action", "?")), run=_subject(details), status=status,
            data=dict(details.get("data_sha256") or {}), model=str(base.get("sha256") or ""),
            details={**details, **({"end": end["details"]} if end else {})},
        ))
    return [r for r in rows if run is None or r.run == run]
