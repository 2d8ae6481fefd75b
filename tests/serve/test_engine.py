"""The engine and its pure parts: stop strings, batch selection, limits, names, loading errors."""

from __future__ import annotations

import asyncio

import pytest

from tuneforge.errors import ConfigError, ModelError, SecurityError
from tuneforge.serve import (
    BatchingConfig, GenerationRequest, SamplingParams, load_engine, parse_rate_limit, served_name,
)
from tuneforge.serve.auth import bearer_token, check_auth_setup, is_loopback
from tuneforge.serve.batcher import GenerationHandle, batch_key, take_batch
from tuneforge.serve.decode import find_stop, streamable_prefix
from tuneforge.serve.engine import adapter_dir
from tuneforge.serve.http_errors import describe_validation
from tuneforge.serve.limits import RateLimiter


def test_find_stop_earliest():
    assert find_stop("abc STOP def END", ("END", "STOP")) == 4
    assert find_stop("abc", ("x",)) is None
    assert find_stop("abc", ()) is None


@pytest.mark.parametrize("text,stops,expected", [
    ("hello wo", ("world",), "hello "),  # "wo" may become "world": hold it back
    ("hello", ("###",), "hello"),
    ("caf\ufffd", (), "caf"),  # half a UTF-8 character
    ("ab\n", ("\n\n", "b\nx"), "a"),
])
def test_streamable_prefix(text, stops, expected):
    assert streamable_prefix(text, stops) == expected


def _handle(model="m", n=1, prompts=1, **params):
    loop = asyncio.new_event_loop()
    request = GenerationRequest(model, [[1, 2]] * prompts, SamplingParams(max_tokens=4, n=n, **params))
    handle = GenerationHandle(request, loop)
    loop.close()
    return handle


def test_batch_key_groups_compatible_requests():
    greedy_a, greedy_b = _handle(temperature=0, top_p=0.5), _handle(temperature=0, stop=("x",))
    assert batch_key(greedy_a.request, 1) == batch_key(greedy_b.request, 2)  # greedy ignores top_p; stop is per row
    assert batch_key(_handle(temperature=0.7).request, 1) != batch_key(_handle(temperature=0.8).request, 1)
    assert batch_key(_handle(model="a").request, 1) != batch_key(_handle(model="b").request, 1)
    seeded = _handle(seed=1).request
    assert batch_key(seeded, 1) != batch_key(seeded, 2)  # seeded requests always run alone


def test_take_batch_respects_key_order_and_size():
    a1, b1, a2, a3 = _handle("a"), _handle("b"), _handle("a", n=2), _handle("a", n=4)
    assert take_batch([a1, b1, a2, a3], max_rows=4) == [a1, a2]
    assert take_batch([b1, a1], max_rows=4) == [b1]
    big = _handle("a", n=3, prompts=3)
    assert take_batch([big, a1], max_rows=4) == [big]  # the head always goes, even when over the limit


