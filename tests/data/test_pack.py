"""Packing must not change the loss: examples in a packed row cannot see each other."""

import torch
import torch.nn.functional as F

from tuneforge.data.pack import IGNORE_INDEX, Collator, pack_examples
from tuneforge.models import load


def _examples(tokenizer, texts):
    out = []
    for prompt, answer in texts:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append({"input_ids": p + a, "labels": [IGNORE_INDEX] * len(p) + a})
    return out


def _loss_sum(model, batch):
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "position_ids", "attention_mask")}
    logits = model(**inputs, use_cache=False).logits  # a KV cache disables packed-mask detection
    labels = batch["labels"]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


TEXTS = [("Classify: my card was charged twice.", "billing"),
         ("Where is my parcel? It has been a week since I ordered", "shipping"),
         ("hi", "hello there, how can I help?")]


def test_packed_loss_equals_unpacked_loss(tiny_model_dir):
    lm = load(tiny_model_dir)
    model, tok = lm.model.eval(), lm.tokenizer
    examples = _examples(tok, TEXTS)
    collate = Collator(tok.pad_token_id, packed=True)
    with torch.no_grad():
        separate = sum(_loss_sum(model, collate([ex])) for ex in examples)
        packed = _loss_sum(model, collate([examples]))
        # Two packed rows of different length in one batch: padding forms its own segment.
        two_rows = _loss_sum(model, collate([examples[:2], [examples[2]]]))
    assert torch.allclose(separate, packed, rtol=1e-4, atol=1e-4), (separate, packed)
    assert torch.allclose(separate, two_rows, rtol=1e-4, atol=1e-4), (separate, two_rows)


def test_packing_without_position_ids_would_leak(tiny_model_dir):
    """The control: the same row as one plain sequence gives a different loss, so the test above can fail."""
    lm = load(tiny_model_dir)
    model, tok = lm.model.eval(), lm.tokenizer
    examples = _examples(tok, TEXTS)
    with torch.no_grad():
        separate = sum(_loss_sum(model, Collator(tok.pad_token_id, packed=True)([ex])) for ex in examples)
        leaky = _loss_sum(model, Collator(tok.pad_token_id, packed=False)([examples]))
    assert not torch.allclose(separate, leaky, rtol=1e-4, atol=1e-4)  # same tolerance as the equality test


def test_first_token_of_each_example_is_never_a_target(tiny_tokenizer):
    examples = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    batch = Collator(tiny_tokenizer.pad_token_id, packed=True)([examples])
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert "attention_mask" not in batch and int(batch["num_tokens"]) == 5


def test_pack_examples_fits_rows_and_keeps_every_example():
    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in (5, 9, 3, 7, 2, 10, 1)]
    rows = pack_examples(examples, 10, seed=3)
    assert all(sum(len(e["input_ids"]) for e in row) <= 10 for row in rows)
    assert sorted(len(e["input_ids"]) for row in rows for e in row) == sorted(len(e["input_ids"]) for e in examples)
    assert len(rows) == 4  # 37 tokens need at least 4 rows of 10
    assert rows == pack_examples(examples, 10, seed=3)
