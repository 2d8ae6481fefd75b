"""A real uvicorn server on 127.0.0.1 (free port, background thread) driven by the official ``openai`` client."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import openai
import pytest

from tuneforge.serve import BatchingConfig, ServeLimits, background_server, create_app, load_engine

MESSAGES = [{"role": "user", "content": "Where is my package?"}]


@pytest.fixture
def server(engine, keys_file):
    path, key = keys_file
    app = create_app(engine, keys=path, limits=ServeLimits(rate_per_minute=600))
    with background_server(app) as url:
        yield url, key, app


def _client(url, key):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_chat_and_completion(server):
    url, key, _ = server
    client = _client(url, key)
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5, temperature=0)
    assert chat.choices[0].finish_reason in ("stop", "length") and chat.usage.completion_tokens <= 5
    assert isinstance(chat.choices[0].message.content, str)
    text = client.completions.create(model="tiny", prompt="The quick brown", max_tokens=4, temperature=0)
    assert text.choices[0].finish_reason == "length" and text.usage.completion_tokens == 4
    assert [m.id for m in client.models.list()] == ["tiny", "lora-a", "lora-b"]


def test_streaming_equals_non_streaming(server):
    url, key, _ = server
    client = _client(url, key)
    args = dict(model="lora-a", messages=MESSAGES, max_tokens=8, temperature=0.9, seed=5)
    whole = client.chat.completions.create(**args).choices[0].message.content
    stream = client.chat.completions.create(**args, stream=True)
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_adapter_is_chosen_by_model_field(server, engine, lora_dirs):
    url, key, _ = server
    client = _client(url, key)
    def complete(name):
        return client.completions.create(model=name, prompt="Translate to French:", max_tokens=8, temperature=0)

    outputs = {name: complete(name).choices[0].text for name in ("tiny", "lora-a", "lora-b")}
    assert len(set(outputs.values())) == 3, outputs
    # The served adapter gives exactly what PEFT gives when it loads that adapter alone.
    from tuneforge.models import load

    direct = load(lora_dirs["lora-b"])
    ids = direct.tokenizer("Translate to French:", return_tensors="pt")
    out = direct.model.generate(**ids, max_new_tokens=8, do_sample=False, eos_token_id=direct.tokenizer.eos_token_id)
    expected = direct.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert outputs["lora-b"] == expected


def test_wrong_key_raises_authentication_error(server):
    url, _, _ = server
    with pytest.raises(openai.AuthenticationError) as info:
        _client(url, "tf-wrong").chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    assert info.value.body["code"] == "invalid_api_key"


def test_unknown_model_raises_not_found(server):
    url, key, _ = server
    with pytest.raises(openai.NotFoundError):
        _client(url, key).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)


def test_rate_limit_gives_429_with_retry_after(engine, keys_file):
    path, key = keys_file
    with background_server(create_app(engine, keys=path, limits=ServeLimits(rate_per_minute=2))) as url:
        client = _client(url, key)
        for _ in range(2):
            client.models.list()
        with pytest.raises(openai.RateLimitError) as info:
            client.models.list()
        assert int(info.value.response.headers["retry-after"]) >= 1
        assert info.value.body["code"] == "rate_limit_exceeded"


def test_concurrent_requests_are_batched(tiny_model_dir, keys_file):
    path, key = keys_file
    engine = load_engine(tiny_model_dir, name="tiny", batching=BatchingConfig(max_batch_size=8, window_ms=300))
    app = create_app(engine, keys=path)
    with background_server(app) as url:
        client = _client(url, key)
        limits = [3, 5, 7, 9]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(
                lambda n: client.completions.create(model="tiny", prompt="hello", max_tokens=n, temperature=0), limits
            ))
        metrics = httpx.get(url + "/metrics").text
    # Each request kept its own max_tokens although they shared a batch.
    assert [r.usage.completion_tokens for r in results] == limits
    assert engine.batcher.stats["max_batch_rows"] >= 2
    count = next(line for line in metrics.splitlines() if line.startswith("tuneforge_batch_size_count"))
    assert float(count.split()[-1]) < 4  # fewer generate calls than requests


def test_client_disconnect_mid_stream_frees_the_row(tiny_model_dir):
    engine = load_engine(tiny_model_dir, name="tiny", batching=BatchingConfig(window_ms=1))
    app = create_app(engine, keys=None, limits=ServeLimits(max_tokens=900))
    with background_server(app) as url:
        body = {"model": "tiny", "prompt": "hi", "max_tokens": 900, "temperature": 1.0, "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    break  # leave after the first chunk; closing the stream drops the connection
        deadline = time.monotonic() + 20
        while engine.stats["cancelled_rows"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.stats["cancelled_rows"] == 1
        after = _client(url, "unused").completions.create(model="tiny", prompt="next", max_tokens=3, temperature=0)
        assert after.usage.completion_tokens == 3
