"""Key rotation: `tuneforge rekey RUN` re-encrypts every file; an interrupted rekey leaves whole files and finishes on rerun."""

from __future__ import annotations

import json
import shutil

import pytest

from tuneforge.cli.main import main
from tuneforge.models import load
from tuneforge.security import generate_key_file, read_file
from tuneforge.security.crypto import is_encrypted, read_header

from tests.security.conftest import KEY_ENV


def _key_ids(root) -> dict[str, str]:
    ids = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_encrypted(path):
            with open(path, "rb") as f:
                ids[str(path.relative_to(root))] = read_header(f, str(path))[1]["key_id"]
    return ids


@pytest.fixture
def run_copy(run_key, tmp_path):
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(run_key.root, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def test_rekey_moves_every_file_to_the_new_key(run_copy, tmp_path, monkeypatch):
    before = _key_ids(run_copy)
    assert len(set(before.values())) == 1 and len(before) > 5
    new = generate_key_file(tmp_path / "new.key")
    assert main(["rekey", str(run_copy), "--new-key-file", str(tmp_path / "new.key")]) == 0
    after = _key_ids(run_copy)
    assert after.keys() == before.keys() and set(after.values()) == {new.id_for()}
    monkeypatch.delenv(KEY_ENV)  # the config now names the new key file; the old key is no longer needed
    rows = read_file(run_copy / "data" / "test.jsonl").decode().splitlines()
    assert rows and json.loads(rows[0])["messages"]
    assert load(run_copy).model is not None


def test_an_interrupted_rekey_leaves_whole_files_and_finishes_when_run_again(run_copy, tmp_path, capsys):
    files = sorted(_key_ids(run_copy))
    middle = run_copy / files[len(files) // 2]
    original = middle.read_bytes()
    damaged = bytearray(original)
    damaged[-1] ^= 1
    middle.write_bytes(bytes(damaged))  # the rekey stops here, as if it had crashed half way
    new = generate_key_file(tmp_path / "new.key")
    assert main(["rekey", str(run_copy), "--new-key-file", str(tmp_path / "new.key")]) == 2
    err = capsys.readouterr().err
    assert f"rekey stopped at {middle}" in err and "run the same rekey again" in err
    ids = _key_ids(run_copy)
    assert set(ids.values()) == {new.id_for(), ids[files[-1]]}  # some under the new key, the rest under the old
    middle.write_bytes(original)
    assert main(["rekey", str(run_copy), "--new-key-file", str(tmp_path / "new.key")]) == 0
    assert "already were" in capsys.readouterr().out
    assert set(_key_ids(run_copy).values()) == {new.id_for()}


def test_rekey_with_the_wrong_old_key_changes_nothing(run_copy, tmp_path, capsys):
    before = {p: (run_copy / p).read_bytes() for p in _key_ids(run_copy)}
    generate_key_file(tmp_path / "wrong.key")
    generate_key_file(tmp_path / "new.key")
    assert main(["rekey", str(run_copy), "--key-file", str(tmp_path / "wrong.key"),
                 "--new-key-file", str(tmp_path / "new.key")]) == 2
    assert "wrong key" in capsys.readouterr().err
    assert {p: (run_copy / p).read_bytes() for p in before} == before
