"""End to end through prepare(): counts, dedupe across splits, determinism, mixing, capping."""

from __future__ import annotations

import json

import pytest

from tuneforge.config.schema import DataConfig
from tuneforge.data import PreparedData, prepare, reference
from tuneforge.data.clean import dedupe_key
from tuneforge.errors import DataError


def run(tokenizer, seed=42, max_seq_length=256, **data) -> PreparedData:
    return prepare(DataConfig(**data), tokenizer, max_seq_length=max_seq_length, seed=seed)


def test_basic_alpaca(write_jsonl, alpaca_rows, tiny_tokenizer):
    path = write_jsonl("a.jsonl", alpaca_rows(50))
    data = run(tiny_tokenizer, train=[str(path)])
    assert (len(data.train), len(data.validation), len(data.test_examples)) == (40, 5, 5)
    assert data.format == "alpaca" and data.report.format == "alpaca"
    assert len(data.train_examples) == len(data.train)
    assert set(data.train[0]) == {"input_ids", "labels"}
    assert data.sources == {str(path): data.report.sources[str(path)].sha256}
    tokens = data.report.tokens
    assert tokens["examples"] == 40 and tokens["total_tokens"] == sum(len(t["input_ids"]) for t in data.train)
    assert tokens["max_length"] == max(len(t["input_ids"]) for t in data.train)
    assert 0 < tokens["answer_tokens"] < tokens["total_tokens"]
    assert data.report.splits == {"train": 40, "validation": 5, "test": 5}
    assert "chat template" in data.report.template


def test_every_row_is_accounted_for(write_jsonl, alpaca_rows, tiny_tokenizer):
    rows = alpaca_rows(30)
    bad = [
        '{"instruction": "broken", ',                                            # malformed JSON
        {"instruction": "missing the output"},                                  # missing field
        {"instruction": "empty answer", "output": "   "},                       # empty
        {**rows[3], "instruction": rows[3]["instruction"].upper() + "  "},      # normalized duplicate
        rows[5],                                                                # exact duplicate
        {"instruction": "long " * 300, "output": "x"},                          # too long
    ]
    chats = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "no answer"}]},                # no assistant turn
    ]
    a = write_jsonl("a.jsonl", rows + bad)
    b = write_jsonl("b.jsonl", chats)
    data = run(tiny_tokenizer, train=[str(a), str(b)], on_bad_rows="skip", max_seq_length=128)

    stats = {s.path: s for s in data.report.sources.values()}
    assert stats[str(a)].rows_read == len(a.read_text().splitlines())
    drops = {reason: d.count for reason, d in stats[str(a)].drops.items()}
    assert drops == {"malformed": 2, "empty": 1, "duplicate": 2, "too_long": 1}
    assert stats[str(b)].drops["no_assistant_turn"].count == 1
    for s in stats.values():
        assert s.rows_read == s.rows_kept + s.dropped
        assert s.rows_kept == sum(s.split.values())
    produced = len(data.train_examples) + len(data.validation_examples) + len(data.test_examples)
    assert data.report.rows_kept == produced == 31
    assert data.report.rows_read == produced + data.report.dropped
    json.dumps(data.report.to_dict())  # serialisable


def test_bad_rows_stop_by_default(write_jsonl, alpaca_rows, tiny_tokenizer):
    path = write_jsonl("a.jsonl", alpaca_rows(5) + ['{"instruction": "broken", '])
    with pytest.raises(DataError, match=rf"{path}:6: not valid JSON"):
        run(tiny_tokenizer, train=[str(path)])


def test_no_heldout_example_is_also_trained_on(write_jsonl, alpaca_rows, tiny_tokenizer):
    rows = alpaca_rows(40)
    variants = [{**r, "instruction": "  " + r["instruction"].lower(), "output": r["output"].upper()} for r in rows]
    train = write_jsonl("train.jsonl", rows + variants)
    test_row = {"instruction": "Question number 7?", "input": "", "output": "Answer 7."}
    test = write_jsonl("test.jsonl", [test_row, {"instruction": "Only in test", "output": "t"}])
    data = run(tiny_tokenizer, train=[str(train)], test=[str(test)])
    trained = {dedupe_key(ex, "normalized") for ex in data.train_examples}
    held = {dedupe_key(ex, "normalized") for ex in data.validation_examples + data.test_examples}
    assert not trained & held
    assert len(data.test_examples) == 2 and [reference(ex) for ex in data.test_examples] == ["Answer 7.", "t"]
    assert data.report.sources[str(train)].drops["duplicate"].count == 41  # 40 variants + the test row


