"""Hostile data files: deeply nested JSON, huge rows, field_map keys that match no field."""

import json
import time

import pytest

from tuneforge.config.schema import DataConfig, DatasetSource
from tuneforge.data import prepare
from tuneforge.data.clean import CHARS_PER_TOKEN_BOUND, check_length
from tuneforge.data.load import load_examples
from tuneforge.errors import DataError


def _alpaca(n):
    return [{"instruction": f"Question number {i}?", "input": "", "output": f"Answer {i}."} for i in range(n)]


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_jsonl_line_is_an_error_with_file_and_line(tmp_path):
    path = _write(tmp_path / "deep.jsonl", [*_alpaca(2), DEEP])
    with pytest.raises(DataError, match=rf"{path}:3: not valid JSON: nested too deeply"):
        load_examples(str(path))


def test_deeply_nested_jsonl_line_is_skipped_and_counted(tmp_path, tiny_tokenizer):
    path = _write(tmp_path / "deep.jsonl", [*_alpaca(20), DEEP, '{"instruction": ' * 50_000])
    data = prepare(DataConfig(train=[str(path)], on_bad_rows="skip"), tiny_tokenizer, max_seq_length=128, seed=0)
    stats = data.report.sources[str(path)]
    assert stats.rows_read == 22 and stats.drops["malformed"].count == 2
    assert stats.rows_kept + stats.dropped == stats.rows_read
    assert any(":21: " in e for e in stats.drops["malformed"].examples)


def test_deeply_nested_json_file_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP)
    with pytest.raises(DataError, match=rf"{path}: not valid JSON: nested too deeply"):
        load_examples(str(path))


def test_a_multi_megabyte_row_is_counted_too_long_without_tokenizing(tmp_path, tiny_tokenizer):
    huge = {"instruction": "Summarise.", "input": "lorem ipsum dolor " * 300_000, "output": "ok"}  # ~5.4 MB
    path = _write(tmp_path / "huge.jsonl", [*_alpaca(20), huge])
    started = time.perf_counter()
    data = prepare(DataConfig(train=[str(path)]), tiny_tokenizer, max_seq_length=128, seed=0)
    seconds = time.perf_counter() - started
    stats = data.report.sources[str(path)]
    assert stats.drops["too_long"].count == 1 and stats.rows_read == 21
    assert stats.rows_kept + stats.dropped == stats.rows_read  # the report stays exact
    example = stats.drops["too_long"].examples[0]
    assert example.startswith(f"{path}:21: 54000") and "not tokenized" in example
    # Tokenizing this row with the tiny tokenizer takes far longer (and gigabytes); the check costs milliseconds.
    assert seconds < 10, seconds


def test_the_character_bound_applies_with_truncate_too(tmp_path, tiny_tokenizer):
    huge = {"instruction": "x" * (128 * CHARS_PER_TOKEN_BOUND + 1), "output": "ok"}
    path = _write(tmp_path / "huge.jsonl", [*_alpaca(20), huge])
    data = prepare(DataConfig(train=[str(path)], clean={"too_long": "truncate"}), tiny_tokenizer, max_seq_length=128, seed=0)
    assert data.report.sources[str(path)].drops["too_long"].count == 1


def test_check_length_bound_is_max_seq_length_times_the_chars_per_token_bound():
    limit = 64 * CHARS_PER_TOKEN_BOUND
    assert check_length({"text": "a" * limit}, 64) is None
    assert check_length({"messages": [{"role": "user", "content": "a" * limit}, {"role": "assistant", "content": "b"}]}, 64).reason == "too_long"


def test_field_map_source_that_no_row_has_names_file_key_fields_and_closest(tmp_path):
    # The target 'instruction' already exists, so a check on renamed rows would pass silently.
    rows = [{"instruction": "q", "question": "what?", "output": "a"} for _ in range(3)]
    path = _write(tmp_path / "qa.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_examples(DatasetSource(path=str(path), field_map={"questoin": "instruction"}))
    text = str(err.value)
    assert text.startswith(f"{path}: field_map renames 'questoin' to 'instruction' but no row has a field 'questoin'")
    assert "did you mean 'question'?" in text and "fields in the file: instruction, output, question" in text
