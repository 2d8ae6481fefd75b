"""Hostile clients and operators' mistakes against the server: no 500s, no held connections, no stale keys."""

from __future__ import annotations

import json
import socket
import time

import pytest
from fastapi.testclient import TestClient

from tests.serve.conftest import engine, keys_file, lora_dirs  # noqa: F401  (fixtures)
from tests.serve.test_api import client  # noqa: F401  (an authenticated TestClient over the tiny engine)
from tuneforge.cli.main import main
from tuneforge.errors import ConfigError
from tuneforge.serve import ServeLimits, background_server, create_app

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def _chat(**kw):
    return {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, **kw}


def _completion(**kw):
    return {"model": "tiny", "prompt": "The quick", "max_tokens": 3, **kw}


def _error(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize("route,body,param", [
    (CHAT, _chat(seed=2**70), "seed"),
    (CHAT, _chat(seed=-(2**63) - 1), "seed"),
    (COMPLETIONS, _completion(prompt=""), "prompt"),
    (COMPLETIONS, _completion(prompt=["a", ""]), "prompt"),
    (CHAT, _chat(n=10**30), "n"),
    (CHAT, _chat(max_tokens=10**30), "max_tokens"),
    (CHAT, _chat(max_tokens=-1), "max_tokens"),
    (CHAT, _chat(temperature=-0.5), "temperature"),
    (CHAT, _chat(top_p=-1), "top_p"),
    (CHAT, _chat(stop=["x"] * 5), "stop"),
    (CHAT, _chat(stop=["x" * 1_000]), "stop"),
    (CHAT, _chat(stream="yes"), "stream"),
])
def test_bad_values_are_400_not_500(client, route, body, param):
    err = _error(client.post(route, json=body), 400)
    assert err["type"] == "invalid_request_error" and err["param"].startswith(param)


@pytest.mark.parametrize("route,field", [
    (CHAT, "max_tokens"), (CHAT, "max_completion_tokens"), (CHAT, "n"), (CHAT, "seed"),
    (COMPLETIONS, "max_tokens"), (COMPLETIONS, "n"), (COMPLETIONS, "seed"),
])
@pytest.mark.parametrize("value", [True, False, "3", 2.0])
def test_int_fields_are_strict(client, route, field, value):
    body = (_chat if route == CHAT else _completion)(**{field: value})
    err = _error(client.post(route, json=body), 400)
    assert err["param"] == field and "valid integer" in err["message"]


@pytest.mark.parametrize("field,literal", [("temperature", "NaN"), ("temperature", "Infinity"), ("top_p", "-Infinity")])
def test_nan_and_infinity_are_400(client, field, literal):
    # Python's JSON parser (behind FastAPI) accepts these non-standard literals.
    raw = json.dumps(_chat())[:-1] + f', "{field}": {literal}}}'
    err = _error(client.post(CHAT, content=raw, headers={"Content-Type": "application/json"}), 400)
    assert err["param"] == field and "finite" in err["message"]


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-9])
def test_tiny_temperature_decodes_greedily_instead_of_failing(client, temperature):
    resp = client.post(CHAT, json=_chat(temperature=temperature, max_tokens=4))
    greedy = client.post(CHAT, json=_chat(temperature=0, max_tokens=4))
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == greedy.json()["choices"][0]["message"]["content"]


def test_extreme_seeds_inside_int64_work(client):
    for seed in (2**63 - 1, -(2**63), 0):
        assert client.post(CHAT, json=_chat(seed=seed, temperature=1.0)).status_code == 200


# ----------------------------------------------------------------------------- slow body (real server)


