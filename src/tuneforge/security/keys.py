"""API keys for ``tuneforge serve``: create, list, revoke, and verify them against a keys file.

A key is shown once, when it is created (``tf-`` + 43 URL-safe characters,
256 random bits); the keys file only holds its SHA-256 digest, its name,
when it was made, and its scopes::

    {"version": 1, "keys": [{"name": "ci", "sha256": "<hex>", "created": "2026-01-01T00:00:00+00:00",
                             "models": ["support-bot"], "expires": "2026-02-01T00:00:00+00:00", "admin": false}]}

Scopes: ``models`` lists the served names (models and adapters) the key may
call, ``null`` meaning all of them; ``expires`` ends the key (ISO 8601, UTC);
``admin`` lets it read ``/metrics`` when the server listens beyond loopback.
Records written before scopes existed have none of these fields and keep
working as they did: every model, no expiry, not admin.

The server re-reads the file when it changes. A deleted, emptied or unreadable
file means *no* valid key (every request gets 401) until it is fixed: deleting
the file is how an operator revokes everything at once, so it must never leave
the old keys working.

Why a plain SHA-256 and not a slow KDF (scrypt, argon2): slow KDFs exist to
make guessing *low-entropy passwords* expensive. A 256-bit random key cannot
be guessed whatever the hash, and the server verifies a key on every request,
so a deliberately slow hash would only hand attackers a cheap way to burn our
CPU. A server-side HMAC secret would add nothing either: there is no safer
place to keep it than beside the keys file. The file is still written with mode
0600, because key names and counts are nobody else's business.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tuneforge.errors import SecurityError
from tuneforge.security import audit

log = logging.getLogger("tuneforge.security.keys")

KEY_PREFIX = "tf-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class KeyRecord:
    """One stored key: its name, the SHA-256 hex digest of the key, its creation time (ISO 8601, UTC) and scopes.

    Attributes:
        models: Served names the key may call; ``None`` for all.
        expires: When the key stops working (ISO 8601, UTC); ``None`` for never.
        admin: May read ``/metrics`` on a server bound beyond loopback.
    """

    name: str
    sha256: str
    created: str
    models: tuple[str, ...] | None = None
    expires: str | None = None
    admin: bool = False

    def allows(self, model: str) -> bool:
        """Whether this key may call the served name ``model``."""
        return self.models is None or model in self.models

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and datetime.fromisoformat(self.expires) <= (now or datetime.now(timezone.utc))

    def to_json(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "created": self.created,
                "models": list(self.models) if self.models is not None else None,
                "expires": self.expires, "admin": self.admin}


_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """Parse ``--expires``: a duration from now (``12h``, ``30d``, ``8w``) or an ISO date/time (UTC if no zone).

    Raises:
        SecurityError: neither form, or a time in the past.

    Example:
        >>> parse_expiry("30d", datetime(2026, 1, 1, tzinfo=timezone.utc)).isoformat()
        '2026-01-31T00:00:00+00:00'
    """
    now = now or datetime.now(timezone.utc)
    match = re.fullmatch(r"\s*(\d+)\s*([hdw])\s*", text)
    if match:
        when = now + int(match.group(1)) * _UNITS[match.group(2)]
    else:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            raise SecurityError(
                f"--expires {text!r}: expected a duration such as 12h, 30d or 8w, or a date such as 2026-12-31"
            ) from None
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    if when <= now:
        raise SecurityError(f"--expires {text!r}: {when.isoformat()} is not in the future")
    return when.astimezone(timezone.utc).replace(microsecond=0)


def hash_key(key: str) -> str:
    """Return the hex SHA-256 digest stored for ``key`` (see the module docstring for why SHA-256)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_keys(path: str | Path) -> list[KeyRecord]:
    """Read a keys file; a missing file holds no keys.

    Raises:
        SecurityError: the file is not valid JSON or a record is malformed (names the file and record).
    """
    path = Path(path)
    if not path.exists():
        return []
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("keys file %s is readable by others; run: chmod 600 %s", path, path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SecurityError(f"keys file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise SecurityError(f"keys file {path} must be a JSON object with a 'keys' list")
    return [_record(item, f"keys file {path}, keys[{i}]") for i, item in enumerate(data["keys"])]


def _record(item: object, where: str) -> KeyRecord:
    if not isinstance(item, dict) or not all(isinstance(item.get(f), str) for f in ("name", "sha256", "created")):
        raise SecurityError(f"{where}: needs string fields 'name', 'sha256' and 'created'")
    where = f"{where} ({item['name']!r})"
    if not _HEX64.match(item["sha256"]):
        raise SecurityError(f"{where}: 'sha256' is not a 64-character hex digest")
    models = item.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) and m for m in models)):
        raise SecurityError(f"{where}: 'models' must be a list of served model names, or null for all")
    expires = item.get("expires")
    if expires is not None:
        try:
            if not isinstance(expires, str) or datetime.fromisoformat(expires).tzinfo is None:
                raise ValueError
        except ValueError:
            raise SecurityError(f"{where}: 'expires' must be an ISO 8601 time with a zone, or null") from None
    admin = item.get("admin", False)
    if not isinstance(admin, bool):
        raise SecurityError(f"{where}: 'admin' must be true or false")
    return KeyRecord(item["name"], item["sha256"], item["created"],
                     tuple(models) if models is not None else None, expires, admin)


