"""API keys: only hashes on disk, mode 0600, list/revoke, verification and malformed files."""

from __future__ import annotations

import json
import stat

import pytest

from tuneforge.errors import SecurityError
from tuneforge.security import KeyStore, create_key, hash_key, list_keys, read_keys, revoke_key


def test_create_stores_only_the_hash_with_mode_0600(tmp_path):
    path = tmp_path / "keys.json"
    key = create_key(path, "ci")
    assert key.startswith("tf-") and len(key) >= 40
    text = path.read_text()
    assert key not in text and key[3:] not in text
    record = json.loads(text)["keys"][0]
    assert record["name"] == "ci" and record["sha256"] == hash_key(key) and record["created"].endswith("+00:00")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keys_are_random(tmp_path):
    path = tmp_path / "keys.json"
    assert create_key(path, "a") != create_key(path, "b")
    assert [r.name for r in list_keys(path)] == ["a", "b"]


def test_duplicate_and_bad_names_are_refused(tmp_path):
    path = tmp_path / "keys.json"
    create_key(path, "ci")
    with pytest.raises(SecurityError, match="already exists"):
        create_key(path, "ci")
    for bad in ["", "-x", "a b", "x" * 65, "ü"]:
        with pytest.raises(SecurityError, match="invalid key name"):
            create_key(path, bad)


def test_revoke(tmp_path):
    path = tmp_path / "keys.json"
    create_key(path, "a")
    create_key(path, "b")
    revoke_key(path, "a")
    assert [r.name for r in list_keys(path)] == ["b"]
    with pytest.raises(SecurityError, match="no key named 'a'.*keys: b"):
        revoke_key(path, "a")


def test_missing_file_lists_nothing(tmp_path):
    assert list_keys(tmp_path / "none.json") == []


def test_keystore_verifies_and_follows_the_file(tmp_path):
    path = tmp_path / "keys.json"
    key_a = create_key(path, "a")
    store = KeyStore(path)
    assert store.verify(key_a) == "a"
    assert store.verify("tf-" + "x" * 43) is None and store.verify("") is None
    key_b = create_key(path, "b")  # created after the server started
    assert store.verify(key_b) == "b"
    revoke_key(path, "a")
    assert store.verify(key_a) is None
    path.write_text("{broken")  # a bad edit keeps the last good keys instead of opening or locking the door
    assert store.verify(key_b) == "b" and store.verify(key_a) is None


def test_keystore_needs_an_existing_file(tmp_path):
    with pytest.raises(SecurityError, match="keys file not found.*tuneforge keys create"):
        KeyStore(tmp_path / "nope.json")


@pytest.mark.parametrize("content,match", [
    ("not json", "not valid JSON"),
    ('{"keys": 3}', "'keys' list"),
    ('{"keys": [{"name": "a"}]}', r"keys\[0\]: needs string fields"),
    ('{"keys": [{"name": "a", "sha256": "abc", "created": "x"}]}', r"keys\[0\] \('a'\): 'sha256'"),
])
def test_malformed_files_name_the_file_and_record(tmp_path, content, match):
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(SecurityError, match=match) as info:
        read_keys(path)
    assert str(path) in str(info.value)


def test_loose_permissions_warn(tmp_path, caplog):
    path = tmp_path / "keys.json"
    create_key(path, "a")
    path.chmod(0o644)
    read_keys(path)
    assert "chmod 600" in caplog.text
