"""Following metrics.jsonl: only new complete lines, from a byte offset."""

from __future__ import annotations

import json

from tuneforge.ui.tail import read_new_records


def test_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')  # the trainer is mid-write
    records, offset = read_new_records(path, 0)
    assert records == [{"step": 1}]
    assert read_new_records(path, offset) == ([], offset)
    with path.open("a") as f:
        f.write('ss": 0.5}\nnot json\n[1]\n')
    records, offset2 = read_new_records(path, offset)
    assert records == [{"step": 2, "loss": 0.5}] and offset2 == path.stat().st_size


def test_missing_file_and_rewritten_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert read_new_records(path, 0) == ([], 0)
    path.write_text('{"step": 1}\n')
    assert read_new_records(path, 1000) == ([{"step": 1}], path.stat().st_size)  # shrank: a new run, from the start


def test_parse_records_keeps_one_object_per_line_and_skips_the_rest():
    from tuneforge.ui.tail import parse_records

    good = b'{"a": 1}\n\n  {"b": 2}\n'
    assert parse_records(good) == [{"a": 1}, {"b": 2}]  # the one-array fast path
    # Lines that are not exactly one JSON object are skipped, even where joining them would parse.
    assert parse_records(b'{"a": 1}\n1, {"b": 2}\n{"c": 3}\n[4]\nnot json\n') == [{"a": 1}, {"c": 3}]
    assert parse_records(b'[{"a": 1}\n{"b": 2}]\n{"c": 3}\n') == [{"c": 3}]
