"""API keys for ``tuneforge serve``: create, list, revoke, and verify them against a keys file.

A key is shown once, when it is created (``tf-`` + 43 URL-safe characters,
256 random bits); the keys file only holds its SHA-256 digest, its name and
when it was made::

    {"version": 1, "keys": [{"name": "ci", "sha256": "<hex>", "created": "2026-01-01T00:00:00+00:00"}]}

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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tuneforge.errors import SecurityError
from tuneforge.security import audit

log = logging.getLogger("tuneforge.security.keys")

KEY_PREFIX = "tf-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class KeyRecord:
    """One stored key: its name, the SHA-256 hex digest of the key, and its creation time (ISO 8601, UTC)."""

    name: str
    sha256: str
    created: str


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
    records = []
    for i, item in enumerate(data["keys"]):
        where = f"keys file {path}, keys[{i}]"
        if not isinstance(item, dict) or not all(isinstance(item.get(f), str) for f in ("name", "sha256", "created")):
            raise SecurityError(f"{where}: needs string fields 'name', 'sha256' and 'created'")
        if not _HEX64.match(item["sha256"]):
            raise SecurityError(f"{where} ({item['name']!r}): 'sha256' is not a 64-character hex digest")
        records.append(KeyRecord(item["name"], item["sha256"], item["created"]))
    return records


def write_keys(path: str | Path, records: list[KeyRecord]) -> None:
    """Write a keys file atomically with mode 0600 (never a moment where it is readable by others)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": 1, "keys": [r.__dict__ for r in records]}
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


def create_key(path: str | Path, name: str) -> str:
    """Create a new random key named ``name``, store its hash in ``path`` and return the key (shown once).

    Raises:
        SecurityError: the name is invalid or already used.

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
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # Audited first: a key must not exist unrecorded (nor be stored but never shown, if the log fails).
    audit.record(Path(path).parent, "key.create", {"name": name, "keys_file": str(Path(path).resolve())})
    write_keys(path, [*records, KeyRecord(name, hash_key(key), created)])
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

    Args:
        path: The keys file written by :func:`create_key`.

    Raises:
        SecurityError: the file does not exist or is malformed.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise SecurityError(
                f"keys file not found: {self.path} (create one with: tuneforge keys create NAME --file {path})"
            )
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: list[KeyRecord] = []
        self._reload()

    def _reload(self) -> None:
        st = self.path.stat()
        # write_keys replaces the file, so the inode changes even when mtime and size do not.
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._records = read_keys(self.path)
            self._stamp = stamp

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._records]

    def verify(self, key: str) -> str | None:
        """Return the name of the key, or ``None`` when it is not (or no longer) valid.

        Every stored digest is compared with :func:`hmac.compare_digest` and the loop never stops
        early, so the time taken does not depend on which stored key (if any) matched.
        """
        with self._lock:
            try:
                self._reload()
            except (OSError, SecurityError) as exc:
                # A half-edited or deleted file must not lock everyone out, nor let anyone in:
                # keep the last good set and say so.
                log.error("keeping the previous keys: %s", exc)
            records = self._records
        digest = hash_key(key)
        match = None
        for record in records:
            if hmac.compare_digest(digest, record.sha256):
                match = record.name
        return match
