"""Which run files are encrypted, the writer that seals them, and the one reader that opens any of them.

With ``security.encrypt: true`` every file a run writes is encrypted except the few that hold no
data rows and no weights, and that tools must read without a key (:data:`PLAIN`): the config
(it names where the key is, never the key), status, manifest (versions, hashes, numbers), the
training log, the model card, the evaluation's aggregate ``metrics.json``, its progress counts and
plots, and the histogram of training token lengths (``data/lengths.json``, counts only).

Readers call :func:`read_file`: a plain file reads as it is; an encrypted one is decrypted with the
given key, else with the key named by the ``security:`` section of the run it belongs to (its
authenticated header says which run-relative file it is, so the run root is found from it), else
with the key in ``TUNEFORGE_KEY_FILE`` / ``TUNEFORGE_KEY`` / ``TUNEFORGE_PASSPHRASE``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, BinaryIO

from tuneforge.errors import SecurityError
from tuneforge.security.crypto import MAGIC, DecryptError, Key, decrypt_chunks, encrypt_to, is_encrypted, read_header
from tuneforge.security.key_source import run_key_source

PLAIN = ("config.yaml", "status.json", "manifest.json", "parent.json", "metrics.jsonl", "README.md", ".lock",
         "eval/metrics.json", "eval/progress.json", "eval/*.png", "data/lengths.json", "tensorboard/*", "ranks/*")
"""Run-relative names never encrypted (they hold no data rows and no weights); everything else is."""


def is_plain(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in PLAIN)


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through a temp file + rename (mode 0600, folders 0700), so no reader sees half a file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@dataclass(frozen=True)
class Sealer:
    """Writes files under ``root``: encrypted with ``key`` (unless :func:`is_plain`), or plain when ``key`` is None."""

    root: Path
    key: Key | None = None

    @classmethod
    def for_run(cls, root: str | Path) -> "Sealer":
        """The sealer of an existing run: encrypting when its config says ``security.encrypt``.

        Raises:
            SecurityError: the run is encrypted and no key is found.
        """
        root = Path(root)
        section = run_security(root)
        if not section.get("encrypt"):
            return cls(root)
        return cls(root, run_key_source(section).require(f"writing into the encrypted run {root}"))

    def name(self, path: Path) -> str:
        """The run-relative name stored (authenticated) in the header; the file name for paths outside the run."""
        try:
            return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return Path(path).name

    def write_bytes(self, path: Path, data: bytes, *, name: str | None = None) -> Path:
        """Write ``path``; ``name`` is its run-relative name when ``path`` is a temporary place to be renamed."""
        import io

        name = name or self.name(path)
        if self.key is None or is_plain(name):
            return write_atomic(path, lambda f: f.write(data))
        return write_atomic(path, lambda f: encrypt_to(f, io.BytesIO(data), self.key, name))

    def write_text(self, path: Path, text: str) -> Path:
        return self.write_bytes(path, text.encode("utf-8"))


def run_security(root: Path) -> dict:
    """The ``security:`` section of the run at ``root`` as stored (empty when there is none)."""
    import yaml

    try:
        stored = yaml.safe_load((Path(root) / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    section = stored.get("security") if isinstance(stored, dict) else None
    return section if isinstance(section, dict) else {}


def key_for(path: str | Path, header: dict) -> Key | None:
    """The key an encrypted file's own run names (found from the run-relative name in its header), or the environment's."""
    path, name = Path(path).resolve(), PurePosixPath(header.get("name") or "x")
    depth = min(len(name.parts) - 1, len(path.parents) - 1)
    section = run_security(path.parents[depth])
    return run_key_source(section).load()


def key_of(path: str | Path) -> Key | None:
    """The key found for the encrypted file ``path`` (as :func:`read_file` finds it), or None."""
    with open(path, "rb") as f:
        _, header = read_header(f, str(path))
    return key_for(path, header)


def read_file(path: str | Path, key: Key | None = None, *, expected_name: str | None = None) -> bytes:
    """The content of ``path``, decrypted when it is encrypted (see the module docstring for the key).

    Raises:
        DecryptError: encrypted and no key, a wrong key, or modified bytes; the message names the file.
    """
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            f.seek(0)
            return f.read()
        f.seek(0)
        if key is None:
            _, header = read_header(f, str(path))
            try:
                key = key_for(path, header)
            except SecurityError as exc:  # the run names a key that is not there: say which file needed it
                raise DecryptError(f"{path} is encrypted (key id {header['key_id']}) and its key cannot be loaded: {exc}") from None
            f.seek(0)
        return b"".join(decrypt_chunks(f, key, str(path), expected_name))


def read_text(path: str | Path, key: Key | None = None) -> str:
    return read_file(path, key).decode("utf-8")


def encrypt_file(src: str | Path, dst: str | Path, key: Key, name: str | None = None, *, overwrite: bool = False) -> Path:
    """Encrypt ``src`` into ``dst`` (mode 0600, written atomically); refuses an encrypted ``src`` or an existing ``dst``."""
    src, dst = Path(src), Path(dst)
    if is_encrypted(src):
        raise SecurityError(f"{src} is already encrypted")
    with open(src, "rb") as f:
        return _write_new(dst, lambda out: encrypt_to(out, f, key, name or src.name), overwrite)


def decrypt_file(src: str | Path, dst: str | Path, key: Key | None, *, overwrite: bool = False) -> Path:
    """Decrypt ``src`` into ``dst`` (mode 0600, written atomically, nothing left on failure)."""
    src, dst = Path(src), Path(dst)
    if not is_encrypted(src):
        raise SecurityError(f"{src} is not a tuneforge encrypted file")

    def write(out: BinaryIO) -> None:
        with open(src, "rb") as f:
            for block in decrypt_chunks(f, key, str(src)):
                out.write(block)

    return _write_new(dst, write, overwrite)


def _write_new(dst: Path, write: Callable[[BinaryIO], None], overwrite: bool) -> Path:
    if dst.exists() and not overwrite:
        raise SecurityError(f"{dst} exists; give --overwrite to replace it")
    return write_atomic(dst, write)
