"""Exports started from a run's page: refusals with their reason, output inside the run folder."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from fastapi.testclient import TestClient

from tests.ui.fake_runs import write_run
from tuneforge.ui import create_app
from tuneforge.ui.exports import Exporter


def wait_export(exporter, name, kind, timeout=240):
    deadline = time.monotonic() + timeout
    while (job := exporter.job(name, kind)).state == "running":
        assert time.monotonic() < deadline, f"{kind} export of {name} still running"
        time.sleep(0.5)
    return job


def test_unfinished_run_and_unknown_kind_are_refused_with_the_reason(runs_dir):
    with TestClient(create_app(runs_dir, keys=None)) as client:
        page = client.post("/runs/beta/export", data={"kind": "hf"})
        assert page.status_code == 409 and "run &#39;beta&#39; is failed: only a finished run can be exported" in page.text
        assert client.post("/runs/alpha/export", data={"kind": "zip"}).status_code == 409
        assert client.post("/runs/..%2F..%2Fetc/export", data={"kind": "hf"}).status_code in (400, 404)
        hostile = client.post("/runs/alpha/export", data={"kind": "hf"}, headers={"Origin": "https://evil.example"})
        assert hostile.status_code == 403
    assert not (runs_dir / ".launch" / "exports").exists()  # nothing started


def test_gguf_of_a_non_llama_model_is_refused_before_starting(tmp_path):
    base = tmp_path / "gpt2ish"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    runs = tmp_path / "runs"
    run = write_run(runs, "other-arch")
    (run / "config.yaml").write_text(f"name: other-arch\nmodel:\n  name_or_path: {base}\nmethod:\n  name: lora\n")
    with TestClient(create_app(runs, keys=None)) as client:
        page = client.post("/runs/other-arch/export", data={"kind": "gguf-q8_0"})
        assert page.status_code == 409
        assert "GGUF export does not support the architecture &#39;GPT2LMHeadModel&#39;" in page.text
    assert not (runs / ".launch" / "exports").exists()


@pytest.mark.slow
def test_export_the_tiny_run_to_hf_inside_its_folder_and_a_failure_shows_why(finished_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(finished_run, runs / "tiny")
    with TestClient(create_app(runs, keys=None)) as client:
        assert client.post("/runs/tiny/export", data={"kind": "hf"}, follow_redirects=False).status_code == 303
        exporter = Exporter(runs)
        job = wait_export(exporter, "tiny", "hf")
        assert job.state == "finished", job.message
        assert job.output == runs / "tiny" / "export" / "hf" and "model.safetensors" in job.files
        assert (runs / "tiny" / "export" / "hf" / "config.json").is_file()
        page = client.get("/runs/tiny")
        assert 'data-kind="hf" data-state="finished"' in page.text and "model.safetensors" in page.text
        assert [j["state"] for j in client.get("/api/runs/tiny/exports").json()] == ["finished", "none", "none"]
        assert "tiny" in [r["name"] for r in client.get("/api/runs").json()] and len(client.get("/api/runs").json()) == 1

        # The command's own refusal ends the job; its last line is the reason shown.
        shutil.rmtree(runs / "tiny" / "adapter")
        client.post("/runs/tiny/export", data={"kind": "gguf-f16"})
        job = wait_export(exporter, "tiny", "gguf-f16")
        assert job.state == "failed" and "has no trained weights yet" in job.message, job.message
        assert 'data-state="failed"' in client.get("/runs/tiny").text


@pytest.mark.slow
def test_gguf_q8_0_of_the_tiny_llama_run_lands_in_its_own_folder(finished_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(finished_run, runs / "tiny")
    with TestClient(create_app(runs, keys=None)) as client:
        assert client.post("/runs/tiny/export", data={"kind": "gguf-q8_0"}, follow_redirects=False).status_code == 303
        job = wait_export(Exporter(runs), "tiny", "gguf-q8_0")
    assert job.state == "finished", job.message
    assert job.output == runs / "tiny" / "export" / "gguf-q8_0"
    assert {"model-q8_0.gguf", "Modelfile", "README.md"} <= set(job.files)
