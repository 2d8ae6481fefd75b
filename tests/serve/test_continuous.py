"""Continuous batching and incremental detokenization.

The reference for every output is the static path with batching off: one ``generate``
call per request (``BatchingConfig(1, continuous=False)``).
"""

from __future__ import annotations

import asyncio

import pytest

from tuneforge.serve import BatchingConfig, GenerationRequest, SamplingParams, load_engine
from tuneforge.serve.decode import Delta, Finished, decode_increment

PROMPTS = ("Where is my package? The tracking", "a", "The quick brown fox", "Refund")


def _served(tiny_model_dir, lora_dirs, batching):
    eng = load_engine(tiny_model_dir, name="tiny", adapters=lora_dirs, batching=batching)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def engine(tiny_model_dir, lora_dirs):
    """The continuous-batching engine (the server's default for this full-attention model, set here anyway)."""
    yield from _served(tiny_model_dir, lora_dirs, BatchingConfig(8, window_ms=20, continuous=True))


@pytest.fixture(scope="module")
def static_engine(tiny_model_dir, lora_dirs):
    """One request per generate call: the reference outputs."""
    yield from _served(tiny_model_dir, lora_dirs, BatchingConfig(1, window_ms=0, continuous=False))


def _request(engine, text, model="lora-a", **params):
    params = {"max_tokens": 12, "temperature": 0, **params}
    return GenerationRequest(model, [engine.encode_text(text)], SamplingParams(**params))


def _one_by_one(engine, requests):
    async def main():
        return [(await engine.submit(r).result())[0] for r in requests]

    return asyncio.run(main())


async def _wait_running(handle, engine, min_steps=1):
    """Return once ``handle`` has its first token and the batch has run ``min_steps`` decoding steps."""
    steps = engine.batcher.stats["steps"]
    while handle.first_token_at is None or engine.batcher.stats["steps"] < steps + min_steps:
        await asyncio.sleep(0.001)


def _staggered(engine, first, late):
    """Submit ``first``, let it generate a few steps, then submit ``late``; return every result and the joins."""

    async def main():
        joined = engine.batcher.stats["joined_rows"]
        head = engine.submit(first)
        await _wait_running(head, engine, min_steps=2)
        handles = [head]
        for request in late:
            handles.append(engine.submit(request))
            await _wait_running(handles[-1], engine)  # each arrives while the others are generating
        results = [(await h.result())[0] for h in handles]
        return results, engine.batcher.stats["joined_rows"] - joined

    return asyncio.run(main())


def test_late_requests_join_the_running_batch_and_match_one_by_one(engine, static_engine):
    first = _request(engine, PROMPTS[0], max_tokens=40)
    late = [_request(engine, p, max_tokens=10) for p in PROMPTS[1:]]
    results, joined = _staggered(engine, first, late)
    assert results[0].completion_tokens == 40  # still running when the others arrived...
    assert joined == len(late)  # ...and they joined it rather than waiting for it to finish
    reference = _one_by_one(static_engine, [first, *late])
    assert [(r.text, r.finish_reason, r.completion_tokens) for r in results] == [
        (r.text, r.finish_reason, r.completion_tokens) for r in reference
    ]


def test_joined_rows_keep_their_own_stops_limits_and_n(engine, static_engine):
    reference = _one_by_one(static_engine, [_request(engine, "Where is", model="lora-b")])[0].text
    stop = reference.strip()[1:3]
    assert len(stop) == 2, reference
    first = _request(engine, PROMPTS[0], model="lora-b", max_tokens=40)
    late = [
        _request(engine, "Where is", model="lora-b", stop=(stop,)),
        _request(engine, "Where is", model="lora-b", max_tokens=3),
        _request(engine, "Where is", model="lora-b", n=2),
    ]
    results, joined = _staggered(engine, first, late[:2])
    assert joined == 2
    stopped, short = results[1:]
    assert stopped.finish_reason == "stop" and stopped.text == reference[: reference.index(stop)]
    assert (short.finish_reason, short.completion_tokens) == ("length", 3) and reference.startswith(short.text)

    async def with_n():
        handle = engine.submit(late[2])
        return await handle.result()

    both = asyncio.run(with_n())
    assert [f.index for f in both] == [0, 1] and both[0].text == both[1].text == reference


def test_end_of_turn_token_stops_a_joined_row(engine):
    # Steer only the rows whose input ends with a marker token to answer <|im_end|> at once; the
    # running row, which never feeds the marker, must go on unaffected.
    im_end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    marker = engine.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert im_end in engine.eos_ids
    base = engine.model.get_base_model()
    steered = []

    def remember(module, args):
        steered[:] = [args[0][:, -1] == marker]

    def end_turn(module, args, logits):
        logits = logits.clone()
        logits[steered[0], -1, im_end] = 1e4
        return logits

    hooks = [base.model.embed_tokens.register_forward_pre_hook(remember), base.lm_head.register_forward_hook(end_turn)]
    try:
        first = _request(engine, PROMPTS[0], max_tokens=30)
        late = GenerationRequest("lora-a", [engine.encode_text("hi") + [marker]], SamplingParams(max_tokens=8, temperature=0))
        results, joined = _staggered(engine, first, [late])
    finally:
        for hook in hooks:
            hook.remove()
    assert joined == 1
    assert (results[1].finish_reason, results[1].completion_tokens, results[1].text) == ("stop", 1, "")
    assert results[0].completion_tokens == 30