def _raw_request(port: int, head: str, body: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send a request head and part of a body on a raw socket; return what comes back and how long it took."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except socket.timeout:
            pass
    return data, time.monotonic() - start


def test_slow_body_gets_408_and_the_connection_is_freed(engine, keys_file):  # noqa: F811
    path, key = keys_file
    app = create_app(engine, keys=path, limits=ServeLimits(body_timeout_s=1.0))
    with background_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        head = (f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        data, took = _raw_request(port, head, b'{"mo', wait_s=8)
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 408"), data[:300]
    assert b'"code":"request_timeout"' in data
    assert 0.9 <= took < 6  # answered after the 1 s limit, and the server closed the connection


def test_whole_body_in_time_is_served(engine, keys_file):  # noqa: F811
    path, key = keys_file
    app = create_app(engine, keys=path, limits=ServeLimits(body_timeout_s=1.0))
    body = json.dumps(_chat(temperature=0)).encode()
    with background_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        head = (f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        data, _ = _raw_request(port, head, body, wait_s=30)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]


# ----------------------------------------------------------------------------- ports


@pytest.mark.parametrize("port", ["99999", "0", "-1", "65536"])
def test_bad_port_is_a_clear_cli_error(tiny_model_dir, capsys, port):
    assert main(["serve", str(tiny_model_dir), "--no-auth", "--port", port]) == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--port'" in err and ("65535" in err or "greater than or equal to 1" in err)
    assert "Traceback" not in err


def test_bad_port_is_a_clear_api_error(tiny_model_dir):
    from tuneforge.serve import run

    with pytest.raises(ConfigError, match="--port 99999: expected a port number from 1 to 65535"):
        run(tiny_model_dir, no_auth=True, port=99999)


def test_port_in_use_is_a_clear_error_before_the_model_loads(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        start = time.monotonic()
        # A model that does not exist: the port error must come first, without loading anything.
        assert main(["serve", "./no/such/model", "--no-auth", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} is already in use" in err and "Traceback" not in err
    assert time.monotonic() - start < 5


# ----------------------------------------------------------------------------- keys file changes while serving


def test_deleted_keys_file_refuses_every_key(client, keys_file):
    path, _ = keys_file
    assert client.get("/v1/models").status_code == 200
    saved = path.read_text()
    path.unlink()
    assert _error(client.get("/v1/models"), 401)["code"] == "invalid_api_key"
    assert _error(client.post(CHAT, json=_chat()), 401)["code"] == "invalid_api_key"
    path.write_text(saved)  # the operator restores it: the key works again, no restart
    assert client.get("/v1/models").status_code == 200


@pytest.mark.parametrize("content", ["", "  \n", "{}", '{"version": 1, "keys": []}', "{half-edited"])
def test_emptied_or_broken_keys_file_refuses_every_key(client, keys_file, content):
    path, _ = keys_file
    assert client.get("/v1/models").status_code == 200
    path.write_text(content)
    _error(client.get("/v1/models"), 401)


def test_refused_requests_are_counted_by_reason_and_logged_without_text(engine, keys_file, caplog):  # noqa: F811
    from tuneforge.security import create_key

    path, key = keys_file
    expired = create_key(path, "old", expires=None)
    data = json.loads(path.read_text())
    data["keys"][-1]["expires"] = "2000-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))
    scoped = create_key(path, "only-a", models=["lora-a"])
    from tuneforge.serve.limits import ServeLimits as Limits

    app = create_app(engine, keys=path, limits=Limits(rate_per_minute=1), log_prompts=True)
    secret = {"model": "tiny", "messages": [{"role": "user", "content": "my secret question"}], "max_tokens": 2}
    with TestClient(app) as c, caplog.at_level("INFO", logger="tuneforge.serve.access"):
        c.post(CHAT, json=secret)                                                        # missing_api_key
        c.post(CHAT, json=secret, headers={"Authorization": "Bearer tf-wrong"})           # invalid_api_key
        c.post(CHAT, json=secret, headers={"Authorization": f"Bearer {expired}"})         # expired_api_key
        c.post(CHAT, json=secret, headers={"Authorization": f"Bearer {scoped}"})          # model_not_allowed
        c.post(CHAT, json={**secret, "model": "nope"}, headers={"Authorization": f"Bearer {key}"})  # 404, not refused
        c.post(CHAT, json={**secret, "model": "nope"}, headers={"Authorization": f"Bearer {key}"})  # rate_limit_exceeded
        text = c.get("/metrics").text
    for reason in ("missing_api_key", "invalid_api_key", "expired_api_key", "model_not_allowed", "rate_limit_exceeded"):
        assert f'tuneforge_refused_requests_total{{reason="{reason}"}} 1.0' in text, reason
    assert 'reason="model_not_found"' not in text
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tuneforge.serve.access"]
    refused = [r for r in records if "refused" in r]
    assert [r["refused"] for r in refused] == [
        "missing_api_key", "invalid_api_key", "expired_api_key", "model_not_allowed", "rate_limit_exceeded"]
    assert "secret question" not in caplog.text and key not in caplog.text and scoped not in caplog.text
    assert refused[3]["key"] == "only-a" and refused[3]["model"] == "tiny"
