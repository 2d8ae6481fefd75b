"""The audit log: chained appends, tamper detection (edit, delete, reorder, HMAC, anchor), concurrent writers, CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tuneforge.security.audit import (
    GENESIS, KILLED, AuditError, AuditLog, audited, entry_hash, read_hmac_key, verify,
)
from tuneforge.security.audit_show import action_rows


def _log(tmp_path, n=4, key=None) -> Path:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, key)
    for i in range(n):
        log.append("demo", details={"i": i})
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_appends_chain_each_entry_to_the_one_before(tmp_path):
    path = _log(tmp_path)
    entries = _lines(path)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[0]["prev_hash"] == GENESIS
    for before, after in zip(entries, entries[1:]):
        assert after["prev_hash"] == before["hash"]
    assert all(entry_hash(e) == e["hash"] for e in entries)
    assert entries[0]["actor"]["pid"] == os.getpid() and entries[0]["time"].endswith("+00:00")
    result = verify(path)
    assert result.ok and result.entries == 4 and result.last_hash == entries[-1]["hash"]


def test_log_is_created_private(tmp_path):
    path = _log(tmp_path, 1)
    assert path.stat().st_mode & 0o077 == 0


def test_an_edited_field_names_that_entry(tmp_path):
    path = _log(tmp_path)
    entries = _lines(path)
    entries[2]["details"]["i"] = 99
    _write(path, entries)
    result = verify(path)
    assert not result.ok and result.bad_seq == 3 and result.bad_line == 3 and "edited" in result.problem


def test_a_deleted_entry_names_the_entry_after_the_gap(tmp_path):
    path = _log(tmp_path)
    entries = _lines(path)
    del entries[1]
    _write(path, entries)
    result = verify(path)
    assert not result.ok and result.bad_seq == 3 and "removed" in result.problem and "seq 2 missing" in result.problem


def test_a_deleted_entry_with_renumbered_seqs_is_caught_by_the_chain(tmp_path):
    """Renumbering hides the gap in seq, but then the hashes no longer match; recomputing them breaks prev_hash."""
    path = _log(tmp_path)
    entries = _lines(path)
    del entries[1]
    entries[1]["seq"] = 2
    entries[1]["hash"] = entry_hash(entries[1])
    _write(path, entries[:2])
    result = verify(path)
    assert not result.ok and result.bad_seq == 2 and "prev_hash" in result.problem


def test_two_swapped_entries_are_reported_as_reordered(tmp_path):
    path = _log(tmp_path)
    entries = _lines(path)
    entries[1], entries[2] = entries[2], entries[1]
    _write(path, entries)
    result = verify(path)
    assert not result.ok and result.bad_line == 2 and "reordered" in result.problem and "line 3" in result.problem


def test_a_cut_line_is_reported_with_its_line(tmp_path):
    path = _log(tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) - 40] + "\n")
    result = verify(path)
    assert not result.ok and result.bad_line == 4 and "not a JSON object" in result.problem


def test_hmac_detects_a_rewritten_chain_and_a_wrong_key(tmp_path):
    path = _log(tmp_path, key=b"secret")
    assert verify(path, b"secret").ok
    wrong = verify(path, b"other")
    assert not wrong.ok and wrong.bad_seq == 1 and "HMAC" in wrong.problem
    # An attacker without the key edits entry 2 and recomputes every hash after it: the chain holds...
    entries = _lines(path)
    entries[1]["details"]["i"] = 42
    for i in range(1, len(entries)):
        entries[i]["prev_hash"] = entries[i - 1]["hash"]
        entries[i]["hash"] = entry_hash(entries[i])
    _write(path, entries)
    assert verify(path).ok
    # ...but the HMAC does not.
    forged = verify(path, b"secret")
    assert not forged.ok and forged.bad_seq == 2 and "HMAC" in forged.problem


def test_stripped_hmacs_fail_when_a_key_is_given(tmp_path):
    path = _log(tmp_path, key=b"secret")
    entries = _lines(path)
    del entries[0]["hmac"]
    _write(path, entries)
    result = verify(path, b"secret")
    assert not result.ok and result.bad_seq == 1 and "no HMAC" in result.problem


def test_anchor_detects_a_truncated_tail(tmp_path):
    path = _log(tmp_path)
    anchor = _lines(path)[-1]["hash"]
    AuditLog(path).append("later")
    assert verify(path, expect_last=anchor).ok  # entries added after the anchor are fine
    entries = _lines(path)
    _write(path, entries[:2])
    assert verify(path).ok  # a cut tail is a valid chain: only the anchor catches it
    result = verify(path, expect_last=anchor[:16])
    assert not result.ok and "anchor" in result.problem


def test_hmac_key_from_file_and_env(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text("k3y\n")
    assert read_hmac_key(key_file) == b"k3y"
    monkeypatch.setenv("TUNEFORGE_AUDIT_HMAC_KEY", "envkey")
    assert read_hmac_key() == b"envkey"
    with pytest.raises(AuditError, match="cannot read"):
        read_hmac_key(tmp_path / "missing")


def test_appending_after_a_damaged_last_line_is_refused(tmp_path):
    path = _log(tmp_path, 2)
    with path.open("a") as f:
        f.write('{"seq": 3, "broken')
    with pytest.raises(AuditError, match="incomplete"):
        AuditLog(path).append("x")


def _append_many(path: str, n: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append("concurrent", details={"pid": os.getpid(), "i": i})


def test_two_processes_appending_at_once_keep_one_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), 40)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    entries = _lines(path)
    assert len(entries) == 80 and len({e["details"]["pid"] for e in entries}) == 2
    assert verify(path).ok


def test_audited_records_success_error_and_end_links_start(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    with audited(log, "train", {"run": "a"}) as act:
        act.artifacts = {"w": "abc"}
    with pytest.raises(ValueError):
        with audited(log, "train", {"run": "b"}):
            raise ValueError("boom")
    entries = _lines(log.path)
    assert [e["status"] for e in entries] == ["started", "success", "started", "error"]
    assert entries[1]["details"]["started"] == entries[0]["hash"] and entries[1]["details"]["artifacts"] == {"w": "abc"}
    assert entries[3]["details"]["error"] == "ValueError: boom"
    rows = action_rows(log.path)
    assert [(r.run, r.status) for r in rows] == [("a", "success"), ("b", "error: ValueError: boom")]
    assert [r.run for r in action_rows(log.path, run="b")] == ["b"]


_KILLED_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from tuneforge.security.audit import AuditLog, audited
    with audited(AuditLog(sys.argv[1]), "train", {"run": "victim"}):
        print("ready", flush=True)
        time.sleep(60)
""")