def test_dedupe_can_be_exact_or_off(write_jsonl, alpaca_rows, tiny_tokenizer):
    rows = alpaca_rows(20)
    path = write_jsonl("a.jsonl", rows + [{**rows[0], "output": rows[0]["output"].lower()}, rows[1]])
    split = {"validation": 0, "test": 0}
    assert len(run(tiny_tokenizer, train=[str(path)], split=split, clean={"dedupe": "exact"}).train) == 21
    assert len(run(tiny_tokenizer, train=[str(path)], split=split, clean={"dedupe": "none"}).train) == 22
    assert len(run(tiny_tokenizer, train=[str(path)], split=split).train) == 20


def test_split_is_deterministic_by_seed(write_jsonl, alpaca_rows, tiny_tokenizer):
    rows = alpaca_rows(60)
    path = write_jsonl("a.jsonl", rows)
    reordered = write_jsonl("b.jsonl", rows[::-1])

    def held(data):
        return [reference(ex) for ex in data.test_examples], [reference(ex) for ex in data.validation_examples]

    first = run(tiny_tokenizer, train=[str(path)], seed=1)
    assert held(run(tiny_tokenizer, train=[str(path)], seed=1)) == held(first)
    assert first.train == run(tiny_tokenizer, train=[str(path)], seed=1).train
    assert held(run(tiny_tokenizer, train=[str(path)], seed=2)) != held(first)
    assert sorted(held(run(tiny_tokenizer, train=[str(reordered)], seed=1))[0]) == sorted(held(first)[0])


def test_explicit_validation_file_with_carved_test(write_jsonl, alpaca_rows, tiny_tokenizer):
    train = write_jsonl("train.jsonl", alpaca_rows(20))
    val = write_jsonl("val.jsonl", alpaca_rows(3, start=100))
    data = run(tiny_tokenizer, train=[str(train)], validation=[str(val)], split={"validation": 0.3, "test": 0.1})
    assert len(data.validation) == 3 and len(data.test_examples) == 2 and len(data.train) == 18
    assert data.report.sources[str(val)].role == "validation"
    assert "validation: from data.validation" in data.report.split_method


def test_mixing_by_weight(write_jsonl, alpaca_rows, tiny_tokenizer):
    a = write_jsonl("a.jsonl", alpaca_rows(10))
    b = write_jsonl("b.jsonl", alpaca_rows(10, start=50))
    data = run(
        tiny_tokenizer, train=[{"path": str(a), "weight": 2.0}, {"path": str(b), "weight": 0.5}],
        split={"validation": 0, "test": 0},
    )
    assert len(data.train) == 25
    assert data.report.sources[str(a)].rows_in_training == 20 and data.report.sources[str(b)].rows_in_training == 5
    assert len({reference(ex) for ex in data.train_examples}) == 15
    assert data.report.rows_read == data.report.rows_kept == 20


def test_max_examples_caps_training_rows(write_jsonl, alpaca_rows, tiny_tokenizer):
    path = write_jsonl("a.jsonl", alpaca_rows(30))
    data = run(tiny_tokenizer, train=[str(path)], max_examples=7)
    assert len(data.train) == len(data.train_examples) == 7
    assert data.report.max_examples == {"limit": 7, "removed": 17}
    assert len(data.test_examples) == 3  # held-out sets are not capped


def test_system_prompt_and_pii_through_prepare(write_jsonl, tiny_tokenizer):
    rows = [{"instruction": f"Ticket {i} from ann{i}@example.com", "output": "account"} for i in range(10)]
    path = write_jsonl("a.jsonl", rows)
    data = run(tiny_tokenizer, train=[str(path)], system_prompt="Route the ticket.", clean={"redact_pii": True},
               split={"validation": 0, "test": 0})
    ex = data.train_examples[0]
    assert ex["messages"][0] == {"role": "system", "content": "Route the ticket."}
    assert "[EMAIL]" in ex["messages"][1]["content"] and "@" not in ex["messages"][1]["content"]
    assert data.report.sources[str(path)].pii_redactions == {"email": 10}


