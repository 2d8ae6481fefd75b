"""Label scoring by log-likelihood: the cached, batched scores equal a brute-force computation, in any order."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.eval.conftest import LABELS, TICKETS, lora_model, ticket
from tuneforge.eval.likelihood import label_continuations, score_labels


@pytest.fixture
def model_and_tokenizer(tiny_model_dir):
    from tuneforge.models import load_tokenizer

    return lora_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def _examples() -> list[dict]:
    return [ticket(text * (1 + i % 3), label) for i, (text, label) in enumerate(TICKETS * 2)]


def _brute_force(model, tokenizer, example: dict, label: str) -> float:
    """log P(label + end-of-turn | prompt): one full forward pass over the whole conversation, no cache, no padding."""
    from tuneforge.data import IGNORE_INDEX, prompt_messages, tokenize_example

    f = tokenize_example({"messages": [*prompt_messages(example), {"role": "assistant", "content": label}]}, tokenizer,
                         max_seq_length=10_000)
    ids, labels = torch.tensor([f["input_ids"]]), torch.tensor(f["labels"])
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    # Position t predicts token t + 1; sum over the answer's tokens (the label and <|im_end|>).
    return sum(logprobs[t - 1, ids[0, t]].item() for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX)


def test_scores_equal_brute_force_and_pick_the_most_probable_label(model_and_tokenizer):
    model, tok = model_and_tokenizer
    examples = _examples()
    scores = score_labels(model, tok, examples, LABELS, batch_size=5)
    expected = np.array([[_brute_force(model, tok, ex, label) for label in LABELS] for ex in examples])
    np.testing.assert_allclose(scores.logprobs, expected, rtol=1e-4, atol=1e-4)
    assert list(scores.predicted) == list(expected.argmax(axis=1))
    assert scores.examples_per_second > 0


def test_base_model_is_scored_with_the_adapter_off(model_and_tokenizer):
    model, tok = model_and_tokenizer
    examples = _examples()[:4]
    with model.disable_adapter():
        base = score_labels(model, tok, examples, LABELS)
        expected = [_brute_force(model, tok, examples[0], label) for label in LABELS]
    np.testing.assert_allclose(base.logprobs[0], expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(score_labels(model, tok, examples, LABELS).logprobs, base.logprobs)


def test_order_and_batch_size_do_not_change_scores(model_and_tokenizer):
    model, tok = model_and_tokenizer
    examples = _examples()
    order = list(range(len(examples)))
    random.Random(1).shuffle(order)
    first = score_labels(model, tok, examples, LABELS, batch_size=4).logprobs
    shuffled = score_labels(model, tok, [examples[i] for i in order], LABELS, batch_size=7).logprobs
    np.testing.assert_allclose(shuffled[np.argsort(order)], first, rtol=1e-5, atol=1e-5)


def test_label_continuation_is_the_label_and_end_of_turn(tiny_tokenizer):
    conts = label_continuations(tiny_tokenizer, ticket("Where is my package?", "shipping"), ["billing", "refund"])
    assert [tiny_tokenizer.decode(c) for c in conts] == ["billing<|im_end|>", "refund<|im_end|>"]


def test_a_model_taught_one_label_picks_it(tiny_model_dir, tiny_tokenizer):
    """Train the tiny model a few steps to answer 'refund' to everything: likelihood scoring then picks refund."""
    from transformers import AutoModelForCausalLM

    from tuneforge.data import tokenize_example

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    examples = [ticket(text, "refund") for text, _ in TICKETS]
    before = score_labels(model, tiny_tokenizer, examples, LABELS).predicted
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        for ex in examples:
            f = tokenize_example(ex, tiny_tokenizer, max_seq_length=256)
            loss = model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    after = score_labels(model, tiny_tokenizer, examples, LABELS).predicted
    refund = LABELS.index("refund")
    assert not all(before == refund)  # the random model did not already prefer it
    assert all(after == refund)


def test_prompt_tuning_model_is_scored_without_cache_sharing(tiny_model_dir, tiny_tokenizer):
    """Prompt tuning prepends virtual tokens, so its labels are scored as full rows; the answer is still the argmax."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    scores = score_labels(model, tiny_tokenizer, _examples()[:3], LABELS)
    assert scores.logprobs.shape == (3, len(LABELS)) and np.isfinite(scores.logprobs).all()
    assert (scores.logprobs < 0).all()