def _child(tmp_path, code):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "audit.jsonl")], stdout=subprocess.PIPE,
                            env=env, text=True)


def test_sigterm_is_recorded_as_killed(tmp_path):
    child = _child(tmp_path, _KILLED_CHILD)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == 128 + signal.SIGTERM
    entries = _lines(tmp_path / "audit.jsonl")
    assert [e["status"] for e in entries] == ["started", KILLED]
    assert action_rows(tmp_path / "audit.jsonl")[0].status.startswith("killed")


def test_sigkill_leaves_an_unfinished_action_that_show_reports(tmp_path):
    child = _child(tmp_path, _KILLED_CHILD)
    assert child.stdout.readline().strip() == "ready"
    assert action_rows(tmp_path / "audit.jsonl")[0].status == "running (unfinished)"
    child.kill()
    child.wait(30)
    assert [e["status"] for e in _lines(tmp_path / "audit.jsonl")] == ["started"]
    assert action_rows(tmp_path / "audit.jsonl")[0].status == "killed (unfinished, its process is gone)"
    assert verify(tmp_path / "audit.jsonl").ok


def test_cli_verify_exit_codes(tmp_path, capsys):
    from tuneforge.cli.main import main

    path = _log(tmp_path, key=b"secret")
    key_file = tmp_path / "key"
    key_file.write_text("secret")
    assert main(["audit", "verify", str(path), "--hmac-key-file", str(key_file)]) == 0
    assert "intact: 4 entries, hashes and HMACs" in capsys.readouterr().out
    entries = _lines(path)
    entries[1]["action"] = "nothing-to-see"
    _write(path, entries)
    assert main(["audit", "verify", str(path)]) == 1
    assert "BROKEN at entry seq 2 (line 2): edited" in capsys.readouterr().out
    assert main(["audit", "verify", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["audit", "show", str(path)]) == 0


def test_keys_create_and_revoke_are_audited_without_the_key(tmp_path):
    from tuneforge.security import create_key, revoke_key

    keys = tmp_path / "keys.json"
    key = create_key(keys, "ci")
    revoke_key(keys, "ci")
    text = (tmp_path / "audit.jsonl").read_text()
    assert key not in text
    assert [(e["action"], e["details"]["name"]) for e in _lines(tmp_path / "audit.jsonl")] == [
        ("key.create", "ci"), ("key.revoke", "ci")]


def test_env_var_moves_the_log(tmp_path, monkeypatch):
    from tuneforge.security import create_key

    monkeypatch.setenv("TUNEFORGE_AUDIT_LOG", str(tmp_path / "elsewhere" / "all.jsonl"))
    create_key(tmp_path / "keys.json", "ci")
    assert not (tmp_path / "audit.jsonl").exists() and verify(tmp_path / "elsewhere" / "all.jsonl").entries == 1


def test_an_action_error_is_not_hidden_by_a_failing_audit_log(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="the real problem"):
        with audited(log, "train", {"run": "a"}):
            log.path.unlink()
            log.path.mkdir()  # the end entry cannot be written now
            raise ValueError("the real problem")
    with pytest.raises(AuditError, match="cannot write the audit log"):
        with audited(AuditLog(tmp_path / "other.jsonl"), "train", {"run": "b"}):
            (tmp_path / "other.jsonl").unlink()
            (tmp_path / "other.jsonl").mkdir()  # success that cannot be recorded is an error


def test_show_names_what_each_action_was_about(tmp_path):
    from tuneforge.security.audit import record

    record(tmp_path, "key.create", {"name": "ci"})
    record(tmp_path, "request.refused", {"total": 7, "counts": []}, status="refused")
    rows = action_rows(tmp_path / "audit.jsonl")
    assert [(r.action, r.run, r.status) for r in rows] == [("key.create", "key ci", "success"),
                                                           ("request.refused", "7 requests", "refused")]


def test_no_key_is_created_when_the_audit_log_cannot_be_written(tmp_path):
    from tuneforge.security import create_key, read_keys

    (tmp_path / "audit.jsonl").mkdir()  # unwritable as a file
    with pytest.raises(AuditError):
        create_key(tmp_path / "keys.json", "ci")
    assert read_keys(tmp_path / "keys.json") == []
