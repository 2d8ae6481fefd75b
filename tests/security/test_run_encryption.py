"""An encrypted tiny-model run: no plaintext data left anywhere, and every reader decrypts (or says why it cannot)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuneforge import finetune, load_config
from tuneforge.cli.main import main
from tuneforge.rundir import RunDir
from tuneforge.security import read_file
from tuneforge.security.at_rest import is_plain
from tuneforge.security.crypto import MAGIC, is_encrypted, read_key_file

from tests.security.conftest import CANARY, KEY_ENV, canary_rows as _canary_rows, new_key as _key, scan as _scan


def test_no_canary_is_left_in_plaintext(encrypted_run):
    run, outer_tmp, _ = encrypted_run
    assert run.test_split.is_file() and (run.eval / "predictions.jsonl").is_file()
    assert _scan(run.root) == []
    assert _scan(outer_tmp) == []
    assert not (run.root / ".tmp").exists()  # the run's own temp folder is removed at the end
    assert oct(run.root.stat().st_mode & 0o777) == "0o700"


def test_every_file_but_the_plain_ones_is_encrypted(encrypted_run):
    run, _, _ = encrypted_run
    for path in run.root.rglob("*"):
        relative = path.relative_to(run.root).as_posix()
        in_weights = relative.startswith(("adapter/", "model/", "merged/", "checkpoints/"))
        holds_weights = path.suffix in (".safetensors", ".pt", ".pth", ".bin")  # beside them: configs, tokenizer
        if path.is_file() and not is_plain(relative) and (not in_weights or holds_weights):
            assert is_encrypted(path), relative
    for name in ("data/test.jsonl", "data/validation.jsonl", "data_report.json", "eval/predictions.jsonl",
                 "eval/report.md", "eval/report.html", "adapter/adapter_model.safetensors"):
        assert (run.root / name).read_bytes().startswith(MAGIC), name


def test_readers_decrypt_with_the_key_the_run_names(run_key):
    run = run_key
    rows = [json.loads(line) for line in read_file(run.test_split).decode().splitlines()]
    assert rows and all(CANARY in m["content"] for r in rows for m in r["messages"] if m["role"] == "user")
    report = json.loads(read_file(run.data_report))
    assert report["sources"]
    assert main(["report", str(run.root)]) == 0
    assert read_file(run.eval / "report.md").decode().startswith("#")
    assert is_encrypted(run.eval / "report.html")


def test_no_key_and_wrong_key_are_clear_errors(encrypted_run, monkeypatch, capsys):
    run, _, _ = encrypted_run
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert main(["report", str(run.root)]) == 2
    err = capsys.readouterr().err
    assert "predictions.jsonl is encrypted" in err and "Traceback" not in err
    monkeypatch.setenv(KEY_ENV, _key())
    assert main(["report", str(run.root)]) == 2
    err = capsys.readouterr().err
    assert "cannot decrypt" in err and "predictions.jsonl: wrong key" in err


def test_a_key_given_on_the_command_line_comes_before_the_one_the_run_names(encrypted_run, monkeypatch, tmp_path, capsys):
    """A run copied to another machine: the key source its config names is not there, `--key-file` is."""
    run, _, key = encrypted_run
    monkeypatch.delenv(KEY_ENV, raising=False)
    key_file = tmp_path / "run.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    assert main(["--key-file", str(key_file), "report", str(run.root)]) == 0
    assert read_file(run.eval / "report.md", read_key_file(key_file)).decode().startswith("#")
    assert main(["report", str(run.root)]) == 2  # the option held for that one command only
    assert "is encrypted" in capsys.readouterr().err
    wrong = tmp_path / "wrong.key"
    wrong.write_text(_key() + "\n")
    wrong.chmod(0o600)
    assert main(["--key-file", str(wrong), "report", str(run.root)]) == 2
    assert "wrong key" in capsys.readouterr().err


def test_encrypted_data_file_trains(tmp_path, tiny_model_dir, monkeypatch):
    """A data file encrypted with `tuneforge encrypt` is read in memory with the run's key."""
    key = _key()
    monkeypatch.setenv(KEY_ENV, key)
    plain = _canary_rows(tmp_path / "rows.jsonl", 24)
    assert main(["encrypt", str(plain), "--key-env", KEY_ENV]) == 0
    plain.unlink()
    cfg = {
        "name": "encdata", "out_dir": str(tmp_path / "runs"), "model": str(tiny_model_dir),
        "method": {"name": "lora", "r": 2, "alpha": 4, "target_modules": "all-linear"},
        "data": {"train": str(tmp_path / "rows.jsonl.enc"), "split": {"validation": 0.1, "test": 0.1}},
        "training": {"max_steps": 1, "per_device_batch_size": 2, "max_seq_length": 96, "precision": "fp32",
                     "eval_strategy": "no", "save_strategy": "no"},
        "eval": {"enabled": False},
        "security": {"encrypt": True, "key_env": KEY_ENV},
    }
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    result = finetune(load_config(tmp_path / "x.yaml"))
    assert json.loads(read_file(RunDir(result.run_dir).data_report))["totals"]["rows_kept"] == 24
    assert _scan(Path(result.run_dir)) == []
    monkeypatch.setenv(KEY_ENV, _key())
    from tuneforge.errors import SecurityError

    with pytest.raises(SecurityError, match=r"rows.jsonl.enc: wrong key"):
        finetune(load_config(tmp_path / "x.yaml").model_copy(update={"name": "other"}))


def test_dashboard_shows_an_encrypted_run_without_its_rows(encrypted_run):
    """The dashboard holds no key: an encrypted run's pages load, with no predictions or data rows shown."""
    from fastapi.testclient import TestClient

    from tuneforge.ui.app import create_app

    run, _, _ = encrypted_run
    with TestClient(create_app(run.root.parent, keys=None)) as client:
        for page in (f"/runs/{run.root.name}", f"/runs/{run.root.name}/predictions", f"/runs/{run.root.name}/data"):
            response = client.get(page)
            assert response.status_code == 200, page
            assert CANARY not in response.text
            # said, not left to guess from empty tables
            assert 'class="state encrypted"' in response.text or 'id="encrypted-note"' in response.text, page
            assert 'id="encrypted-note"' in response.text, page
        listing = client.get("/").text
        assert 'class="state encrypted"' in listing
        assert [r["encrypted"] for r in client.get("/api/runs").json() if r["name"] == run.root.name] == [True]
