"""``tuneforge rekey RUN``: re-encrypt every encrypted file of a run under a new key.

Each file is re-encrypted into a temp file and renamed over the old one, so at any moment every
file is whole and readable by one of the two keys. A rekey that stopped half way is finished by
running it again (files already under the new key are skipped); the error of an interrupted run
says how many files have which key. The run's ``config.yaml`` names the new key source last.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from tuneforge.errors import SecurityError
from tuneforge.security.at_rest import write_atomic
from tuneforge.security.crypto import DecryptError, Key, decrypt_chunks, encrypt_to, is_encrypted, read_header
from tuneforge.security.key_source import KeySource


@dataclass
class RekeyResult:
    run: Path
    rekeyed: list[Path] = field(default_factory=list)
    already: list[Path] = field(default_factory=list)
    """Files that were under the new key already (a rekey run again after an interruption)."""


class _ChunkReader(io.RawIOBase):
    """A readable stream over decrypted chunks, so re-encryption holds one chunk at a time."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._pending = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        return n


def rekey(run: str | Path, old: Key, new: Key, new_source: KeySource) -> RekeyResult:
    """Re-encrypt the encrypted files of ``run`` from ``old`` to ``new``; record ``new_source`` in its config.

    Raises:
        SecurityError: the run is in use, the new key equals the old one, or a file is under neither key
            (named, with how many files are under which key so far).
    """
    from tuneforge.train.lock import RunLock

    root = Path(run)
    if not (root / "config.yaml").is_file():
        raise SecurityError(f"{root} is not a tuneforge run (no config.yaml)")
    if old.id_for() == new.id_for() and old.kdf() is None:
        raise SecurityError("the new key is the old key; give another --new-key-file")
    result = RekeyResult(root)
    lock = RunLock.acquire(root / ".lock")  # no training or other rekey may write the run meanwhile
    try:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and is_encrypted(p)):
            with open(path, "rb") as f:
                _, header = read_header(f, str(path))
            if header["key_id"] == new.id_for(header.get("kdf")):
                result.already.append(path)
                continue
            try:
                _reencrypt(path, header, old, new)
            except DecryptError as exc:
                done = len(result.rekeyed) + len(result.already)
                raise SecurityError(
                    f"rekey stopped at {path}: {exc}. {done} file(s) are under the new key, the rest under the "
                    "old one; every file is whole: fix the cause and run the same rekey again to finish"
                ) from None
            result.rekeyed.append(path)
        _record_source(root, new_source)
    finally:
        lock.release()
    return result


def _reencrypt(path: Path, header: dict, old: Key, new: Key) -> None:
    with open(path, "rb") as src:
        chunks = decrypt_chunks(src, old, str(path), header["name"])
        write_atomic(path, lambda out: encrypt_to(out, io.BufferedReader(_ChunkReader(chunks)), new, header["name"],
                                                  header["chunk_size"]))


def _record_source(root: Path, source: KeySource) -> None:
    config = root / "config.yaml"
    stored = yaml.safe_load(config.read_text(encoding="utf-8"))
    stored["security"] = {**(stored.get("security") or {}), "key_file": source.key_file, "key_env": source.key_env,
                          "passphrase_env": source.passphrase_env}
    text = yaml.safe_dump(stored, sort_keys=False)
    write_atomic(config, lambda f: f.write(text.encode("utf-8")))
