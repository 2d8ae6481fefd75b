"""A reward model served on ``POST /v1/rewards``: scores as the scorer gives them, same keys, limits and metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tuneforge.serve import ServeLimits, create_app

from ..conftest import REWARD_MARK

REWARDS = "/v1/rewards"
PROMPT = "Classify the ticket: where is my parcel 77"


@pytest.fixture(scope="module")
def service(reward_run):
    from tuneforge.serve.app import _load_served

    # The function behind `tuneforge serve RUN`: a reward run is served by its scorer, not an engine.
    return _load_served(reward_run, adapters=None, name="rm", batching=None, trust_remote_code=False)


@pytest.fixture
def client(service, keys_file):
    path, key = keys_file
    with TestClient(create_app(service, keys=path, limits=ServeLimits(max_n=3, max_prompt_tokens=120))) as c:
        c.headers["Authorization"] = f"Bearer {key}"
        yield c


def test_rewards_match_the_scorer_and_rank_the_marked_answer_first(client, service):
    inputs = [{"prompt": PROMPT, "completion": f"{REWARD_MARK} shipping"},
              {"prompt": [{"role": "user", "content": PROMPT}], "completion": "shipping"}]
    resp = client.post(REWARDS, json={"model": "rm", "input": inputs})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "rm" and [d["index"] for d in body["data"]] == [0, 1]
    scores = [d["score"] for d in body["data"]]
    assert scores == pytest.approx(service.scorer.score([PROMPT, PROMPT], [f"{REWARD_MARK} shipping", "shipping"]), abs=1e-5)
    assert scores[0] > scores[1] and body["usage"]["prompt_tokens"] > 10
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["rm"]
    metrics = client.get("/metrics").text
    assert 'tuneforge_requests_total{route="/v1/rewards",status="200"} 1.0' in metrics
    assert 'tuneforge_prompt_tokens_total{model="rm"}' in metrics


def test_a_reward_model_refuses_generation_and_the_limits_apply(client):
    one = {"prompt": PROMPT, "completion": "shipping"}
    resp = client.post("/v1/chat/completions", json={"model": "rm", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "model_is_reward_model"
    assert "POST /v1/rewards" in resp.json()["error"]["message"]
    resp = client.post(REWARDS, json={"model": "rm", "input": [one] * 4})
    assert resp.status_code == 400 and "limit of 3" in resp.json()["error"]["message"]
    resp = client.post(REWARDS, json={"model": "rm", "input": [{"prompt": "x " * 300, "completion": "y"}]})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "context_length_exceeded"
    resp = client.post(REWARDS, json={"model": "other", "input": [one]})
    assert resp.status_code == 404
    resp = client.post(REWARDS, json={"model": "rm", "input": [{"prompt": PROMPT}]})
    assert resp.status_code == 400 and "completion" in resp.text
    resp = client.post(REWARDS, json={"model": "rm", "input": [one]}, headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401


def test_a_generative_model_refuses_rewards(engine, keys_file):
    path, key = keys_file
    with TestClient(create_app(engine, keys=path)) as c:
        resp = c.post(REWARDS, json={"model": "tiny", "input": [{"prompt": "a", "completion": "b"}]},
                      headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "not_a_reward_model"