def write_keys(path: str | Path, records: list[KeyRecord]) -> None:
    """Write a keys file atomically with mode 0600 (never a moment where it is readable by others)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": 1, "keys": [r.to_json() for r in records]}
    # mkstemp creates the file 0600; os.replace swaps it in so readers never see half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_key(
    path: str | Path, name: str, *, models: Sequence[str] | None = None, expires: datetime | None = None,
    admin: bool = False,
) -> str:
    """Create a new random key named ``name``, store its hash in ``path`` and return the key (shown once).

    Args:
        path: The keys file (created if missing).
        name: Who or what uses the key; shown in access logs.
        models: Served names the key may call; ``None`` for all.
        expires: When the key stops working; ``None`` for never.
        admin: May read ``/metrics`` on a server bound beyond loopback.

    Raises:
        SecurityError: the name is invalid or already used, or ``models`` is empty.

    Example:
        >>> key = create_key("keys.json", "ci")  # doctest: +SKIP
        >>> key.startswith("tf-")  # doctest: +SKIP
        True
    """
    if not _NAME.match(name):
        raise SecurityError(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    records = read_keys(path)
    if any(r.name == name for r in records):
        raise SecurityError(f"a key named {name!r} already exists in {path}; revoke it first or pick another name")
    scoped = None
    if models is not None:
        scoped = tuple(dict.fromkeys(m.strip() for m in models if m.strip()))
        if not scoped:
            raise SecurityError("--models names no model; leave it out to allow every model")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    until = expires.astimezone(timezone.utc).isoformat(timespec="seconds") if expires is not None else None
    # Audited first: a key must not exist unrecorded (nor be stored but never shown, if the log fails).
    audit.record(Path(path).parent, "key.create", {"name": name, "keys_file": str(Path(path).resolve()),
                                                "models": list(scoped) if scoped else None, "expires": until, "admin": admin})
    write_keys(path, [*records, KeyRecord(name, hash_key(key), created, scoped, until, admin)])
    return key


def list_keys(path: str | Path) -> list[KeyRecord]:
    """Return the keys stored in ``path`` (names and creation times; the keys themselves are not stored)."""
    return read_keys(path)


def revoke_key(path: str | Path, name: str) -> None:
    """Remove the key named ``name`` from ``path``; a running server stops accepting it at the next request.

    Raises:
        SecurityError: no key has that name.
    """
    records = read_keys(path)
    kept = [r for r in records if r.name != name]
    if len(kept) == len(records):
        known = ", ".join(r.name for r in records) or "none"
        raise SecurityError(f"no key named {name!r} in {path} (keys: {known})")
    write_keys(path, kept)
    audit.record(Path(path).parent, "key.revoke", {"name": name, "keys_file": str(Path(path).resolve())})


class KeyStore:
    """The keys a server accepts, re-read whenever the keys file changes (so revocation needs no restart).

    A deleted, emptied or malformed file holds no valid key until it is fixed (fail closed).

    Args:
        path: The keys file written by :func:`create_key`.

    Raises:
        SecurityError: the file does not exist or is malformed (when the server starts).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise SecurityError(
                f"keys file not found: {self.path} (create one with: tuneforge keys create NAME --file {path})"
            )
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: list[KeyRecord] = read_keys(self.path)
        self._stamp = self._current_stamp()

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        # write_keys replaces the file, so the inode changes even when mtime and size do not.
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload(self) -> None:
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        if stamp is None:
            self._records = []
            log.error("keys file %s is gone: every key is refused until it is back", self.path)
            return
        try:
            self._records = read_keys(self.path)
        except (OSError, SecurityError) as exc:
            self._records = []
            log.error("every key is refused until the keys file is fixed: %s", exc)
            return
        if not self._records:
            log.warning("keys file %s holds no keys: every request is refused", self.path)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._records]

    def find(self, key: str) -> KeyRecord | None:
        """Return the stored record of ``key`` (expired or not), or ``None`` when no record matches.

        Every stored digest is compared with :func:`hmac.compare_digest` and the loop never stops
        early, so the time taken does not depend on which stored key (if any) matched.
        """
        with self._lock:
            self._reload()
            records = self._records
        digest = hash_key(key)
        match = None
        for record in records:
            if hmac.compare_digest(digest, record.sha256):
                match = record
        return match

    def verify(self, key: str) -> str | None:
        """Return the name of the key, or ``None`` when it is not (or no longer) valid, or has expired."""
        record = self.find(key)
        return record.name if record is not None and not record.expired() else None
