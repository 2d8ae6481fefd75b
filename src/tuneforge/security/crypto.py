"""Encryption at rest: the encrypted file format, keys, and the one reader that decrypts.

An encrypted file is::

    MAGIC (8 bytes) | header length (4 bytes, big endian) | header (JSON) | chunk | chunk | ...
    chunk = nonce (12 bytes) | ciphertext length (4 bytes) | AES-256-GCM ciphertext + 16-byte tag

The header holds the format version, the key id (a fingerprint of the key, never the key), the
file's run-relative name, the chunk size and, for a passphrase, the scrypt salt and parameters.
Each chunk is sealed with a fresh random 96-bit nonce and its associated data is
``MAGIC + header + chunk index + last-chunk flag``: so the header is authenticated by every chunk,
and chunks cannot be reordered, dropped, or the file cut after a chunk without decryption failing.
Chunks (16 MiB) keep memory at one plaintext copy plus one chunk for multi-GB weights.

AES-GCM and scrypt come from ``cryptography``; nothing cryptographic is written here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from tuneforge.errors import SecurityError

MAGIC = b"TFENC\x00\x01\n"
FORMAT_VERSION = 1
CHUNK_SIZE = 16 * 1024 * 1024
KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12
_MAX_HEADER = 64 * 1024
# scrypt cost: n=2**15, r=8 takes ~32 MiB and ~0.1 s, once per process and salt (derivations are cached).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1

KEY_HELP = ("give the key: set TUNEFORGE_KEY_FILE (a key file), TUNEFORGE_KEY or TUNEFORGE_PASSPHRASE, "
            "or --key-file FILE where the command has it")


class DecryptError(SecurityError):
    """An encrypted file cannot be decrypted: missing key, wrong key, or modified bytes."""


def key_id(key: bytes) -> str:
    """A public fingerprint of a key (16 hex digits): names the key in headers and errors, never reveals it."""
    return hashlib.sha256(b"tuneforge key id\x00" + key).hexdigest()[:16]


@dataclass
class Key:
    """An encryption key: 32 random bytes, or a passphrase stretched by scrypt with a per-key salt.

    Attributes:
        source: Where the key came from (for messages), e.g. ``key file keys/run.key``.
    """

    source: str
    _raw: bytes | None = field(default=None, repr=False)
    _passphrase: bytes | None = field(default=None, repr=False)
    _salt: bytes = field(default_factory=lambda: secrets.token_bytes(16), repr=False)
    _derived: dict[bytes, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def from_bytes(cls, raw: bytes, source: str = "key") -> "Key":
        if len(raw) != KEY_BYTES:
            raise SecurityError(f"{source}: a key is {KEY_BYTES} bytes (got {len(raw)})")
        return cls(source, _raw=raw)

    @classmethod
    def from_passphrase(cls, passphrase: str, source: str = "passphrase") -> "Key":
        if len(passphrase) < 8:
            raise SecurityError(f"{source}: the passphrase is shorter than 8 characters")
        return cls(source, _passphrase=passphrase.encode("utf-8"))

    def kdf(self) -> dict | None:
        """The header's ``kdf`` entry for files written with this key (None for a raw key)."""
        if self._passphrase is None:
            return None
        return {"name": "scrypt", "salt": base64.b64encode(self._salt).decode(), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}

    def material(self, kdf: dict | None = None) -> bytes:
        """The 32 key bytes; for a passphrase, derived with the salt and parameters of ``kdf`` (default: ours)."""
        if self._raw is not None:
            return self._raw
        assert self._passphrase is not None
        kdf = kdf or self.kdf()
        salt = base64.b64decode(kdf["salt"])
        cache_key = salt + struct.pack(">III", kdf["n"], kdf["r"], kdf["p"])
        if cache_key not in self._derived:
            from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

            self._derived[cache_key] = Scrypt(salt=salt, length=KEY_BYTES, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(self._passphrase)
        return self._derived[cache_key]

    def id_for(self, kdf: dict | None = None) -> str:
        return key_id(self.material(kdf))


def generate_key_file(path: str | Path, *, overwrite: bool = False) -> Key:
    """Write a new random key (base64, one line) to ``path`` with mode 0600; refuses to replace a file."""
    path = Path(path)
    raw = secrets.token_bytes(KEY_BYTES)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SecurityError(f"{path} exists; refusing to replace a key (files encrypted with it would be lost)") from None
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(raw).decode() + "\n")
    os.chmod(path, 0o600)
    return Key.from_bytes(raw, f"key file {path}")


