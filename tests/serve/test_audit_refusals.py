"""Refused requests reach the audit log aggregated, with the key name but never the key or the prompt."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tuneforge.security.audit import verify
from tuneforge.serve import ServeLimits, create_app

PROMPT = "my secret prompt text"


def _entries(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_refusals_are_logged_in_aggregate_without_prompt_text(engine, keys_file):
    path, key = keys_file
    app = create_app(engine, keys=path, limits=ServeLimits(rate_per_minute=1))
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}
    with TestClient(app) as client:
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer tf-wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 429
        log = path.parent / "audit.jsonl"
        # The first refusal is written at once; the rest wait for the window (60 s) or shutdown.
        refused = [e for e in _entries(log) if e["action"] == "request.refused"]
        assert len(refused) == 1 and refused[0]["details"]["total"] == 1
    refused = [e for e in _entries(log) if e["action"] == "request.refused"]
    assert len(refused) == 2  # the shutdown wrote the rest in one entry
    counts = {(c["status"], c["code"], c["key"]): c["count"] for c in refused[1]["details"]["counts"]}
    assert counts == {(401, "invalid_api_key", "-"): 2, (429, "rate_limit_exceeded", "tester"): 1}
    text = log.read_text()
    assert PROMPT not in text and key not in text and "tf-wrong" not in text
    assert verify(log).ok


def test_refusal_counts_are_written_once_per_window(tmp_path):
    from tuneforge.security.audit import AuditLog
    from tuneforge.security.refusals import RefusalAudit

    log = AuditLog(tmp_path / "audit.jsonl")
    refusals = RefusalAudit(log, window_s=3600)
    for _ in range(1000):
        refusals.record(401, "invalid_api_key", "10.0.0.9")
    assert len(log.entries()) == 1  # a flood of refusals does not flood the log
    refusals.close()
    entries = log.entries()
    assert len(entries) == 2 and entries[1]["details"]["total"] == 999 and refusals.total == 1000
    refusals.close()  # nothing new: nothing written
    assert len(log.entries()) == 2