def test_truncation_is_counted(write_jsonl, alpaca_rows, tiny_tokenizer):
    path = write_jsonl("a.jsonl", alpaca_rows(10) + [{"instruction": "q", "output": "long answer " * 100}])
    data = run(tiny_tokenizer, train=[str(path)], clean={"too_long": "truncate"}, max_seq_length=64,
               split={"validation": 0, "test": 0})
    assert len(data.train) == 11 and max(len(t["input_ids"]) for t in data.train) == 64
    assert data.report.sources[str(path)].truncated == 1 and data.report.tokens["truncated"] == 1


def test_text_format(write_jsonl, tiny_tokenizer):
    path = write_jsonl("t.jsonl", [{"text": f"Document number {i}."} for i in range(10)])
    data = run(tiny_tokenizer, train=[str(path)])
    assert data.format == "text"
    assert all(t["labels"] == t["input_ids"] for t in data.train)


def test_config_level_errors(write_jsonl, alpaca_rows, tiny_tokenizer):
    path = write_jsonl("a.jsonl", alpaca_rows(10))
    with pytest.raises(DataError, match=r"data.train\[0\] and data.test\[0\] both name"):
        run(tiny_tokenizer, train=[str(path)], test=[str(path)])
    empty = write_jsonl("e.jsonl", [{"instruction": "q", "output": " "}] * 3)
    with pytest.raises(DataError, match=r"no training rows left after cleaning \(3 read; dropped: empty 3\)"):
        run(tiny_tokenizer, train=[str(empty)])
    pref = write_jsonl("p.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="preference data .* trains with `training.objective: dpo`, not sft"):
        run(tiny_tokenizer, train=[str(pref)], on_bad_rows="skip")


def test_long_test_rows_are_evaluated_not_dropped(write_jsonl, alpaca_rows, tiny_tokenizer):
    long_rows = [{"instruction": f"long question {i} " + "word " * 200, "output": f"x{i}"} for i in range(3)]
    train = write_jsonl("train.jsonl", alpaca_rows(20) + long_rows[:1])
    test = write_jsonl("test.jsonl", alpaca_rows(4, start=100) + long_rows[1:])
    data = run(tiny_tokenizer, train=[str(train)], test=[str(test)], max_seq_length=128)
    # The test file is the benchmark: every row stays, however long; training still drops its long row.
    assert len(data.test_examples) == 6
    assert "too_long" not in data.report.sources[str(test)].drops
    assert data.report.sources[str(train)].drops["too_long"].count == 1
    assert data.report.test_longer_than_max_seq_length == 2
    assert any("2 test rows are longer than training.max_seq_length=128" in note for note in data.report.notes)


def test_long_rows_of_a_carved_split(write_jsonl, alpaca_rows, tiny_tokenizer):
    long_rows = [{"instruction": f"long question {i} " + "word " * 200, "output": f"x{i}"} for i in range(20)]
    path = write_jsonl("a.jsonl", alpaca_rows(20) + long_rows)
    data = run(tiny_tokenizer, train=[str(path)], max_seq_length=128, split={"validation": 0.2, "test": 0.25})
    long_in_test = sum(ex["messages"][-1]["content"].startswith("x") for ex in data.test_examples)
    assert len(data.test_examples) == 10 and long_in_test > 0  # carved from all 40 rows, long ones included
    assert data.report.test_longer_than_max_seq_length == long_in_test
    stats = data.report.sources[str(path)]
    # Long rows that landed in training or validation are dropped there, and every row is still accounted for.
    assert stats.drops["too_long"].count == 20 - long_in_test
    assert all(len(t["input_ids"]) <= 128 for t in data.train + data.validation)
    assert stats.rows_read == stats.rows_kept + stats.dropped and stats.rows_kept == sum(stats.split.values())
