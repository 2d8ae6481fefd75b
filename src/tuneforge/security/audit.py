"""The audit trail: an append-only, hash-chained JSON-lines log of who did what, with which inputs.

One entry per line::

    {"seq": 3, "time": "2026-01-01T10:00:00.123456+00:00", "actor": {"user": "ana", "host": "gpu1", "pid": 4242},
     "action": "train", "status": "started", "details": {...}, "prev_hash": "<hash of entry 2>",
     "hash": "<sha256>", "hmac": "<optional>"}

``hash`` is the SHA-256 of the entry's canonical JSON (sorted keys, no spaces)
without ``hash`` and ``hmac``; ``prev_hash`` chains it to the entry before
(64 zeros for the first). Editing an entry breaks its hash; removing or
reordering entries breaks ``seq`` and ``prev_hash``. Someone who can write the
file can still rewrite it *entirely* and recompute every hash; two things stop
that: an HMAC (``TUNEFORGE_AUDIT_HMAC_KEY`` or ``TUNEFORGE_AUDIT_HMAC_KEY_FILE``,
a key the writer of the log does not keep beside it) and an anchor, the hash of
an entry recorded elsewhere (``tuneforge audit verify --expect-last HASH``).
Cutting entries off the *end* of the log leaves a valid chain: only an anchor
detects it.

Where the log is: ``$TUNEFORGE_AUDIT_LOG`` when set (one log for everything,
what a shared machine should use), else ``audit.jsonl`` in a default folder
chosen by the caller: the runs folder (``out_dir``) for training, the keys
file's folder for key changes and a server's refused requests.

Appends take an exclusive OS file lock (``filelock``, a ``.lock`` file beside the
log) around read-last-entry + write + fsync, so concurrent writers from several
processes extend one chain instead of forking it.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac as hmac_lib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuneforge.errors import SecurityError

LOG_ENV = "TUNEFORGE_AUDIT_LOG"
HMAC_KEY_ENV = "TUNEFORGE_AUDIT_HMAC_KEY"
HMAC_KEY_FILE_ENV = "TUNEFORGE_AUDIT_HMAC_KEY_FILE"
LOG_NAME = "audit.jsonl"
GENESIS = "0" * 64
_LOCK_TIMEOUT_S = 30

# Statuses an entry can carry. A started action ends with exactly one of success/error/killed.
STARTED, SUCCESS, ERROR, KILLED = "started", "success", "error", "killed"


class AuditError(SecurityError):
    """The audit log cannot be read or written (names the file and the entry)."""


def log_path(default_dir: str | Path) -> Path:
    """Where the audit log is: ``$TUNEFORGE_AUDIT_LOG``, else ``default_dir/audit.jsonl``.

    The stages of a multi-stage run live in ``RUNS/NAME/stages/``: their entries go to the log
    beside the runs (``RUNS/audit.jsonl``), with the chain's own, not to one inside the chain.
    """
    env = os.environ.get(LOG_ENV)
    if env:
        return Path(env).expanduser()
    folder = Path(default_dir)
    if folder.name == "stages" and (folder.parent / "config.yaml").is_file():
        folder = folder.parent.parent
    return folder / LOG_NAME


def read_hmac_key(key_file: str | Path | None = None) -> bytes | None:
    """The HMAC key: from ``key_file``, else ``$TUNEFORGE_AUDIT_HMAC_KEY_FILE``, else ``$TUNEFORGE_AUDIT_HMAC_KEY``.

    Raises:
        AuditError: a key file is named but cannot be read, or is empty.
    """
    key_file = key_file or os.environ.get(HMAC_KEY_FILE_ENV)
    if key_file:
        try:
            key = Path(key_file).expanduser().read_bytes().strip()
        except OSError as exc:
            raise AuditError(f"cannot read the audit HMAC key file {key_file}: {exc.strerror or exc}") from exc
        if not key:
            raise AuditError(f"the audit HMAC key file {key_file} is empty")
        return key
    env = os.environ.get(HMAC_KEY_ENV)
    return env.encode() if env else None


def current_actor(**extra: Any) -> dict[str, Any]:
    """Who is acting: the OS user, host and process id (plus e.g. ``api_key`` on the server)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers): the uid is still a fact
        user = f"uid:{os.getuid()}"
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid(), **extra}


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes that are hashed: the entry without ``hash``/``hmac``, sorted keys, no whitespace."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "hmac")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def entry_hmac(entry: dict[str, Any], key: bytes) -> str:
    return hmac_lib.new(key, canonical(entry), hashlib.sha256).hexdigest()


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class AuditLog:
    """Append entries to one hash-chained log file and read them back.

    Args:
        path: The JSON-lines file (created with mode 0600 on the first append).
        hmac_key: When given, every appended entry also carries an HMAC-SHA256 under this key.

    Example:
        >>> log = AuditLog("runs/audit.jsonl")  # doctest: +SKIP
        >>> log.append("key.create", details={"name": "ci"})["seq"]  # doctest: +SKIP
        1
    """

    def __init__(self, path: str | Path, hmac_key: bytes | None = None):
        self.path = Path(path)
        self.hmac_key = hmac_key

    def append(self, action: str, *, status: str = SUCCESS, details: dict[str, Any] | None = None,
               actor: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one entry, chained to the current last entry; returns it (with ``seq`` and ``hash``).

        Raises:
            AuditError: the log cannot be written, or its last line is damaged (the chain cannot continue).
        """
        from filelock import FileLock, Timeout

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock", timeout=_LOCK_TIMEOUT_S):
                last = self._last_entry()
                entry: dict[str, Any] = {
                    "seq": last["seq"] + 1 if last else 1,
                    "time": now_utc(),
                    "actor": actor or current_actor(),
                    "action": action,
                    "status": status,
                    "details": details or {},
                    "prev_hash": last["hash"] if last else GENESIS,
                }
                entry["hash"] = entry_hash(entry)
                if self.hmac_key:
                    entry["hmac"] = entry_hmac(entry, self.hmac_key)
                line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8")
                # One write of the whole line on an O_APPEND descriptor, then fsync: an entry is
                # either fully on disk or absent, never interleaved with another writer's.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except Timeout as exc:
            raise AuditError(f"audit log {self.path}: could not lock it within {_LOCK_TIMEOUT_S}s") from exc
        except OSError as exc:
            raise AuditError(f"cannot write the audit log {self.path}: {exc.strerror or exc}") from exc
        return entry

    def _last_entry(self) -> dict[str, Any] | None:
        """The last entry, read backwards from the end (the log can be long; entries are not)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            buf = b""
            pos = end
            while pos > 0:
                step = min(1 << 16, pos)
                pos -= step
                f.seek(pos)
                buf = f.read(step) + buf
                if buf.count(b"\n") >= 2 or pos == 0:
                    break
        if not buf.endswith(b"\n"):
            raise AuditError(f"audit log {self.path}: the last line is incomplete; check it with: tuneforge audit verify {self.path}")
        tail = buf[:-1].rsplit(b"\n", 1)[-1]
        try:
            entry = json.loads(tail)
            entry["seq"], entry["hash"]  # noqa: B018 - both are needed to chain the next entry
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(
                f"audit log {self.path}: the last entry is damaged, so no entry can be chained to it; "
                f"check it with: tuneforge audit verify {self.path}"
            ) from exc
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every entry in file order (no checking: see :func:`verify`).

        Raises:
            AuditError: the file is missing, or a line is not a JSON object (names the line).
        """
        return [entry for _, entry in _read_lines(self.path)]


def record(default_dir: str | Path, action: str, details: dict[str, Any], *, status: str = SUCCESS,
           actor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append one finished action to the log found by :func:`log_path` (HMAC'd when a key is set)."""
    return AuditLog(log_path(default_dir), read_hmac_key()).append(action, status=status, details=details, actor=actor)


def _parse_lines(path: Path) -> list[tuple[int, dict[str, Any] | None, str]]:
    """``(line number, entry or None, JSON error)`` for every non-blank line of the log."""
    if not path.is_file():
        raise AuditError(f"audit log not found: {path}")
    rows: list[tuple[int, dict[str, Any] | None, str]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                rows.append((number, entry if isinstance(entry, dict) else None, "" if isinstance(entry, dict) else "not an object"))
            except ValueError as exc:
                rows.append((number, None, exc.msg))
    return rows


def _read_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = _parse_lines(path)
    bad = next(((n, err) for n, e, err in rows if e is None), None)
    if bad is not None:
        raise AuditError(f"{path}:{bad[0]}: not a valid JSON object ({bad[1]}); the entry was edited or cut")
    return [(n, e) for n, e, _ in rows if e is not None]


@dataclass
class VerifyResult:
    """What :func:`verify` found.

    Attributes:
        ok: The chain is intact (and every HMAC matched, and the anchor was found, when asked).
        entries: Number of entries read.
        last_hash: Hash of the last entry: record it elsewhere and pass it as an anchor later.
        bad_seq: ``seq`` of the first bad entry (as written in it), when not ok.
        bad_line: Its line in the file.
        problem: What is wrong, in words.
        hmac_checked: Whether HMACs were checked (a key was given).
    """

    ok: bool
    entries: int
    last_hash: str | None = None
    bad_seq: int | None = None
    bad_line: int | None = None
    problem: str = ""
    hmac_checked: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            how = "hashes and HMACs" if self.hmac_checked else "hashes (no HMAC key given)"
            return f"intact: {self.entries} entries, {how} check out; last entry hash {self.last_hash}"
        where = f"entry seq {self.bad_seq} (line {self.bad_line})" if self.bad_line else "the log"
        return f"BROKEN at {where}: {self.problem}"


def verify(path: str | Path, hmac_key: bytes | None = None, expect_last: str | None = None) -> VerifyResult:
    """Check the chain of an audit log and name the first entry that was edited, removed or reordered.

    Args:
        path: The log.
        hmac_key: Check every entry's HMAC under this key (entries without one fail).
        expect_last: An anchor: the hash (or a prefix of at least 12 hex digits) of an entry recorded
            earlier. It must still be in the log; later entries may follow. Without an anchor, entries
            cut off the end of the log cannot be detected.

    Returns:
        A :class:`VerifyResult`; it is not ok at the first problem found.

    Raises:
        AuditError: the file does not exist.
    """
    path = Path(path)
    if expect_last is not None and len(expect_last) < 12:
        raise AuditError(f"--expect-last {expect_last!r}: give at least 12 hex digits of the entry hash")
    rows = _parse_lines(path)
    result = VerifyResult(ok=True, entries=len(rows), hmac_checked=hmac_key is not None)
    prev_hash, expected_seq = GENESIS, 1
    for i, (number, entry, error) in enumerate(rows):
        if entry is None:
            return _broken(result, None, number, f"line {number} is not a JSON object ({error}): edited or cut")
        seq = entry.get("seq")
        if not isinstance(seq, int) or not isinstance(entry.get("hash"), str):
            return _broken(result, seq, number, "no integer 'seq' or no 'hash': edited")
        if entry_hash(entry) != entry["hash"]:
            return _broken(result, seq, number, "edited: its content does not match its hash")
        if seq != expected_seq:
            later = next((n for n, e, _ in rows[i + 1:] if e is not None and e.get("seq") == expected_seq), None)
            if later is not None:
                what = f"reordered: seq {expected_seq} was expected here but is at line {later}"
            elif seq > expected_seq:
                missing = f"seq {expected_seq}" if seq == expected_seq + 1 else f"seqs {expected_seq}-{seq - 1}"
                what = f"entries removed before it ({missing} missing)"
            else:
                what = f"out of order or duplicated: seq {expected_seq} was expected here"
            return _broken(result, seq, number, what)
        if entry.get("prev_hash") != prev_hash:
            return _broken(result, seq, number, "the entry before it was replaced or removed: 'prev_hash' does not match")
        if hmac_key is not None:
            mac = entry.get("hmac")
            if not isinstance(mac, str):
                return _broken(result, seq, number, "has no HMAC (written without the key, or the HMAC was stripped)")
            if not hmac_lib.compare_digest(mac, entry_hmac(entry, hmac_key)):
                return _broken(result, seq, number, "HMAC does not match: wrong key, or the entry was forged")
        prev_hash, expected_seq = entry["hash"], seq + 1
    result.last_hash = prev_hash if rows else None
    if hmac_key is None and any(e is not None and "hmac" in e for _, e, _ in rows):
        result.notes.append("entries carry HMACs that were not checked: pass --hmac-key-file")
    if expect_last is not None:
        found = [e for _, e, _ in rows if e is not None and str(e.get("hash", "")).startswith(expect_last.lower())]
        if not found:
            result.ok = False
            result.problem = (
                f"the anchor entry {expect_last} is not in the log: entries were cut off its end, or the log was rewritten"
            )
        else:
            after = result.entries - found[0]["seq"]
            result.notes.append(f"anchor found at seq {found[0]['seq']}; {after} entries were added after it")
    return result


def _broken(result: VerifyResult, seq: Any, line: int, problem: str) -> VerifyResult:
    result.ok, result.bad_seq, result.bad_line, result.problem = False, seq, line, problem
    return result


class Terminated(SystemExit):
    """Raised by the SIGTERM handler :func:`audited` installs, so the action is recorded as killed."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@dataclass
class AuditedAction:
    """A started action: its entry, and what the caller reports before it ends."""

    log: AuditLog
    entry: dict[str, Any]
    artifacts: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The started entry's hash: the id model cards and the ended entry refer to."""
        return self.entry["hash"]


@contextmanager
def audited(log: AuditLog, action: str, details: dict[str, Any], actor: dict[str, Any] | None = None) -> Iterator[AuditedAction]:
    """Record an action as ``started``, then as ``success``, ``error`` or ``killed`` when the block ends.

    SIGTERM is turned into :class:`Terminated` while the block runs (main thread only), so a
    ``kill`` is recorded as ``killed``; so is Ctrl-C. SIGKILL cannot be caught: the action then
    stays ``started`` without an end, which ``tuneforge audit show`` reports as unfinished.

    Example:
        >>> with audited(AuditLog("runs/audit.jsonl"), "train", {"run": "demo"}) as act:  # doctest: +SKIP
        ...     act.artifacts = {"adapter": "..."}
    """
    begun = AuditedAction(log, log.append(action, status=STARTED, details=details, actor=actor))
    restore = None
    if threading.current_thread() is threading.main_thread():
        def _on_term(signum: int, frame: Any) -> None:
            raise Terminated()

        restore = signal.signal(signal.SIGTERM, _on_term)
    status, error = SUCCESS, None
    try:
        yield begun
    except (Terminated, KeyboardInterrupt) as exc:
        status, error = KILLED, type(exc).__name__
        raise
    except BaseException as exc:
        status, error = ERROR, f"{type(exc).__name__}: {str(exc)[:500]}"
        raise
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
        end = {"started": begun.id, "started_seq": begun.entry["seq"], "artifacts": begun.artifacts, **begun.outcome}
        for key in ("run", "run_dir"):
            if key in details:
                end[key] = details[key]
        if error is not None:
            end["error"] = error
        try:
            log.append(action, status=status, details=end, actor=actor)
        except AuditError:
            if error is None:
                raise
            # The action already failed: report its own error, not the audit log's (the start entry
            # stays without an end, which `audit show` reports as unfinished).
            logging.getLogger("tuneforge.security.audit").error("could not record the end of %s in %s", action, log.path)