def test_rate_limiter_token_bucket():
    now = [0.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    assert limiter.acquire("k") == 0 and limiter.acquire("k") == 0
    wait = limiter.acquire("k")
    assert wait == pytest.approx(30)
    assert limiter.acquire("other") == 0  # buckets are per key
    now[0] = 30.0
    assert limiter.acquire("k") == 0


@pytest.mark.parametrize("text,per_min", [("60/min", 60), ("2/s", 120), ("120/h", 2), ("1.5/minute", 1.5)])
def test_parse_rate_limit(text, per_min):
    assert parse_rate_limit(text) == per_min


@pytest.mark.parametrize("text", ["60", "x/min", "60/day", "0/min", ""])
def test_parse_rate_limit_rejects(text):
    with pytest.raises(ConfigError, match="--rate-limit"):
        parse_rate_limit(text)


def test_auth_setup_rules():
    check_auth_setup("0.0.0.0", "keys.json", no_auth=False)
    check_auth_setup("127.0.0.1", None, no_auth=True)
    check_auth_setup("localhost", None, no_auth=True)
    with pytest.raises(SecurityError, match="loopback"):
        check_auth_setup("0.0.0.0", None, no_auth=True)
    with pytest.raises(SecurityError, match="--api-keys-file"):
        check_auth_setup("127.0.0.1", None, no_auth=False)
    with pytest.raises(SecurityError, match="not both"):
        check_auth_setup("127.0.0.1", "keys.json", no_auth=True)
    assert is_loopback("::1") and is_loopback("127.0.0.2") and not is_loopback("192.168.1.4")
    assert not is_loopback("example.com")


def test_bearer_token():
    assert bearer_token("Bearer tf-abc") == "tf-abc"
    assert bearer_token("bearer  tf-abc ") == "tf-abc"
    assert bearer_token("Basic xyz") is None and bearer_token(None) is None and bearer_token("Bearer ") is None


def test_describe_validation_names_field():
    message, param = describe_validation([{"loc": ("body", "messages", 0, "role"), "msg": "bad role", "type": "x"}])
    assert param == "messages.0.role" and "bad role" in message


def test_served_name_and_adapter_dir(tmp_path, lora_dirs):
    assert served_name("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert served_name(lora_dirs["lora-a"]) == "lora-a"
    assert adapter_dir(lora_dirs["lora-a"]) == lora_dirs["lora-a"]
    with pytest.raises(ModelError, match="adapter_config.json"):
        adapter_dir(tmp_path)


def test_run_directory_is_served_with_its_adapter_plus_extra_ones(tmp_path, tiny_model_dir, lora_dirs):
    import shutil

    run = tmp_path / "support-bot"
    shutil.copytree(lora_dirs["lora-a"], run / "adapter")
    (run / "config.yaml").write_text(f"name: support-bot\nmodel: {tiny_model_dir}\ndata:\n  train: train.jsonl\n")
    engine = load_engine(run, adapters={"other": lora_dirs["lora-b"]})
    assert engine.names == ["support-bot", "other"]
    assert engine.routes == {"support-bot": "default", "other": "other"}


def test_bad_adapters_are_model_errors(tiny_model_dir, lora_dirs, tmp_path):
    with pytest.raises(ModelError, match="already served"):
        load_engine(tiny_model_dir, name="x", adapters={"x": lora_dirs["lora-a"]})
    with pytest.raises(ModelError, match="adapter not found"):
        load_engine(tiny_model_dir, adapters={"y": tmp_path / "missing"})


def test_batched_generation_matches_one_by_one(engine):
    prompts = [engine.encode_text(t) for t in ("a", "The quick brown fox", "Where is my package? The tracking")]

    async def generate(batch: list[list[int]]):
        handles = [engine.submit(GenerationRequest("lora-a", [p], SamplingParams(max_tokens=6, temperature=0)))
                   for p in batch]
        return [(await h.result())[0].text for h in handles]

    async def main():
        before = engine.batcher.stats["batches"]
        together = await generate(prompts)  # submitted in one loop tick: one batch
        assert engine.batcher.stats["batches"] == before + 1
        alone = [(await generate([p]))[0] for p in prompts]
        return together, alone

    together, alone = asyncio.run(main())
    assert together == alone


def test_per_row_limits_and_stops_in_one_batch(engine):
    prompt = engine.encode_text("Where is")

    def request(max_tokens, stop=()):
        return GenerationRequest("lora-b", [prompt], SamplingParams(max_tokens=max_tokens, temperature=0, stop=stop))

    async def run(requests):
        handles = [engine.submit(r) for r in requests]
        return [(await h.result())[0] for h in handles]

    reference = asyncio.run(run([request(7)]))[0].text
    stop = reference.strip()[1:3]
    assert len(stop) == 2, reference
    short, long, stopped = asyncio.run(run([request(2), request(7), request(7, stop=(stop,))]))
    assert (short.completion_tokens, short.finish_reason) == (2, "length")
    assert (long.completion_tokens, long.finish_reason, long.text) == (7, "length", reference)
    assert reference.startswith(short.text)
    assert stopped.finish_reason == "stop" and stopped.text == reference[: reference.index(stop)]


def test_batching_off_runs_one_request_per_generate(tiny_model_dir):
    engine = load_engine(tiny_model_dir, name="t", batching=BatchingConfig(max_batch_size=1, window_ms=50, continuous=False))

    async def main():
        handles = [engine.submit(GenerationRequest("t", [[5, 6]], SamplingParams(max_tokens=2, temperature=0)))
                   for _ in range(3)]
        for h in handles:
            await h.result()

    asyncio.run(main())
    engine.close()
    assert engine.batcher.stats["batches"] == 3 and engine.batcher.stats["max_batch_rows"] == 1


def test_serve_stops_at_the_end_of_turn_token_when_eos_is_another_token(tiny_model_dir, tmp_path):
    # A model like many base checkpoints: eos is <|endoftext|>, but the chat template ends a turn with
    # <|im_end|>, the token a tuned model emits when its answer is done.
    from transformers import AutoModelForCausalLM

    from tuneforge.models import load_tokenizer
    from tuneforge.serve.engine import Engine
    from tuneforge.models import load

    tok = load_tokenizer(tiny_model_dir)
    tok.eos_token = "<|endoftext|>"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(str(tmp_path / "m"))
    tok.save_pretrained(str(tmp_path / "m"))
    loaded = load(tmp_path / "m")
    im_end = loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert loaded.tokenizer.eos_token_id != im_end

    def answer_then_end_turn(module, args, logits):  # the real model, steered to end its turn at once
        logits = logits.clone()
        logits[..., im_end] = 1e4
        return logits

    loaded.model.lm_head.register_forward_hook(answer_then_end_turn)
    engine = Engine(loaded, name="eot", batching=BatchingConfig(max_batch_size=1, window_ms=1))
    try:
        prompt = engine.encode_chat([{"role": "user", "content": "Where is my parcel?"}])

        async def main():
            handle = engine.submit(GenerationRequest("eot", [prompt], SamplingParams(max_tokens=8, temperature=0)))
            return (await handle.result())[0]

        out = asyncio.run(main())
    finally:
        engine.close()
    assert (out.finish_reason, out.completion_tokens, out.text) == ("stop", 1, "")


def test_serve_chat_works_for_a_model_without_a_chat_template(tiny_model_dir, tmp_path):
    # Such a model trains on tuneforge's fallback format; chat must render prompts the same way.
    from tuneforge.data.prompts import render_prompt
    from tuneforge.models import load
    from tuneforge.serve.engine import Engine

    loaded = load(tiny_model_dir)
    loaded.tokenizer.chat_template = None
    engine = Engine(loaded, name="plain", batching=BatchingConfig(max_batch_size=1, window_ms=1))
    try:
        messages = [{"role": "user", "content": "hello"}]
        ids = engine.encode_chat(messages)
    finally:
        engine.close()
    text = loaded.tokenizer.decode(ids)
    assert text.endswith("### Assistant:\n") and "### User:\nhello" in text
    assert text == loaded.tokenizer.decode(loaded.tokenizer(render_prompt(messages, loaded.tokenizer))["input_ids"])
