"""The HTTP API in-process (fastapi.testclient): errors in OpenAI's shape, limits, metrics, decoding options."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from tuneforge.serve import ServeLimits, create_app

CHAT = "/v1/chat/completions"


def _chat(model="tiny", **kw):
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 6, **kw}


@pytest.fixture
def client(engine, keys_file):
    path, key = keys_file
    app = create_app(engine, keys=path, limits=ServeLimits(max_tokens=64, max_prompt_tokens=200, max_body_bytes=4096))
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {key}"
        yield c


def _error(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in resp.text
    return body["error"]


def test_chat_completion_shape_and_usage(client):
    resp = client.post(CHAT, json=_chat(temperature=0))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and 1 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_malformed_json_is_400(client):
    resp = client.post(CHAT, content=b'{"model": "tiny", "messages": [', headers={"Content-Type": "application/json"})
    err = _error(resp, 400)
    assert err["type"] == "invalid_request_error" and "JSON" in err["message"]


@pytest.mark.parametrize("field,value", [
    ("max_tokens", "many"), ("temperature", "hot"), ("temperature", 5), ("n", 0), ("messages", "hi"),
    ("stop", ["a", "b", "c", "d", "e"]), ("top_p", 0),
])
def test_wrong_types_and_ranges_are_400_naming_the_field(client, field, value):
    err = _error(client.post(CHAT, json=_chat(**{field: value})), 400)
    assert err["param"] is not None and err["param"].startswith(field)


def test_missing_field_is_400(client):
    err = _error(client.post(CHAT, json={"model": "tiny"}), 400)
    assert err["param"] == "messages"


def test_huge_max_tokens_is_400(client):
    err = _error(client.post(CHAT, json=_chat(max_tokens=10**9)), 400)
    assert err["param"] == "max_tokens" and err["code"] == "max_tokens_too_large" and "64" in err["message"]


def test_prompt_over_limit_is_400(client):
    long = {"role": "user", "content": "refund " * 400}
    err = _error(client.post(CHAT, json={"model": "tiny", "messages": [long], "max_tokens": 4}), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"


def test_unknown_model_is_404(client):
    err = _error(client.post(CHAT, json=_chat(model="gpt-17")), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model" and "lora-a" in err["message"]


def test_unknown_route_is_404_in_openai_shape(client):
    _error(client.get("/v1/nothing"), 404)


@pytest.mark.parametrize("chunked", [False, True])
def test_body_too_large_is_413(client, chunked):
    payload = json.dumps(_chat(messages=[{"role": "user", "content": "x" * 10_000}])).encode()
    content = iter([payload[:5000], payload[5000:]]) if chunked else payload  # an iterator is sent chunked
    resp = client.post(CHAT, content=content, headers={"Content-Type": "application/json"})
    assert _error(resp, 413)["code"] == "request_too_large"


def test_missing_and_wrong_key_are_401(client):
    del client.headers["Authorization"]
    assert _error(client.post(CHAT, json=_chat()), 401)["code"] == "missing_api_key"
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer tf-nope"})
    assert _error(wrong, 401)["code"] == "invalid_api_key"
    assert _error(client.post(CHAT, json=_chat(), headers={"Authorization": "Basic abc"}), 401)


def test_auth_comes_before_body_validation(client):
    del client.headers["Authorization"]
    _error(client.post(CHAT, content=b"not json", headers={"Content-Type": "application/json"}), 401)


def test_revoked_key_is_refused_without_restart(client, keys_file):
    from tuneforge.security import revoke_key

    path, _ = keys_file
    assert client.get("/v1/models").status_code == 200
    revoke_key(path, "tester")
    _error(client.get("/v1/models"), 401)


def test_health_and_models(client):
    health = client.get("/health", headers={"Authorization": ""})
    assert health.status_code == 200 and health.json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny", "lora-a", "lora-b"]
    assert models["data"][1]["parent"] == "tiny"


def test_metrics_after_requests(client):
    client.post(CHAT, json=_chat(temperature=0))
    client.post(CHAT, json=_chat(model="nope"))
    del client.headers["Authorization"]
    client.get("/v1/models")
    text = client.get("/metrics").text
    assert 'tuneforge_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'tuneforge_requests_total{route="/v1/chat/completions",status="404"} 1.0' in text
    assert 'tuneforge_errors_total{type="authentication_error"} 1.0' in text
    assert 'tuneforge_errors_total{type="invalid_request_error"} 1.0' in text
    assert 'tuneforge_generated_tokens_total{model="tiny"}' in text
    assert 'tuneforge_time_to_first_token_seconds_count{model="tiny"} 1.0' in text
    assert "tuneforge_batch_size_count 1.0" in text
    assert "tuneforge_requests_in_flight 1.0" in text  # the /metrics request itself
    assert 'tuneforge_request_latency_seconds_count{route="/v1/chat/completions",status="200"} 1.0' in text


def test_stop_string_cuts_the_output(client):
    base = client.post(CHAT, json=_chat(max_tokens=12, temperature=1.0, seed=7)).json()
    base = base["choices"][0]["message"]["content"]
    assert len(base) >= 4
    stop = base[len(base) // 2: len(base) // 2 + 2]
    cut = base.find(stop)
    resp = client.post(CHAT, json=_chat(max_tokens=12, temperature=1.0, seed=7, stop=[stop, "never-seen"])).json()
    assert resp["choices"][0]["message"]["content"] == base[:cut]
    assert resp["choices"][0]["finish_reason"] == "stop"


def test_n_choices(client):
    body = client.post(CHAT, json=_chat(n=2, temperature=1.0, max_tokens=8)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert 2 <= body["usage"]["completion_tokens"] <= 16


def test_n_over_limit_is_400(client):
    assert _error(client.post(CHAT, json=_chat(n=9)), 400)["param"] == "n"


def test_seed_is_reproducible(client):
    def text(seed):
        body = client.post("/v1/completions", json={"model": "tiny", "prompt": "The quick", "max_tokens": 10,
                                                   "temperature": 1.0, "seed": seed}).json()
        return body["choices"][0]["text"]

    assert text(11) == text(11)
    assert text(11) != text(12)


def test_completions_with_several_prompts(client):
    body = client.post("/v1/completions", json={"model": "lora-a", "prompt": ["a", "b c"], "n": 2, "max_tokens": 3,
                                                "temperature": 0}).json()
    assert body["object"] == "text_completion" and [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["choices"][0]["text"] == body["choices"][1]["text"]  # greedy: both choices of a prompt agree


def test_streaming_sse_format(client):
    with client.stream("POST", CHAT, json=_chat(stream=True, stream_options={"include_usage": True})) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


def test_no_cors_by_default_and_cors_when_asked(engine):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(engine, keys=None)) as c:
        assert "access-control-allow-origin" not in c.options(CHAT, headers=preflight).headers
    with TestClient(create_app(engine, keys=None, cors_origins=["https://app.example"])) as c:
        assert c.options(CHAT, headers=preflight).headers["access-control-allow-origin"] == "https://app.example"


def test_access_log_has_key_name_not_key_nor_prompt(client, keys_file, caplog):
    _, key = keys_file
    with caplog.at_level(logging.INFO, logger="tuneforge.serve.access"):
        client.post(CHAT, json=_chat(messages=[{"role": "user", "content": "my secret question"}]))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tuneforge.serve.access"]
    assert lines[-1]["key"] == "tester" and lines[-1]["route"] == CHAT and lines[-1]["status"] == 200
    assert lines[-1]["model"] == "tiny" and lines[-1]["completion_tokens"] >= 1 and lines[-1]["prompt_tokens"] > 0
    assert key not in caplog.text and "secret question" not in caplog.text


def test_access_log_with_log_prompts(engine, caplog):
    with TestClient(create_app(engine, keys=None, log_prompts=True)) as c, \
            caplog.at_level(logging.INFO, logger="tuneforge.serve.access"):
        c.post(CHAT, json=_chat(messages=[{"role": "user", "content": "my secret question"}]))
    assert "secret question" in caplog.text
