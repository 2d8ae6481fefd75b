"""Refused API requests (401, 403, 429) in the audit log, aggregated so an attack cannot flood it.

One audit entry per refused request would let anyone without a key grow the log (and
fsync the disk) as fast as they can send requests. Instead refusals are counted per
(status, error code, key name, client address) and written as one ``request.refused``
entry at most every ``window_s`` seconds (default 60), plus once when the server stops.
The first refusal after a quiet window is written at once, so a single failed attempt
shows up immediately. Entries never hold prompt text: refusals happen before the body is
read, and only the status, code, key *name* (never the key) and client address are kept.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tuneforge.security.audit import AuditLog, log_path, now_utc, read_hmac_key

DEFAULT_WINDOW_S = 60.0


class RefusalAudit:
    """Counts refused requests and writes them to an audit log in aggregated entries.

    Args:
        log: The audit log.
        window_s: At most one entry per this many seconds (plus one at :meth:`close`).
    """

    def __init__(self, log: AuditLog, window_s: float = DEFAULT_WINDOW_S):
        self.log = log
        self.window_s = window_s
        self._lock = threading.Lock()
        self._counts: Counter[tuple[int, str, str, str]] = Counter()
        self._since: str | None = None
        self._last_write = float("-inf")
        self.total = 0

    @classmethod
    def for_keys_file(cls, keys_path: str | Path | None, window_s: float = DEFAULT_WINDOW_S) -> "RefusalAudit | None":
        """The server's refusal audit: ``$TUNEFORGE_AUDIT_LOG``, else beside the keys file; ``None`` with neither."""
        import os

        from tuneforge.security.audit import LOG_ENV

        if keys_path is None and not os.environ.get(LOG_ENV):
            return None
        return cls(AuditLog(log_path(Path(keys_path or ".").parent), read_hmac_key()), window_s)

    def record(self, status: int, code: str, client: str, key_name: str | None = None) -> None:
        """Count one refused request; write the counts when the window has passed."""
        with self._lock:
            self._counts[(status, code, key_name or "-", client)] += 1
            self.total += 1
            self._since = self._since or now_utc()
            if time.monotonic() - self._last_write < self.window_s:
                return
            pending = self._take()
        self._write(pending)

    def close(self) -> None:
        """Write what is still counted (call on server shutdown)."""
        with self._lock:
            pending = self._take()
        self._write(pending)

    def _take(self) -> dict[str, Any] | None:
        if not self._counts:
            return None
        counts = [{"status": s, "code": c, "key": k, "client": a, "count": n}
                  for (s, c, k, a), n in sorted(self._counts.items())]
        pending = {"since": self._since, "until": now_utc(), "total": sum(self._counts.values()), "counts": counts}
        self._counts.clear()
        self._since = None
        self._last_write = time.monotonic()
        return pending

    def _write(self, pending: dict[str, Any] | None) -> None:
        if pending is not None:
            self.log.append("request.refused", status="refused", details=pending)
