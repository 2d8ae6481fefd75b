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
