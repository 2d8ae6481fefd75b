"""A real ``tuneforge serve`` of the tiny model on loopback, optionally behind a proxy that fails some requests."""

from __future__ import annotations

import json

import pytest

from tuneforge.security import create_key


class FlakyTeacher:
    """ASGI wrapper of the served app: every ``every``-th chat request gets a 500 (a transient failure, so a retry
    gets through), and every chat request whose prompt contains ``poison`` always gets a 500."""

    def __init__(self, app, *, every: int = 3, poison: str = "refund"):
        self.app, self.every, self.poison = app, every, poison
        self.chat_calls = 0
        self.prompts_answered: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.chat_calls += 1
        prompt = json.loads(body)["messages"][-1]["content"]
        if self.chat_calls % self.every == 0 or self.poison in prompt:
            await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]})
            return await send({"type": "http.response.body", "body": b"teacher overloaded"})
        self.prompts_answered.append(prompt)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """``(url, key, proxy)``: the tiny model served as "tiny" with an API key, behind a :class:`FlakyTeacher`."""
    from tuneforge.serve import background_server, create_app, load_engine

    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    key = create_key(keys, "distill-test")
    engine = load_engine(tiny_model_dir, name="tiny")
    proxy = FlakyTeacher(create_app(engine, keys=keys))
    with background_server(proxy) as url:
        yield url, key, proxy
    engine.close()
