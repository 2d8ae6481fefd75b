"""Generation for evaluation: the shared-prefix cache and length sorting change speed, never the answers."""

from __future__ import annotations

import random

import pytest
import torch

from tests.eval.conftest import TICKETS, lora_model, ticket
from tuneforge.config.schema import GenerationConfig
from tuneforge.eval.generate import generate_answers, render_prompts, shared_prefix_length, stop_token_ids


@pytest.fixture
def model_and_tokenizer(tiny_model_dir):
    from tuneforge.models import load_tokenizer

    return lora_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def _examples() -> list[dict]:
    # Varied lengths, so batches mix short and long prompts and need padding.
    return [ticket(text * (1 + i % 3), label) for i, (text, label) in enumerate(TICKETS * 2)]


def _plain_generate(model, tokenizer, example, max_new_tokens: int) -> str:
    """The textbook path: one prompt, no padding, no shared cache."""
    enc = tokenizer(render_prompts(tokenizer, [example]), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                             top_k=None, eos_token_id=stop_token_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_shared_prefix_generation_matches_one_prompt_at_a_time(model_and_tokenizer):
    model, tok = model_and_tokenizer
    examples = _examples()
    gen = GenerationConfig(max_new_tokens=8, batch_size=5)
    batched = generate_answers(model, tok, examples, gen).texts
    assert any(batched)  # a non-empty answer somewhere, so equality below means something
    assert batched == [_plain_generate(model, tok, ex, 8) for ex in examples]


def test_example_order_does_not_change_answers(model_and_tokenizer):
    model, tok = model_and_tokenizer
    examples = _examples()
    gen = GenerationConfig(max_new_tokens=8, batch_size=4)
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    first = generate_answers(model, tok, examples, gen)
    shuffled = generate_answers(model, tok, [examples[i] for i in order], gen)
    assert [shuffled.texts[order.index(i)] for i in range(len(examples))] == first.texts
    assert [shuffled.truncated[order.index(i)] for i in range(len(examples))] == first.truncated


def test_shared_prefix_length_leaves_a_token_per_row():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # the last token must be fed to get its logits
    assert shared_prefix_length([[7, 1], [8, 1]]) == 0
    assert shared_prefix_length([]) == 0
