"""Reading every file type into canonical examples, and every bad input with and without on_bad_rows=skip."""

from __future__ import annotations

import csv
import json

import pytest

from tuneforge.config.schema import DatasetSource
from tuneforge.data import DataReport, load_examples
from tuneforge.data.load import location, source_digest
from tuneforge.errors import DataError

ROWS = [
    {"instruction": "Classify: refund please", "input": "", "output": "refund"},
    {"instruction": "Classify", "input": "cannot log in", "output": "account"},
]


def _user_and_answer(examples):
    return [(ex["messages"][0]["content"], ex["messages"][-1]["content"]) for ex in examples]


EXPECTED = [("Classify: refund please", "refund"), ("Classify\n\ncannot log in", "account")]


def test_jsonl_with_line_numbers_skipping_blank_lines(write_jsonl):
    path = write_jsonl("a.jsonl", [ROWS[0], "", ROWS[1]])
    examples = load_examples(str(path))
    assert _user_and_answer(examples) == EXPECTED
    assert [ex["meta"] for ex in examples] == [{"source": str(path), "line": 1}, {"source": str(path), "line": 3}]


@pytest.mark.parametrize("wrap", [lambda r: r, lambda r: {"data": r}, lambda r: {"rows": r}, lambda r: {"examples": r}])
def test_json_list_or_object(tmp_path, wrap):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(wrap(ROWS)))
    examples = load_examples(str(path))
    assert _user_and_answer(examples) == EXPECTED
    assert location(examples[1]["meta"]) == f"{path}: record 1"


def test_json_file_holding_json_lines(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    report = DataReport()
    assert _user_and_answer(load_examples(str(path), report=report)) == EXPECTED
    assert "JSON Lines" in report.sources[str(path)].note


def test_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"instruction": "a",\n "output": }\n]')
    with pytest.raises(DataError, match=rf"{bad}:3: not valid JSON"):
        load_examples(str(bad))
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"items": ROWS}))
    with pytest.raises(DataError, match="under 'data', 'rows' or 'examples'"):
        load_examples(str(obj))


def test_csv_line_numbers_survive_multiline_cells(tmp_path):
    path = tmp_path / "a.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerow({"instruction": "Explain", "input": "line one\nline two", "output": "ok"})
        writer.writerow({"instruction": "Classify", "input": "", "output": ""})
        writer.writerow({"instruction": "Classify", "input": "", "output": "account"})
    examples = load_examples(str(path))
    assert [ex["meta"]["line"] for ex in examples] == [2, 4, 5]
    assert examples[0]["messages"][0]["content"] == "Explain\n\nline one\nline two"


def test_csv_with_surplus_cells(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("instruction,output\nq,a\nq2,a2,extra\n")
    with pytest.raises(DataError, match=rf"{path}:3: has 3 cells but the header has 2 columns"):
        load_examples(str(path))
    report = DataReport()
    assert len(load_examples(str(path), on_bad_rows="skip", report=report)) == 1
    assert report.sources[str(path)].drops["malformed"].count == 1


def test_parquet_with_nested_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(3)]
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    report = DataReport()
    examples = load_examples(str(path), report=report)
    assert [ex["messages"][1]["content"] for ex in examples] == ["a0", "a1", "a2"]
    assert report.sources[str(path)].format == "chat"
    assert location(examples[2]["meta"]) == f"{path}: record 2"


def test_saved_dataset_and_dataset_dict(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list([{"text": "first document"}, {"text": "second document"}])
    ds.save_to_disk(str(tmp_path / "ds"))
    assert [ex["text"] for ex in load_examples(str(tmp_path / "ds"))] == ["first document", "second document"]

    DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    report = DataReport()
    assert len(load_examples(str(tmp_path / "dd"), report=report)) == 2
    assert "used its 'train' split" in report.sources[str(tmp_path / "dd")].note

    DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "no_train"))
    with pytest.raises(DataError, match="has no 'train' split \\(splits: test\\)"):
        load_examples(str(tmp_path / "no_train"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="datasets.save_to_disk"):
        load_examples(str(tmp_path / "plain"))


def test_malformed_jsonl_line_error_and_skip(write_jsonl):
    path = write_jsonl("t.jsonl", [ROWS[0], '{"instruction": "x", "output": ', ROWS[1]])
    with pytest.raises(DataError, match=rf"^{path}:2: not valid JSON: Expecting value"):
        load_examples(str(path))
    report = DataReport()
    examples = load_examples(str(path), on_bad_rows="skip", report=report)
    stats = report.sources[str(path)]
    assert len(examples) == 2 and stats.rows_read == 3 and stats.rows_kept == 2
    assert stats.drops["malformed"].count == 1
    assert stats.drops["malformed"].examples[0].startswith(f"{path}:2: ")


def test_non_object_row(write_jsonl):
    path = write_jsonl("t.jsonl", [ROWS[0], "[1, 2]"])
    with pytest.raises(DataError, match=rf"{path}:2: expected an object with fields, got list"):
        load_examples(str(path))


GOOD_CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
GOOD_SHAREGPT = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}