def test_streamed_deltas_equal_the_final_text_for_a_joined_row(engine):
    first = _request(engine, PROMPTS[0], max_tokens=40)
    late = _request(engine, PROMPTS[2], max_tokens=16, stop=("zz",))

    async def main():
        head = engine.submit(first)
        await _wait_running(head, engine, min_steps=2)
        joined = engine.batcher.stats["joined_rows"]
        handle = engine.submit(late)
        events = [e async for e in handle.stream()]
        assert engine.batcher.stats["joined_rows"] == joined + 1
        await head.result()
        return events

    events = asyncio.run(main())
    streamed = "".join(e.text for e in events if isinstance(e, Delta))
    (final,) = [e for e in events if isinstance(e, Finished)]
    assert len([e for e in events if isinstance(e, Delta)]) > 1 and streamed == final.text


def test_seeded_sampling_is_reproducible(engine):
    request = _request(engine, PROMPTS[1], temperature=1.0, seed=3, max_tokens=10)
    a, b = _one_by_one(engine, [request, request])
    other = _one_by_one(engine, [_request(engine, PROMPTS[1], temperature=1.0, seed=4, max_tokens=10)])[0]
    assert a.text == b.text and a.completion_tokens == b.completion_tokens
    assert (other.text, other.completion_tokens) != (a.text, a.completion_tokens)


@pytest.mark.parametrize("text", [
    "héllo wörld, naïve café",
    "你好，世界！ 東京 ok",
    "emoji 🙂🚀 and 👩‍👩‍👧 family",
    "plain ascii text with  double  spaces\nand lines",
])
def test_incremental_decoding_equals_full_decode_on_multibyte_text(engine, text):
    tok = engine.tokenizer
    ids = tok(text)["input_ids"]
    assert any(tok.decode([i]).endswith("\ufffd") for i in ids) or text.isascii()  # really split characters
    pieces, prefix, read = [], 0, 0
    for n in range(1, len(ids) + 1):
        new, prefix, read = decode_increment(tok, ids[:n], prefix, read)
        assert "\ufffd" not in new  # half characters are held back, never streamed
        pieces.append(new)
    new, prefix, read = decode_increment(tok, ids, prefix, read, final=True)
    pieces.append(new)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True) == text
    assert prefix > 0 or len(ids) < 3  # the window moved: not the whole row decoded every step


def test_close_finishes_running_rows_and_fails_waiting_ones(tiny_model_dir):
    eng = load_engine(tiny_model_dir, name="t", batching=BatchingConfig(4, window_ms=0, continuous=True))

    async def main():
        running = eng.submit(_request(eng, PROMPTS[0], model="t", max_tokens=40))
        await _wait_running(running, eng)
        # Another sampling setting cannot join: it waits for the running batch to drain.
        waiting = eng.submit(_request(eng, PROMPTS[1], model="t", temperature=1.0))
        thread = eng.batcher._thread
        await asyncio.to_thread(eng.close)
        assert not thread.is_alive()
        with pytest.raises(RuntimeError, match="shutting down"):
            await waiting.result()
        return (await running.result())[0]

    assert asyncio.run(main()).completion_tokens == 40


def test_continuous_is_the_default_only_for_models_whose_every_layer_has_full_attention(tiny_model_dir):
    from types import SimpleNamespace

    from transformers import LlamaConfig, MistralConfig

    from tuneforge.errors import ModelError
    from tuneforge.serve.continuous import ContinuousBatcher
    from tuneforge.serve.engine import _continuous

    full = SimpleNamespace(config=LlamaConfig(num_hidden_layers=2))
    sliding = SimpleNamespace(config=MistralConfig(num_hidden_layers=2, sliding_window=16))
    assert _continuous(BatchingConfig(), full) is True
    assert _continuous(BatchingConfig(), sliding) is False  # its cache cannot be merged row by row: static
    assert _continuous(BatchingConfig(continuous=False), full) is False
    assert _continuous(BatchingConfig(max_batch_size=1), full) is False  # batching off
    with pytest.raises(ModelError, match="sliding-window layers.*--batching static"):
        _continuous(BatchingConfig(continuous=True), sliding)  # refused at start, not per request
    unreadable = SimpleNamespace(config=SimpleNamespace())  # no layer count: the reason says so, not "sliding-window"
    assert _continuous(BatchingConfig(), unreadable) is False
    with pytest.raises(ModelError, match="does not say how to build its KV cache") as info:
        _continuous(BatchingConfig(continuous=True), unreadable)
    assert "sliding" not in str(info.value)
    eng = load_engine(tiny_model_dir, name="t")
    try:
        assert isinstance(eng.batcher, ContinuousBatcher)
    finally:
        eng.close()

