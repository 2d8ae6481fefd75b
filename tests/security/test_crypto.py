"""The encrypted file format: round trips, and every way a file or key can be wrong is refused by name."""

from __future__ import annotations

import io
import os
import struct

import pytest

from tuneforge.cli.main import main
from tuneforge.errors import SecurityError
from tuneforge.security import DecryptError, Key, KeySource, decrypt_file, encrypt_file, generate_key_file, read_file
from tuneforge.security.crypto import MAGIC, decrypt_chunks, encrypt_bytes, read_key_file

SMALL = 64  # bytes per chunk, so a few hundred bytes make several chunks


@pytest.fixture
def key(tmp_path):
    return generate_key_file(tmp_path / "run.key")


def _decrypt(blob: bytes, key: Key | None, name: str | None = None) -> bytes:
    return b"".join(decrypt_chunks(io.BytesIO(blob), key, "f.enc", name))


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    """Split an encrypted blob into its prefix (magic + header) and its chunks, to tamper with them."""
    length = struct.unpack(">I", blob[len(MAGIC):len(MAGIC) + 4])[0]
    pos = len(MAGIC) + 4 + length
    prefix, chunks = blob[:pos], []
    while pos < len(blob):
        size = struct.unpack(">I", blob[pos + 12:pos + 16])[0]
        chunks.append(blob[pos:pos + 16 + size])
        pos += 16 + size
    return prefix, chunks


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 5 * SMALL])
def test_round_trip_at_every_chunk_boundary(key, size):
    data = os.urandom(size)
    blob = encrypt_bytes(data, key, "data/test.jsonl", chunk_size=SMALL)
    assert blob.startswith(MAGIC)
    if size >= 16:  # a shorter random string may occur in any ciphertext by chance
        assert data not in blob
    assert _decrypt(blob, key, "data/test.jsonl") == data


def test_passphrase_round_trip_and_wrong_passphrase():
    data = b"canary-passphrase " * 10
    blob = encrypt_bytes(data, Key.from_passphrase("correct horse battery"), "x", chunk_size=SMALL)
    assert _decrypt(blob, Key.from_passphrase("correct horse battery")) == data  # another salt locally: the file's salt is used
    with pytest.raises(DecryptError, match=r"wrong key \(file key id [0-9a-f]{16}, given key id [0-9a-f]{16}"):
        _decrypt(blob, Key.from_passphrase("wrong horse battery"))


def test_wrong_key_names_both_key_ids(key, tmp_path):
    other = generate_key_file(tmp_path / "other.key")
    blob = encrypt_bytes(b"secret", key, "x")
    with pytest.raises(DecryptError) as err:
        _decrypt(blob, other)
    assert f"file key id {key.id_for()}, given key id {other.id_for()}" in str(err.value)


def test_missing_key_says_how_to_give_one(key):
    with pytest.raises(DecryptError, match=r"f.enc is encrypted .*TUNEFORGE_KEY_FILE"):
        _decrypt(encrypt_bytes(b"secret", key, "x"), None)


def test_a_flipped_bit_in_any_chunk_is_detected(key):
    blob = encrypt_bytes(os.urandom(3 * SMALL), key, "x", chunk_size=SMALL)
    prefix, chunks = _chunks(blob)
    for i in range(len(chunks)):
        bad = bytearray(chunks[i])
        bad[-1] ^= 1
        tampered = prefix + b"".join(chunks[:i]) + bytes(bad) + b"".join(chunks[i + 1:])
        with pytest.raises(DecryptError, match=f"modified or corrupted \\(chunk {i} fails"):
            _decrypt(tampered, key)


def test_a_changed_header_is_detected(key):
    blob = encrypt_bytes(b"secret rows", key, "data/test.jsonl")
    tampered = blob.replace(b"data/test.jsonl", b"data/val.jsonlx")  # same length: only authentication can tell
    with pytest.raises(DecryptError, match="modified or corrupted"):
        _decrypt(tampered, key)


def test_reordered_chunks_are_detected(key):
    blob = encrypt_bytes(os.urandom(3 * SMALL), key, "x", chunk_size=SMALL)
    prefix, chunks = _chunks(blob)
    with pytest.raises(DecryptError, match="chunk 0 fails"):
        _decrypt(prefix + chunks[1] + chunks[0] + b"".join(chunks[2:]), key)


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_truncated_files_are_detected(key, keep):
    blob = encrypt_bytes(os.urandom(3 * SMALL + 5), key, "x", chunk_size=SMALL)  # 4 chunks
    prefix, chunks = _chunks(blob)
    with pytest.raises(DecryptError, match="modified or corrupted"):
        _decrypt(prefix + b"".join(chunks[:keep]), key)


def test_a_cut_inside_a_chunk_is_detected(key):
    blob = encrypt_bytes(os.urandom(SMALL), key, "x", chunk_size=SMALL)
    with pytest.raises(DecryptError, match="modified or corrupted"):
        _decrypt(blob[:-3], key)


