"""API key scopes on the server: allowed models and adapters, expiry, and the admin scope for /metrics."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tuneforge.security import create_key
from tuneforge.serve import create_app

CHAT = "/v1/chat/completions"


def _chat(model):
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}


@pytest.fixture
def keys(tmp_path):
    path = tmp_path / "keys.json"
    return path, {
        "all": create_key(path, "all"),
        "only-a": create_key(path, "only-a", models=["lora-a"]),
        "admin": create_key(path, "ops", admin=True),
    }


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def test_scoped_key_calls_only_its_models(engine, keys):
    path, k = keys
    with TestClient(create_app(engine, keys=path)) as c:
        assert c.post(CHAT, json=_chat("lora-a"), headers=_auth(k["only-a"])).status_code == 200
        resp = c.post(CHAT, json=_chat("tiny"), headers=_auth(k["only-a"]))
        assert resp.status_code == 403
        err = resp.json()["error"]
        assert err["type"] == "permission_error" and err["code"] == "model_not_allowed" and err["param"] == "model"
        resp = c.post("/v1/completions", json={"model": "lora-b", "prompt": "x", "max_tokens": 1},
                      headers=_auth(k["only-a"]))
        assert resp.status_code == 403
        assert c.post(CHAT, json=_chat("lora-b"), headers=_auth(k["all"])).status_code == 200


def test_models_list_shows_only_allowed_models(engine, keys):
    path, k = keys
    with TestClient(create_app(engine, keys=path)) as c:
        ids = [m["id"] for m in c.get("/v1/models", headers=_auth(k["only-a"])).json()["data"]]
        assert ids == ["lora-a"]
        ids = [m["id"] for m in c.get("/v1/models", headers=_auth(k["all"])).json()["data"]]
        assert ids == ["tiny", "lora-a", "lora-b"]
        # An unknown model's 404 lists only what this key may use.
        resp = c.post(CHAT, json=_chat("gpt-9"), headers=_auth(k["only-a"]))
        assert resp.status_code == 404 and "lora-b" not in resp.json()["error"]["message"]


def test_expired_key_is_401(engine, keys):
    path, k = keys
    data = json.loads(path.read_text())
    data["keys"][0]["expires"] = "2001-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))
    with TestClient(create_app(engine, keys=path)) as c:
        resp = c.get("/v1/models", headers=_auth(k["all"]))
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "expired_api_key"
        assert c.get("/v1/models", headers=_auth(k["admin"])).status_code == 200


def test_metrics_need_an_admin_key_off_loopback(engine, keys):
    path, k = keys
    with TestClient(create_app(engine, keys=path, host="0.0.0.0")) as c:
        assert c.get("/metrics").status_code == 401
        resp = c.get("/metrics", headers=_auth(k["all"]))
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "admin_required"
        resp = c.get("/metrics", headers=_auth(k["admin"]))
        assert resp.status_code == 200 and "tuneforge_requests_total" in resp.text
        assert c.get("/health").status_code == 200  # health stays public


def test_metrics_stay_public_on_loopback(engine, keys):
    path, _ = keys
    with TestClient(create_app(engine, keys=path, host="127.0.0.1")) as c:
        assert c.get("/metrics").status_code == 200
