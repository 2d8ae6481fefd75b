"""Sequence-level distillation: the teacher's answers become SFT data, cached in the run, failures counted."""

from __future__ import annotations

import json
import socket

import pytest
import yaml
from rich.console import Console

from tuneforge import finetune, load_config
from tuneforge.cli.main import main
from tuneforge.distill.sequence import CACHE, load_prompts
from tuneforge.errors import DataError
from tests.train.conftest import write_tickets


def config(tmp_path, tiny_model_dir, teacher, name="seq", **distill):
    data = write_tickets(tmp_path / "tickets.jsonl", n=40)
    return load_config(data={
        "name": name, "out_dir": str(tmp_path / "runs"), "model": str(tiny_model_dir),
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "data": {"train": str(data), "split": {"validation": 0.1, "test": 0.1}},
        "training": {"objective": "distill", "max_steps": 3, "per_device_batch_size": 2, "learning_rate": 1e-3,
                     "logging_steps": 1, "save_steps": 100, "max_seq_length": 128, "precision": "fp32"},
        "eval": {"enabled": False},
        "distill": {"teacher": teacher, "max_new_tokens": 6, "max_retries": 1, "backoff_seconds": 0, **distill},
    })


def test_a_killed_run_resumes_without_asking_again_and_failures_are_counted(served, tmp_path, tiny_model_dir, monkeypatch):
    from tuneforge.distill.sequence import answered_data
    from tuneforge.train import steps
    from tuneforge.train.context import RunContext

    url, key, proxy = served
    monkeypatch.setenv("TEACHER_KEY", key)
    monkeypatch.setattr(proxy, "every", 10**9)  # only the poisoned prompts fail here (retries: see test_teacher.py)
    cfg = config(tmp_path, tiny_model_dir, {"base_url": url + "/v1", "api_key_env": "TEACHER_KEY", "model": "tiny"})
    console = Console(quiet=True)
    # First attempt: every answer arrives and is cached, then the run dies before training.
    with pytest.raises(KeyboardInterrupt), RunContext.open(cfg) as ctx:
        model, tokenizer, _ = steps.load_base(cfg)
        prepared = steps.prepare_data(ctx, cfg, tokenizer, console)
        train_prompts = [ex["messages"][-2]["content"] for ex in prepared.train_examples]
        _, first = answered_data(ctx, cfg, tokenizer, prepared, console)
        raise KeyboardInterrupt
    poisoned = sum("refund" in p for p in train_prompts)
    assert 0 < poisoned < len(train_prompts) and first["failed"] == poisoned
    cached = list((cfg.run_dir / CACHE).glob("*.json"))
    assert len(cached) == first["answered"] == len(train_prompts) - poisoned

    answered_before = len(proxy.prompts_answered)
    result = finetune(cfg)
    assert len(proxy.prompts_answered) == answered_before  # nothing answered before was asked again
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["teacher_answers"] == {"prompts": len(train_prompts), "cached": len(cached),
                                           "asked": poisoned, "answered": len(cached), "failed": poisoned}
    report = json.loads((result.run_dir / "data_report.json").read_text())
    (source,) = report["sources"]
    assert source["drops"]["teacher_failed"]["count"] == poisoned
    assert "HTTP 500 after 2 attempts" in source["drops"]["teacher_failed"]["examples"][0]
    assert source["rows_read"] == source["rows_kept"] + source["dropped"]
    assert report["splits"]["train"] == len(cached)


def test_a_local_teacher_answers_a_prompt_file(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("where is my parcel 12\n\nplease refund order 7\nmy account 3 is locked\n")
    result = finetune(config(tmp_path, tiny_model_dir, str(tiny_model_dir), mode="sequence", prompts=str(prompts)))
    report = json.loads((result.run_dir / "data_report.json").read_text())
    by_path = {s["path"]: s for s in report["sources"]}
    assert by_path[str(prompts)]["rows_read"] == 3 and report["splits"]["train"] == 3
    answers = [json.loads(p.read_text()) for p in (result.run_dir / CACHE).glob("*.json")]
    assert sorted(a["messages"][-1]["content"] for a in answers) == sorted(
        ["where is my parcel 12", "please refund order 7", "my account 3 is locked"])


def test_an_unreachable_teacher_stops_the_run_with_a_clear_message(tmp_path, tiny_model_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config(tmp_path, tiny_model_dir, {"base_url": f"http://127.0.0.1:{port}/v1"})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the teacher endpoint http://127.0.0.1:{port}/v1" in err and "Traceback" not in err


def test_a_bad_prompt_file_names_file_and_line(tmp_path):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"question": "no prompt field"}\n')
    with pytest.raises(DataError, match=rf"{bad}:2: field 'prompt'"):
        load_prompts(bad)
    with pytest.raises(DataError, match="file not found"):
        load_prompts(tmp_path / "missing.txt")


def test_a_missing_teacher_or_prompt_file_is_found_before_anything_loads(tmp_path, tiny_model_dir):
    from tuneforge import ConfigError
    from tuneforge.config.preflight import preflight

    cfg = config(tmp_path, tiny_model_dir, str(tmp_path / "runs" / "no-such-teacher"), prompts=str(tmp_path / "p.txt"))
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    assert "distill.teacher: model path not found" in str(info.value)
    assert "distill.prompts: prompt file not found" in str(info.value)
    assert not cfg.run_dir.exists()
