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


def _lengths(n, seed=0):
    import random

    rng = random.Random(seed)
    return [{"input_ids": [1] * k, "labels": [1] * k} for k in (rng.randint(1, 300) for _ in range(n))]


def test_token_batches_never_exceed_the_budget_and_keep_every_row(tiny_tokenizer):
    from tuneforge.data.pack import TokenBatch, token_batches, training_rows

    examples = _lengths(200) + [{"input_ids": [1] * 700, "labels": [1] * 700}]  # longer than the budget
    for packed in (True, False):
        items = training_rows(examples, packed=packed, max_length=1024, token_budget=512, seed=1)
        assert all(isinstance(b, TokenBatch) for b in items)
        collate = Collator(tiny_tokenizer.pad_token_id, packed=packed)
        kept = 0
        for item in items:
            batch = collate([item])  # the loader hands over one TokenBatch at a time
            kept += int(batch["num_tokens"])
            # Padded size within the budget, except a lone example longer than it.
            assert batch["input_ids"].numel() <= 512 or batch["input_ids"].shape == (1, 700), batch["input_ids"].shape
        assert kept == sum(len(e["input_ids"]) for e in examples)
    # Unpacked: rows of similar length share a batch, so several short examples fill one budget.
    short = token_batches(_lengths(50, seed=2), 512)
    assert max(len(b.rows) for b in short) > 2


def test_rows_are_sized_by_the_budget_not_max_seq_length():
    from tuneforge.data.pack import TokenBatch, row_length, training_rows

    items = training_rows(_lengths(100), packed=True, max_length=4096, token_budget=600, seed=0)
    assert max(row_length(r) for b in items for r in b.rows) <= 600
    # pack_length caps a row below the budget (several rows per batch); a longer example gets a row alone.
    items = training_rows(_lengths(100), packed=True, max_length=4096, token_budget=600, pack_length=200, seed=0)
    rows = [r for b in items for r in b.rows]
    assert all(row_length(r) <= 200 or len(r) == 1 for r in rows) and max(len(b.rows) for b in items) >= 3
    # Sized by rows (per_device_batch_size set): the old behaviour, rows up to max_seq_length.
    rows = training_rows(_lengths(100), packed=True, max_length=4096, token_budget=None, seed=0)
    assert not isinstance(rows[0], TokenBatch) and max(row_length(r) for r in rows) > 600


def test_an_example_longer_than_the_row_is_an_error_unless_alone_is_allowed():
    import pytest

    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in (5, 30, 12, 50, 7)]
    with pytest.raises(ValueError, match="50 tokens"):
        pack_examples(examples, 40, seed=0)
    rows = pack_examples(examples, 40, seed=0, longer_alone=True)
    assert [len(r) for r in rows if sum(len(e["input_ids"]) for e in r) > 40] == [1]


def test_best_fit_decreasing_fills_the_fullest_row_that_has_room():
    # Longest first, each into the row it leaves least room in: 4,4 | 3,3 | 2 -> row 1 (full), 2,2 -> row 2.
    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in (2, 3, 4, 2, 3, 2, 4)]
    rows = pack_examples(examples, 10, seed=0)
    assert sorted(sorted(len(e["input_ids"]) for e in row) for row in rows) == [[2, 2, 3, 3], [2, 4, 4]]


def test_packing_wastes_little_and_the_seed_decides_the_order():
    from tuneforge.data.pack import padding_waste

    examples = _lengths(2000, seed=4)
    rows = pack_examples(examples, 1024, seed=1)
    assert padding_waste(rows, 1024) < 0.003  # 0.16%; first fit over a random order left 0.49% here
    assert sorted(id(e) for row in rows for e in row) == sorted(id(e) for e in examples)
    assert rows == pack_examples(examples, 1024, seed=1)
    assert [len(r) for r in rows] != [len(r) for r in pack_examples(examples, 1024, seed=2)]
