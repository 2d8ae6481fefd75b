"""data.balance: oversampling minority labels of the training split only, counted in the data report."""

from __future__ import annotations

from collections import Counter

import pytest

from tuneforge.config.schema import DataConfig
from tuneforge.data import prepare
from tuneforge.data.balance import detect_labels, label_counts, oversample
from tuneforge.data.template import reference
from tuneforge.errors import DataError


def test_oversample_repeats_minority_labels_up_to_the_largest():
    rows = [f"o{i}" for i in range(6)] + ["a1", "a2", "b1", "x"]
    labels = ["other"] * 6 + ["a", "a", "b", None]
    out = oversample(rows, labels, seed=0)
    got = Counter({"o": sum(r.startswith("o") for r in out), "a": sum(r.startswith("a") for r in out),
                   "b": sum(r.startswith("b") for r in out), "x": out.count("x")})
    assert got == {"o": 6, "a": 6, "b": 6, "x": 1}
    assert set(rows) <= set(out)  # every original row is still there
    assert out == oversample(rows, labels, seed=0) and out != oversample(rows, labels, seed=1)


def test_detect_labels_only_for_a_small_set_of_short_repeated_answers():
    assert detect_labels(["billing", "refund", "billing", "refund "]) == ["billing", "refund"]
    assert detect_labels([f"answer {i}" for i in range(10)]) is None  # every answer distinct
    assert detect_labels(["a long free text answer of many words here"] * 4 + ["b"] * 4) is None
    assert detect_labels(["same"] * 8) is None  # one label: nothing to balance
    assert label_counts(["a", None, "a"], ["a", "b"]) == {"a": 2, "b": 0, "(no label)": 1}


def _tickets(write_jsonl, majority=40, minority=6):
    rows = [{"instruction": "Classify.", "input": f"ticket about something {i}", "output": "Other"} for i in range(majority)]
    for label in ("billing", "refund"):
        rows += [{"instruction": "Classify.", "input": f"{label} ticket {i}", "output": label} for i in range(minority)]
    return write_jsonl("tickets.jsonl", rows)


def _prepare(path, tokenizer, balance, labels=None):
    cfg = DataConfig(train=[str(path)], split={"validation": 0.1, "test": 0.2}, balance=balance)
    return prepare(cfg, tokenizer, max_seq_length=128, seed=3, labels=labels)


def test_prepare_balances_training_rows_and_leaves_held_out_splits_alone(write_jsonl, tiny_tokenizer):
    path = _tickets(write_jsonl)
    plain = _prepare(path, tiny_tokenizer, "none")
    balanced = _prepare(path, tiny_tokenizer, "oversample")
    counts = Counter(reference(ex) for ex in balanced.train_examples)
    assert counts["billing"] == counts["refund"] == counts["Other"] == Counter(reference(e) for e in plain.train_examples)["Other"]
    assert len(balanced.train) == len(balanced.train_examples)  # tokens follow the examples
    assert balanced.test_examples == plain.test_examples and balanced.validation_examples == plain.validation_examples
    report = balanced.report.to_dict()["balance"]
    assert report["labels_from"] == "detected from the answers"
    assert report["before"] == dict(Counter(reference(e) for e in plain.train_examples))
    assert set(report["after"].values()) == {counts["Other"]}
    assert plain.report.balance is None


def test_balance_uses_eval_labels_and_refuses_answers_without_labels(write_jsonl, alpaca_rows, tiny_tokenizer):
    path = _tickets(write_jsonl)
    with_labels = _prepare(path, tiny_tokenizer, "oversample", labels=["billing", "refund"])
    balance = with_labels.report.balance
    assert balance["labels_from"] == "eval.labels" and "(no label)" in balance["after"]  # "Other" kept as is
    free_text = write_jsonl("free.jsonl", alpaca_rows(30))
    with pytest.raises(DataError, match="data.balance: oversample needs labels"):
        _prepare(free_text, tiny_tokenizer, "oversample")


def test_balance_is_refused_for_preference_objectives():
    from pydantic import ValidationError

    from tuneforge.config.schema import RunConfig

    with pytest.raises(ValidationError, match="data.balance 'oversample' balances SFT answers"):
        RunConfig(data={"train": "pairs.jsonl", "balance": "oversample"}, training={"objective": "dpo"})


def test_loss_weights_keep_the_rows_and_equalise_each_labels_total_weight(write_jsonl, tiny_tokenizer):
    from tuneforge.data.balance import label_weights

    path = _tickets(write_jsonl)
    plain = _prepare(path, tiny_tokenizer, "none")
    weighted = _prepare(path, tiny_tokenizer, "loss_weights")
    assert weighted.train_examples == plain.train_examples and weighted.test_examples == plain.test_examples
    totals = Counter()
    for row, ex in zip(weighted.train, weighted.train_examples):
        totals[reference(ex)] += row["weight"]
    assert max(totals.values()) - min(totals.values()) < 0.01  # every label carries the same total weight
    assert abs(sum(totals.values()) / len(weighted.train) - 1) < 0.01  # mean weight 1: the learning rate keeps its scale
    assert weighted.report.balance["weights"] == label_weights([reference(e) for e in plain.train_examples])
    assert all("weight" not in row for row in plain.train)


def test_cached_preparation_keeps_the_loss_weights_and_follows_the_labels(write_jsonl, tiny_tokenizer, tmp_path):
    path = _tickets(write_jsonl)
    cfg = DataConfig(train=[str(path)], split={"validation": 0.1, "test": 0.2}, balance="loss_weights")
    first = prepare(cfg, tiny_tokenizer, max_seq_length=128, seed=3, cache_dir=tmp_path / "cache")
    again = prepare(cfg, tiny_tokenizer, max_seq_length=128, seed=3, cache_dir=tmp_path / "cache")
    assert again.reused and [r["weight"] for r in again.train] == [r["weight"] for r in first.train]
    # eval.labels decide each row's label, so other labels are another preparation, not the cached one
    other = prepare(cfg, tiny_tokenizer, max_seq_length=128, seed=3, cache_dir=tmp_path / "cache", labels=["billing"])
    assert not other.reused and other.report.balance["labels_from"] == "eval.labels"
