"""The per-row work of preparation: the same values in this process and in workers, compact tokens."""

from __future__ import annotations

from array import array

from tuneforge.config.schema import CleanConfig
from tuneforge.data.assess import Work, assess, assess_all, choose_num_proc
from tuneforge.data.template import Encoded, encode_example


def _rows(n):
    return [({"messages": [{"role": "user", "content": f"  q {i}  "}, {"role": "assistant", "content": f"a {i}" if i % 7 else " "}]},
             f"f.jsonl:{i + 1}") for i in range(n)]


def test_workers_give_the_values_of_this_process_in_order(tiny_tokenizer):
    work = Work(CleanConfig(), tiny_tokenizer, 64)
    here = list(assess_all(_rows(1200), work, num_proc=1))
    there = list(assess_all(_rows(1200), work, num_proc=2))  # 3 chunks over 2 worker processes
    assert here == there and [a.where for a in there] == [f"f.jsonl:{i + 1}" for i in range(1200)]
    assert sum(a.dropped is not None for a in here) == 172  # every 7th answer is empty after cleaning


def test_kept_tokens_are_compact_and_equal_to_the_encoding(tiny_tokenizer):
    example, where = _rows(2)[1]
    row = assess(example, where, Work(CleanConfig(), tiny_tokenizer, 64))
    assert isinstance(row.encoded, Encoded) and isinstance(row.encoded.input_ids, array)
    assert row.encoded.as_dict() == encode_example(row.example, tiny_tokenizer, max_seq_length=64).as_dict()


def test_the_worker_counts_the_labels_the_main_process_used_to_count(tiny_tokenizer):
    from tuneforge.data.clean import clean_example
    from tuneforge.data.store import targets
    from tuneforge.data.template import IGNORE_INDEX

    example, where = _rows(2)[1]
    row = assess(example, where, Work(CleanConfig(), tiny_tokenizer, 64))
    labels = list(row.encoded.labels)
    assert row.answer_tokens == sum(x != IGNORE_INDEX for x in labels) > 0
    assert row.targets == targets({"labels": labels}) == row.answer_tokens  # the first token is a prompt token
    assert row.example == clean_example(example, CleanConfig()).example  # sent as JSON text, parsed back the same
    first_labelled = Encoded([1, 2, 3], [1, IGNORE_INDEX, 3])
    assert first_labelled.answer_tokens == 2 and targets(first_labelled.as_dict()) == 1


def test_small_sources_stay_in_this_process_unless_asked(monkeypatch):
    assert choose_num_proc(None, 100) == 1 and choose_num_proc(3, 100) == 3 and choose_num_proc(None, 10**6) >= 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1000")  # DDP ranks share the cores
    assert choose_num_proc(None, 10**6) == 1