def read_key_file(path: str | Path) -> Key:
    """The key in ``path`` (base64 of 32 bytes); refused when group or others may read or write the file."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise SecurityError(f"key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(f"key file {path} cannot be read ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(f"key file {path} has mode {stat.S_IMODE(mode):04o}; it must be private: chmod 600 {path}")
    return Key.from_bytes(_decode_key(text, f"key file {path}"), f"key file {path}")


def key_from_env(var: str) -> Key:
    """The key (base64 of 32 bytes) held by environment variable ``var``."""
    value = os.environ.get(var)
    if not value:
        raise SecurityError(f"environment variable {var} (the encryption key) is not set")
    return Key.from_bytes(_decode_key(value.strip(), f"environment variable {var}"), f"environment variable {var}")


def passphrase_from_env(var: str) -> Key:
    value = os.environ.get(var)
    if not value:
        raise SecurityError(f"environment variable {var} (the encryption passphrase) is not set")
    return Key.from_passphrase(value, f"passphrase in {var}")


def _decode_key(text: str, source: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise SecurityError(f"{source}: not a key (expected the base64 of {KEY_BYTES} bytes, "
                            "as written by `tuneforge genkey FILE`)") from None
    if len(raw) != KEY_BYTES:
        raise SecurityError(f"{source}: a key is {KEY_BYTES} bytes, this one is {len(raw)} (make one with `tuneforge genkey FILE`)")
    return raw


# --------------------------------------------------------------------------- format


def is_encrypted(path: str | Path) -> bool:
    """Whether ``path`` is a file in this format (starts with the magic bytes)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except (IsADirectoryError, NotADirectoryError, FileNotFoundError):
        return False


def _header(key: Key, name: str, chunk_size: int) -> bytes:
    header = {"format": FORMAT_VERSION, "cipher": "AES-256-GCM", "key_id": key.id_for(), "name": name,
              "chunk_size": chunk_size, "kdf": key.kdf()}
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _aad(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">QB", index, 1 if last else 0)


def encrypt_to(out: BinaryIO, src: BinaryIO, key: Key, name: str, chunk_size: int = CHUNK_SIZE) -> None:
    """Write the encrypted form of everything ``src`` holds to ``out``, one chunk in memory at a time.

    Args:
        name: The file's run-relative name, authenticated in the header (a reader can check that
            ``data/test.jsonl`` was not swapped for another encrypted file of the run).
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = _header(key, name, chunk_size)
    prefix = MAGIC + struct.pack(">I", len(header)) + header
    out.write(prefix)
    aead = AESGCM(key.material())
    block, index = src.read(chunk_size), 0
    while True:
        following = src.read(chunk_size)  # read ahead: the last chunk is flagged as such in its AAD
        last = not following
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = aead.encrypt(nonce, block, _aad(prefix, index, last))
        out.write(nonce + struct.pack(">I", len(sealed)) + sealed)
        if last:
            return
        block, index = following, index + 1


def read_header(f: BinaryIO, where: str) -> tuple[bytes, dict]:
    """Read the magic and header of an encrypted file; returns (the AAD prefix, the header)."""
    if f.read(len(MAGIC)) != MAGIC:
        raise DecryptError(f"{where} is not a tuneforge encrypted file")
    raw_len = f.read(4)
    length = struct.unpack(">I", raw_len)[0] if len(raw_len) == 4 else -1
    header_bytes = f.read(length) if 0 < length <= _MAX_HEADER else b""
    try:
        header = json.loads(header_bytes)
        if header["format"] != FORMAT_VERSION:
            raise DecryptError(f"{where} uses encrypted format {header['format']}; this tuneforge reads format {FORMAT_VERSION}")
        header["key_id"], header["name"]  # noqa: B018 (both must be present)
    except (ValueError, KeyError, TypeError):
        raise DecryptError(f"{where} was modified or corrupted (its encryption header cannot be read)") from None
    return MAGIC + raw_len + header_bytes, header


def decrypt_chunks(f: BinaryIO, key: Key | None, where: str, expected_name: str | None = None) -> Iterator[bytes]:
    """The plaintext of the encrypted file open as ``f``, chunk by chunk, each authenticated before it is yielded.

    Raises:
        DecryptError: no key, a wrong key (both key ids named), the file was modified, reordered or
            cut short, or it holds another file's content (its authenticated name differs).
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    prefix, header = read_header(f, where)
    if key is None:
        raise DecryptError(f"{where} is encrypted (key id {header['key_id']}); {KEY_HELP}")
    given = key.id_for(header.get("kdf"))
    if given != header["key_id"]:
        raise DecryptError(f"cannot decrypt {where}: wrong key (file key id {header['key_id']}, given key id {given} from {key.source})")
    if expected_name is not None and header["name"] != expected_name:
        raise DecryptError(f"{where} holds the encrypted content of '{header['name']}', not '{expected_name}' (files were swapped)")
    aead = AESGCM(key.material(header.get("kdf")))
    index = 0
    while True:
        head = f.read(_NONCE_BYTES + 4)
        if len(head) < _NONCE_BYTES + 4:
            raise DecryptError(f"{where} was modified or corrupted (it is cut short after chunk {index})")
        length = struct.unpack(">I", head[_NONCE_BYTES:])[0]
        sealed = f.read(length)
        for last in (False, True):  # the flag is not stored: the chunk authenticates as one or the other
            try:
                block = aead.decrypt(head[:_NONCE_BYTES], sealed, _aad(prefix, index, last))
                break
            except InvalidTag:
                continue
        else:
            raise DecryptError(f"{where} was modified or corrupted (chunk {index} fails authentication)")
        yield block
        if last:
            if f.read(1):
                raise DecryptError(f"{where} was modified or corrupted (bytes after its last chunk)")
            return
        index += 1


def encrypt_bytes(data: bytes, key: Key, name: str, chunk_size: int = CHUNK_SIZE) -> bytes:
    import io

    out = io.BytesIO()
    encrypt_to(out, io.BytesIO(data), key, name, chunk_size)
    return out.getvalue()