def test_a_swapped_file_is_refused_by_its_authenticated_name(key):
    blob = encrypt_bytes(b"validation rows", key, "data/validation.jsonl")
    with pytest.raises(DecryptError, match="content of 'data/validation.jsonl', not 'data/test.jsonl'"):
        _decrypt(blob, key, "data/test.jsonl")


def test_plain_files_read_as_they_are(tmp_path, key):
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(b'{"a": 1}\n')
    assert read_file(plain, None) == b'{"a": 1}\n'
    assert read_file(plain, key) == b'{"a": 1}\n'


def test_key_file_must_be_private(tmp_path, key):
    path = tmp_path / "run.key"
    os.chmod(path, 0o644)
    with pytest.raises(SecurityError, match=r"key file .*run.key has mode 0644; it must be private: chmod 600"):
        read_key_file(path)
    os.chmod(path, 0o600)
    assert read_key_file(path).id_for() == key.id_for()


def test_malformed_and_missing_key_files_are_named(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(SecurityError, match="bad.key: not a key"):
        read_key_file(bad)
    with pytest.raises(SecurityError, match="key file .*nope.key does not exist"):
        read_key_file(tmp_path / "nope.key")


def test_genkey_never_replaces_a_key(tmp_path, key):
    with pytest.raises(SecurityError, match="exists; refusing to replace a key"):
        generate_key_file(tmp_path / "run.key")
    assert oct((tmp_path / "run.key").stat().st_mode & 0o777) == "0o600"


def test_key_source_order_cli_then_environment(tmp_path, key, monkeypatch):
    other = generate_key_file(tmp_path / "other.key")
    monkeypatch.setenv("TUNEFORGE_KEY_FILE", str(tmp_path / "other.key"))
    assert KeySource(key_file=str(tmp_path / "run.key")).load().id_for() == key.id_for()
    assert KeySource().load().id_for() == other.id_for()
    monkeypatch.delenv("TUNEFORGE_KEY_FILE")
    assert KeySource().load() is None
    with pytest.raises(SecurityError, match="give one key source"):
        KeySource(key_file="a", key_env="B").load()


def test_file_round_trip_never_overwrites(tmp_path, key):
    src = tmp_path / "train.jsonl"
    src.write_text('{"text": "canary-file"}\n')
    enc = encrypt_file(src, tmp_path / "train.jsonl.enc", key)
    assert b"canary-file" not in enc.read_bytes()
    with pytest.raises(SecurityError, match="exists; give --overwrite"):
        encrypt_file(src, enc, key)
    out = decrypt_file(enc, tmp_path / "back.jsonl", key)
    assert out.read_text() == src.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_cli_encrypt_decrypt_and_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TUNEFORGE_KEY_FILE", raising=False)
    assert main(["genkey", str(tmp_path / "k")]) == 0
    assert main(["genkey", str(tmp_path / "wrong")]) == 0
    src = tmp_path / "rows.jsonl"
    src.write_text('{"text": "canary-cli"}\n')
    assert main(["encrypt", str(src), "--key-file", str(tmp_path / "k")]) == 0
    src.unlink()
    capsys.readouterr()
    assert main(["decrypt", str(tmp_path / "rows.jsonl.enc"), "--key-file", str(tmp_path / "wrong")]) == 2
    assert "cannot decrypt" in capsys.readouterr().err and not src.exists()  # nothing half-written
    assert main(["decrypt", str(tmp_path / "rows.jsonl.enc")]) == 2
    assert "rows.jsonl.enc is encrypted" in capsys.readouterr().err
    assert main(["decrypt", str(tmp_path / "rows.jsonl.enc"), "--key-file", str(tmp_path / "k")]) == 0
    assert src.read_text() == '{"text": "canary-cli"}\n'
    assert main(["decrypt", str(tmp_path / "rows.jsonl.enc"), "--key-file", str(tmp_path / "k")]) == 2
    assert "exists; give --overwrite" in capsys.readouterr().err


def _config(tmp_path, security: dict):
    import yaml

    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": "d.jsonl"}, "out_dir": str(tmp_path / "runs"), "security": security}))
    return path


def test_security_section_takes_one_key_source_and_resolves_the_key_file(tmp_path):
    from tuneforge import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"security.*give one key source, not key_file and key_env"):
        load_config(_config(tmp_path, {"encrypt": True, "key_file": "k", "key_env": "K"}))
    generate_key_file(tmp_path / "run.key")
    cfg = load_config(_config(tmp_path, {"encrypt": True, "key_file": "run.key"}))
    assert cfg.security.key_file == str((tmp_path / "run.key").resolve())  # relative to the config, like data


def test_an_encrypted_run_without_its_key_stops_before_any_folder_is_made(tmp_path, monkeypatch):
    from tuneforge import load_config
    from tuneforge.train.context import RunContext

    monkeypatch.delenv("TF_NO_SUCH_KEY", raising=False)
    cfg = load_config(_config(tmp_path, {"encrypt": True, "key_env": "TF_NO_SUCH_KEY"}))
    with pytest.raises(SecurityError, match="environment variable TF_NO_SUCH_KEY .* is not set"):
        RunContext.open(cfg)
    assert not (tmp_path / "runs").exists()
