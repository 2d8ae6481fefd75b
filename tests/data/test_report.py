"""The data report: drop records, JSON output and the rich table."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from tuneforge.data import DataReport


def test_drops_keep_count_and_three_short_examples():
    report = DataReport()
    for line in range(1, 6):
        report.drop("a.jsonl", "duplicate", f"a.jsonl:{line}", "word " * 40)
    record = report.sources["a.jsonl"].drops["duplicate"]
    assert record.count == 5 and len(record.examples) == 3
    assert record.examples[0].startswith("a.jsonl:1: word word")
    assert len(record.examples[0]) <= len("a.jsonl:1: ") + 80 and record.examples[0].endswith("…")
    assert report.dropped == 5


def test_snippets_are_redacted_when_pii_redaction_is_on():
    report = DataReport(redact_snippets=("email",))
    report.drop("a.jsonl", "malformed", "a.jsonl:2", '{"text": "mail me at ann@example.com"')
    assert report.sources["a.jsonl"].drops["malformed"].examples == ['a.jsonl:2: {"text": "mail me at [EMAIL]"']


def test_to_dict_write_and_table(tmp_path):
    report = DataReport(format="alpaca", template="chat template")
    stats = report.source("data/a.jsonl")
    stats.rows_read, stats.rows_kept, stats.format = 10, 8, "alpaca"
    stats.split.update(train=6, validation=1, test=1)
    stats.pii_redactions["email"] = 2
    report.drop("data/a.jsonl", "empty", "data/a.jsonl:3")
    report.drop("data/a.jsonl", "malformed", "data/a.jsonl:4", "{oops")
    report.tokens = {"examples": 6, "total_tokens": 600, "answer_tokens": 60, "mean_length": 100.0, "max_length": 150}

    out = report.write(tmp_path / "run" / "data_report.json")
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["totals"] == {"rows_read": 10, "rows_kept": 8, "dropped": 2}
    (source,) = data["sources"]
    assert source["drops"]["malformed"] == {"count": 1, "examples": ["data/a.jsonl:4: {oops"]}
    assert source["dropped"] == 2 and "redact_snippets" not in data

    table = report.table()
    assert isinstance(table, Table) and table.row_count == 1
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "a.jsonl" in text and "empty 1, malformed 1" in text and "email 2" in text and "600 tokens" in text
