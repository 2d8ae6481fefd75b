"""Asking a teacher over HTTP: retries get through transient 500s, lasting failures are returned, not dropped,
and an unreachable endpoint or a refused key is a clear error before any prompt is sent."""

from __future__ import annotations

import socket

import pytest

from tuneforge import ConfigError
from tuneforge.config.distill import EndpointTeacher
from tuneforge.distill.teacher import Failed, ask_endpoint


def _ask(url, prompts, *, key_env="TEACHER_KEY", max_retries=3, **kwargs):
    teacher = EndpointTeacher(base_url=url + "/v1", api_key_env=key_env, model="tiny")
    got = {}
    results = ask_endpoint(teacher, [[{"role": "user", "content": p}] for p in prompts], max_new_tokens=4,
                           concurrency=2, max_retries=max_retries, backoff_seconds=0.0,
                           on_answer=lambda i, text: got.__setitem__(i, text), **kwargs)
    return results, got


def test_transient_failures_are_retried_and_lasting_ones_returned(served, monkeypatch):
    url, key, proxy = served
    monkeypatch.setenv("TEACHER_KEY", key)
    prompts = [f"where is my parcel {n}" for n in range(6)] + ["please refund order 1", "please refund order 2"]
    before = proxy.chat_calls
    results, got = _ask(url, prompts)
    assert all(isinstance(results[i], str) for i in range(6)) and set(got) == set(range(6))
    for i in (6, 7):  # the poisoned prompts fail on every attempt: 1 + max_retries
        assert results[i] == Failed("HTTP 500", 4)
    assert proxy.chat_calls - before > 6 + 2 * 4  # every third call failed, so some good prompts were retried


def test_without_retries_a_transient_failure_is_a_failed_prompt(served, monkeypatch):
    url, key, proxy = served
    monkeypatch.setenv("TEACHER_KEY", key)
    results, got = _ask(url, [f"where is my parcel {n}" for n in range(6)], max_retries=0)
    failed = [r for r in results.values() if isinstance(r, Failed)]
    assert len(failed) == 2 and len(got) == 4  # calls 3 and 6 of every 3: never lost, returned as failures


def test_an_unreachable_endpoint_is_a_clear_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=rf"cannot reach the teacher endpoint http://127.0.0.1:{port}/v1 \(ConnectError"):
        _ask(f"http://127.0.0.1:{port}", ["hi"], key_env=None, max_retries=1)


def test_a_refused_or_missing_key_is_a_clear_error(served, monkeypatch):
    url, _, _ = served
    monkeypatch.setenv("TEACHER_KEY", "tf-wrong")
    with pytest.raises(ConfigError, match=r"refused the request \(401\); check the key in \$TEACHER_KEY"):
        _ask(url, ["hi"])
    monkeypatch.delenv("TEACHER_KEY")
    with pytest.raises(ConfigError, match="the environment variable TEACHER_KEY is not set"):
        _ask(url, ["hi"])
