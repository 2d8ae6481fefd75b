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
    good = path.read_text()
    path.write_text("{broken")  # a bad edit fails closed: no key works until the file is fixed
    assert store.verify(key_b) is None and store.verify(key_a) is None
    path.write_text(good)
    assert store.verify(key_b) == "b"


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


# ----------------------------------------------------------------------------- scopes and expiry


def test_scoped_key_is_stored_with_its_scopes(tmp_path):
    from datetime import datetime, timezone

    path = tmp_path / "keys.json"
    create_key(path, "app", models=["lora-a", " tiny ", "lora-a"], expires=datetime(2999, 1, 1, tzinfo=timezone.utc),
               admin=True)
    record = json.loads(path.read_text())["keys"][0]
    assert record["models"] == ["lora-a", "tiny"] and record["expires"] == "2999-01-01T00:00:00+00:00"
    assert record["admin"] is True
    (stored,) = read_keys(path)
    assert stored.allows("tiny") and not stored.allows("lora-b") and not stored.expired() and stored.admin


def test_keys_written_before_scopes_keep_working_as_all_models_non_admin(tmp_path):
    path = tmp_path / "keys.json"
    key = "tf-" + "k" * 43
    path.write_text(json.dumps({"version": 1, "keys": [
        {"name": "old", "sha256": hash_key(key), "created": "2026-01-01T00:00:00+00:00"}]}))
    (record,) = read_keys(path)
    assert record.models is None and record.expires is None and record.admin is False
    assert record.allows("anything") and KeyStore(path).verify(key) == "old"


def test_expired_key_is_not_valid(tmp_path):
    path = tmp_path / "keys.json"
    key = create_key(path, "old")
    data = json.loads(path.read_text())
    data["keys"][0]["expires"] = "2001-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))
    store = KeyStore(path)
    assert store.verify(key) is None and store.find(key).expired()


def test_parse_expiry():
    from datetime import datetime, timezone

    from tuneforge.security import parse_expiry

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_expiry("30d", now) == datetime(2026, 1, 31, tzinfo=timezone.utc)
    assert parse_expiry("12h", now) == datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert parse_expiry("2w", now) == datetime(2026, 1, 15, tzinfo=timezone.utc)
    assert parse_expiry("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=timezone.utc)
    for bad in ("soon", "30x", "-1d"):
        with pytest.raises(SecurityError, match="expected a duration"):
            parse_expiry(bad, now)
    with pytest.raises(SecurityError, match="not in the future"):
        parse_expiry("2020-01-01", now)


@pytest.mark.parametrize("field,value,match", [
    ("models", "tiny", "'models' must be a list"),
    ("models", [""], "'models' must be a list"),
    ("expires", "tomorrow", "'expires' must be an ISO 8601"),
    ("expires", "2030-01-01T00:00:00", "'expires' must be an ISO 8601 time with a zone"),
    ("admin", "yes", "'admin' must be true or false"),
])
def test_malformed_scopes_name_the_record(tmp_path, field, value, match):
    path = tmp_path / "keys.json"
    create_key(path, "a")
    data = json.loads(path.read_text())
    data["keys"][0][field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(SecurityError, match=rf"keys\[0\] \('a'\): {match}"):
        read_keys(path)


def test_empty_models_scope_is_refused(tmp_path):
    with pytest.raises(SecurityError, match="--models names no model"):
        create_key(tmp_path / "keys.json", "a", models=[" ", ""])