@pytest.mark.parametrize(
    ("rows", "message", "reason"),
    [
        (
            [ROWS[0], ROWS[1], ROWS[0], ROWS[1], {"instruction": "no answer here"}],
            r"^{path}:5: field 'output' is missing \(alpaca format\)$", "malformed",
        ),
        (
            [GOOD_SHAREGPT, {"conversations": [*GOOD_SHAREGPT["conversations"], {"from": "narrator", "value": "x"}]}],
            r"^{path}:2: conversations\[2\]\.from is 'narrator'", "malformed",
        ),
        (
            [GOOD_CHAT, {"messages": [{"role": "user", "content": "only a question"}]}],
            r"^{path}:2: the conversation in 'messages' has no assistant turn", "no_assistant_turn",
        ),
    ],
    ids=["missing_field", "wrong_role", "no_assistant_turn"],
)
def test_bad_row_error_and_skip(write_jsonl, rows, message, reason):
    path = write_jsonl("tickets.jsonl", rows)
    with pytest.raises(DataError, match=message.format(path=path)):
        load_examples(str(path))
    report = DataReport()
    assert len(load_examples(str(path), on_bad_rows="skip", report=report)) == len(rows) - 1
    stats = report.sources[str(path)]
    assert {r: d.count for r, d in stats.drops.items()} == {reason: 1}
    assert stats.rows_read == len(rows) and stats.rows_kept == len(rows) - 1


@pytest.mark.parametrize("on_bad_rows", ["error", "skip"])
def test_empty_files(tmp_path, on_bad_rows):
    for name, content in (("e.jsonl", ""), ("blank.jsonl", "\n\n"), ("e.json", ""), ("l.json", "[]"), ("e.csv", "instruction,output\n")):
        (tmp_path / name).write_text(content)
        with pytest.raises(DataError, match=rf"{tmp_path / name}: the file is empty"):
            load_examples(str(tmp_path / name), on_bad_rows=on_bad_rows)


def test_all_rows_bad_with_skip_names_the_file(write_jsonl):
    path = write_jsonl("bad.jsonl", ["{oops", "nope"])
    with pytest.raises(DataError, match=rf"{path}: no usable rows \(2 read, all dropped: malformed 2\)"):
        load_examples(str(path), on_bad_rows="skip")


@pytest.mark.parametrize("on_bad_rows", ["error", "skip"])
def test_missing_file_and_unsupported_type(tmp_path, on_bad_rows):
    with pytest.raises(DataError, match=rf"data file not found: {tmp_path / 'nope.jsonl'}"):
        load_examples(str(tmp_path / "nope.jsonl"), on_bad_rows=on_bad_rows)
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(DataError, match=r"unsupported data file type '\.txt'"):
        load_examples(str(tmp_path / "a.txt"), on_bad_rows=on_bad_rows)


@pytest.mark.parametrize("on_bad_rows", ["error", "skip"])
def test_unknown_format_and_preference_data(write_jsonl, on_bad_rows):
    path = write_jsonl("q.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=rf"{path}: cannot detect the data format .* `field_map:`"):
        load_examples(str(path), on_bad_rows=on_bad_rows)
    pref = write_jsonl("p.jsonl", [{"prompt": "p", "chosen": "good", "rejected": "bad"}])
    with pytest.raises(DataError, match=rf"{pref}: preference data .* trains with `training.objective: dpo`, not sft"):
        load_examples(str(pref), on_bad_rows=on_bad_rows)


def test_field_map_renames_before_detection(write_jsonl):
    path = write_jsonl("q.jsonl", [{"question": "What?", "answer": "That."}])
    examples = load_examples(DatasetSource(path=str(path), field_map={"question": "instruction", "answer": "output"}))
    assert _user_and_answer(examples) == [("What?", "That.")]
    with pytest.raises(DataError, match="field_map renames 'questoin' to 'instruction' but no row has a field 'questoin'"):
        load_examples(DatasetSource(path=str(path), field_map={"questoin": "instruction", "answer": "output"}))


def test_explicit_format_overrides_detection(write_jsonl):
    path = write_jsonl("t.jsonl", [{"instruction": "doc title", "text": "the body", "output": "x"}])
    assert "messages" in load_examples(str(path))[0]
    assert load_examples(DatasetSource(path=str(path), format="text"))[0]["text"] == "the body"


def test_system_prompt_is_prepended(write_jsonl):
    path = write_jsonl("a.jsonl", ROWS)
    examples = load_examples(str(path), system_prompt="You route tickets.")
    assert examples[0]["messages"][0] == {"role": "system", "content": "You route tickets."}


def test_report_records_digest_format_and_counts(write_jsonl):
    path = write_jsonl("a.jsonl", ROWS)
    report = DataReport()
    load_examples(DatasetSource(path=str(path), weight=2.0), report=report)
    stats = report.sources[str(path)]
    assert (stats.format, stats.rows_read, stats.rows_kept, stats.weight) == ("alpaca", 2, 2, 2.0)
    assert stats.sha256 == source_digest(path) and len(stats.sha256) == 64


def test_folder_digest_changes_with_content(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("1")
    before = source_digest(tmp_path / "d")
    (tmp_path / "d" / "a").write_text("2")
    assert source_digest(tmp_path / "d") != before


def test_a_jsonl_source_streams_instead_of_being_held_in_memory(write_jsonl):
    import tracemalloc

    from tuneforge.data.load import stream_examples

    rows = [{"instruction": f"Question {i}: " + "words " * 30, "output": f"Answer {i}."} for i in range(20000)]
    path = write_jsonl("big.jsonl", rows)

    def peak(consume) -> int:
        tracemalloc.start()
        try:
            consume()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    held = peak(lambda: load_examples(str(path)))
    streamed = peak(lambda: sum(1 for _ in stream_examples(str(path))))
    assert streamed * 5 < held, (streamed, held)  # ~2 MB (1 MB read buffers) vs ~23 MB
    report = DataReport()
    examples = stream_examples(str(path), report=report)
    assert report.source(str(path)).rows_read == 20000  # counted by the first pass, before any row is converted
    assert list(examples) == load_examples(str(path))
