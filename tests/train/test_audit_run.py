"""A tiny training run end to end through the audit log: show lists it with its hashes, verify passes, tampering fails."""

from __future__ import annotations

import hashlib
import json

import pytest

from tuneforge import RunDirError, finetune, load_config
from tuneforge.cli.main import main
from tuneforge.data.load import source_digest
from tuneforge.rundir import RunDir


def test_a_run_is_audited_from_start_to_end(run_config, capsys):
    cfg = load_config(run_config())
    result = finetune(cfg)
    log = cfg.run_dir.parent / "audit.jsonl"
    start, end = [json.loads(line) for line in log.read_text().splitlines()]
    run = RunDir(result.run_dir)
    data_file = cfg.data.train[0].path
    details = start["details"]
    assert (start["action"], start["status"], end["status"]) == ("train", "started", "success")
    assert details["data_sha256"] == {data_file: source_digest(data_file)}
    assert details["config_sha256"] == hashlib.sha256(run.config.read_bytes()).hexdigest()  # the config it wrote
    assert details["config"] == run.config.read_text()
    assert details["base_model"]["sha256"] == source_digest(cfg.model.name_or_path)
    weights = end["details"]["artifacts"][str(run.adapter.resolve())]
    assert weights["adapter_model.safetensors"] == source_digest(run.adapter / "adapter_model.safetensors")
    assert end["details"]["started"] == start["hash"] and end["details"]["global_step"] == 6

    assert main(["audit", "show", str(log), "--run", "tiny"]) == 0
    shown = capsys.readouterr().out
    assert "tiny" in shown and source_digest(data_file)[:12] in shown and "success" in shown
    assert main(["audit", "verify", str(log)]) == 0

    # Someone rewrites who trained it: verify names the entry.
    start["actor"]["user"] = "somebody-else"
    log.write_text(json.dumps(start) + "\n" + json.dumps(end) + "\n")
    capsys.readouterr()
    assert main(["audit", "verify", str(log)]) == 1
    assert "entry seq 1 (line 1): edited" in capsys.readouterr().out


def test_a_failed_run_is_audited_as_error(run_config):
    path = run_config()
    finetune(load_config(path))
    with pytest.raises(RunDirError):  # the finished run under another config: refused
        finetune(load_config(path, ["training.learning_rate=0.1"]))
    cfg = load_config(path)
    entries = [json.loads(line) for line in (cfg.run_dir.parent / "audit.jsonl").read_text().splitlines()]
    assert [e["status"] for e in entries] == ["started", "success", "started", "error"]
    assert entries[-1]["details"]["error"].startswith("RunDirError: ")
