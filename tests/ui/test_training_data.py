"""The data page: data report, token-length histogram, training examples as the model saw them."""

from __future__ import annotations

import html
import json

from fastapi.testclient import TestClient

from tuneforge.config import load_config
from tuneforge.data import prepare
from tuneforge.data.template import IGNORE_INDEX
from tuneforge.models.load import load_tokenizer
from tuneforge.ui import create_app
from tuneforge.ui.training_data import PAGE_SIZE, length_histogram, rebuild, segments


def test_histogram_bins_cover_every_length_once():
    bins = length_histogram([(10, 3), (11, 1), (57, 2), (100, 4)], bins=5)
    assert sum(b.count for b in bins) == 10
    assert bins[0].lo == 10 and bins[-1].hi == 100 and len(bins) <= 5
    assert all(a.hi + 1 == b.lo for a, b in zip(bins, bins[1:]))
    assert length_histogram([]) == [] and length_histogram([(7, 2)]) == [type(bins[0])(7, 7, 2)]


def test_segments_split_at_the_label_boundary(tiny_tokenizer):
    ids = tiny_tokenizer("hello world again", add_special_tokens=False)["input_ids"]
    labels = [IGNORE_INDEX] * 2 + ids[2:]
    parts = segments(ids, labels, tiny_tokenizer)
    assert [on for _, on in parts] == [False, True]
    assert "".join(t for t, _ in parts) == tiny_tokenizer.decode(ids)


def test_training_lengths_are_recorded_and_the_split_rebuilds_exactly(finished_run):
    lengths = json.loads((finished_run / "data" / "lengths.json").read_text())["train"]
    cfg = load_config(finished_run / "config.yaml")
    tokenizer = load_tokenizer(finished_run / "adapter")
    prepared = prepare(cfg.data, tokenizer, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed)
    expected = {}
    for row in prepared.train:
        expected[len(row["input_ids"])] = expected.get(len(row["input_ids"]), 0) + 1
    assert {n: c for n, c in lengths} == expected
    view = rebuild(finished_run.parent, finished_run)
    assert view.problem is None and view.changed == [] and view.rows == prepared.train


def test_data_page_shows_report_histogram_and_highlighted_answers(finished_run):
    with TestClient(create_app(finished_run.parent, keys=None)) as client:
        page = client.get("/runs/tiny/data")
        assert page.status_code == 200
        text = page.text
        report = json.loads((finished_run / "data_report.json").read_text())
        assert f"{report['totals']['rows_read']} rows read" in text
        bars = text.count('class="bar"')
        assert bars >= 1 and "recorded by training in data/lengths.json" in text
        total = sum(c for _, c in json.loads((finished_run / "data" / "lengths.json").read_text())["train"])
        assert f"{total} examples" in text
        rows = text.count('<tr class="example">')
        assert rows == PAGE_SIZE
        # ChatML (the tiny tokenizer's template): the whole conversation shows, only the answer and its
        # end-of-turn token are highlighted as trained.
        first = html.unescape(text.split('<tr class="example">')[1])
        assert "<|im_start|>user\nClassify the ticket." in first and "<|im_start|>assistant\n" in first
        trained = first.split('<mark class="trained">')[1:]
        assert len(trained) == 1
        label, end = trained[0].split("</mark>")[0].split("<|im_end|>")
        assert label in {"billing", "shipping", "account", "refund"} and end == ""
        last = client.get("/runs/tiny/data?page=99")  # past the end: the last page
        assert last.status_code == 200 and "next →" not in last.text


def test_data_page_says_when_the_data_file_changed_and_when_it_is_gone(finished_run, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(finished_run, runs / "tiny")
    data = tmp_path / "tickets.jsonl"
    shutil.copy(load_config(finished_run / "config.yaml").data.train[0].path, data)
    with TestClient(create_app(runs, keys=None)) as client:
        assert client.get("/runs/tiny/data").status_code == 200
    # A run trained on `data` (its config and data report name it, with its SHA-256), then `data` changes.
    import yaml

    raw = yaml.safe_load((runs / "tiny" / "config.yaml").read_text())
    original, raw["data"]["train"][0]["path"] = raw["data"]["train"][0]["path"], str(data)
    report = (runs / "tiny" / "data_report.json").read_text()
    (runs / "tiny" / "data_report.json").write_text(report.replace(json.dumps(original), json.dumps(str(data))))
    data.write_text(data.read_text().replace("billing", "invoices"))
    (runs / "tiny" / "config.yaml").write_text(yaml.safe_dump(raw))
    with TestClient(create_app(runs, keys=None)) as client:
        text = client.get("/runs/tiny/data").text
        assert "changed since the run" in text and str(data) in text
    data.unlink()
    with TestClient(create_app(runs, keys=None)) as client:
        page = client.get("/runs/tiny/data")
        assert page.status_code == 200 and 'id="examples-problem"' in page.text and "tickets.jsonl" in page.text
        assert 'class="bar"' in page.text  # the recorded lengths still show



def test_data_page_of_a_run_whose_examples_cannot_be_rebuilt_still_shows_its_report(client):
    page = client.get("/runs/alpha/data")  # a run folder written file by file: its config has no data section
    assert page.status_code == 200
    assert "120 rows read" in page.text and 'id="examples-problem"' in page.text
    assert "cannot be rebuilt" in page.text and 'class="bar"' not in page.text
    assert client.get("/runs/..%2Falpha/data").status_code in (400, 404)
    assert client.get("/runs/nope/data").status_code == 404


def test_a_run_without_recorded_lengths_gets_them_from_the_rebuilt_examples(finished_run, tmp_path):
    import re
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(finished_run, runs / "tiny")
    (runs / "tiny" / "data" / "lengths.json").unlink()  # a run from before lengths were recorded
    with TestClient(create_app(runs, keys=None)) as client:
        text = client.get("/runs/tiny/data").text
    assert "from the examples rebuilt below" in text
    counts = [int(n) for n in re.findall(r'data-count="(\d+)"', text)]
    assert sum(counts) == json.loads((finished_run / "data_report.json").read_text())["splits"]["train"]
