"""The playground: two answers streamed from serve's engine (a run's base and tuned model, or two runs)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tuneforge.ui import create_app
from tuneforge.ui.playground import Playground, choices


def events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in filter(None, text.split("\n\n")):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


@pytest.fixture(scope="module")
def client(model_runs):
    with TestClient(create_app(model_runs, keys=None)) as c:
        yield c


def ask(client, **body) -> list[tuple[str, dict]]:
    body = {"prompt": "Where is my parcel?", "max_tokens": 12, **body}
    response = client.post("/api/playground", json=body)
    assert response.status_code == 200, response.text
    return events(response.text)


def test_choices_are_runs_with_weights(model_runs):
    assert sorted((c.run, c.adapter) for c in choices(model_runs)) == [("tuned-a", True), ("tuned-b", True)]


def test_base_and_tuned_answers_stream_and_differ(client):
    answers = {}
    for side in ("base", "tuned"):
        got = ask(client, run="tuned-a", side=side)
        assert [e for e, _ in got].count("delta") >= 2  # streamed in pieces, not one blob
        assert got[-1][0] == "done" and got[-1][1]["tokens"] == 12
        answers[side] = "".join(d["text"] for e, d in got if e == "delta")
    assert answers["base"] != answers["tuned"]
    assert ask(client, run="tuned-b", side="base") == ask(client, run="tuned-a", side="base")  # one shared base


def test_adapter_runs_share_one_engine(model_runs):
    playground = Playground(model_runs)
    try:
        engine_a, name_a = playground.engine_for("tuned-a", "tuned")
        engine_b, name_b = playground.engine_for("tuned-b", "base")
        assert engine_a is engine_b and (name_a, name_b) == ("tuned-a", "base")
    finally:
        playground.close()


def test_bad_requests_are_refused_clearly(client):
    assert client.post("/api/playground", json={"run": "tuned-a", "side": "tuned", "prompt": "x", "nope": 1}).status_code == 422
    assert client.post("/api/playground", json={"run": "tuned-a", "side": "tuned", "prompt": "x", "temperature": 9}).status_code == 422
    bad = client.post("/api/playground", json={"run": "..", "side": "tuned", "prompt": "x"})
    assert bad.status_code == 400 and "expected a folder name" in bad.text
    (event, data), = ask(client, run="no-weights", side="tuned")
    assert event == "error" and "has no trained weights" in data["message"]


def test_playground_page_offers_base_and_tuned_of_each_run(client):
    page = client.get("/playground").text
    assert 'value="tuned-a|base"' in page and 'value="tuned-a|tuned"' in page and "no-weights" not in page
