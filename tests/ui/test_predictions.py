"""Filtering and paging predictions: wrong→right, right→wrong, unparseable, by label, text search."""

from __future__ import annotations

from tests.ui.fake_runs import prediction
from tuneforge.ui.predictions import PredictionsCache, filter_page

ROWS = [prediction(i) for i in range(100)]


def _indices(**kw):
    return [r["index"] for r in filter_page(ROWS, metric="accuracy", per_page=1000, **kw).rows]


def test_wrong_to_right_and_right_to_wrong_follow_the_per_example_metric():
    w2r = _indices(kind="wrong_to_right")
    r2w = _indices(kind="right_to_wrong")
    assert w2r and r2w and not set(w2r) & set(r2w)
    for i in w2r:
        assert ROWS[i]["base_scores"]["accuracy"] == 0 and ROWS[i]["tuned_scores"]["accuracy"] == 1
    for i in r2w:
        assert ROWS[i]["base_scores"]["accuracy"] == 1 and ROWS[i]["tuned_scores"]["accuracy"] == 0
    assert len(w2r) == sum(r["base_scores"]["accuracy"] < r["tuned_scores"]["accuracy"] for r in ROWS)


def test_without_a_decisive_metric_no_example_changed():
    assert filter_page(ROWS, kind="wrong_to_right", metric=None).total == 0


def test_unparseable_label_and_search():
    assert _indices(kind="unparseable") == [i for i in range(100) if i % 7 == 6]
    assert all("refund" in (ROWS[i]["reference"], ROWS[i]["base_label"], ROWS[i]["tuned_label"]) for i in _indices(label="refund"))
    assert _indices(query="ORDER 1042") == [42]  # case-insensitive, in the prompt
    assert _indices(query="needs</b>") == list(range(100))


def test_pages():
    page = filter_page(ROWS, page=3, per_page=30)
    assert (page.page, page.pages, page.total, [r["index"] for r in page.rows][:2]) == (3, 4, 100, [60, 61])
    assert filter_page(ROWS, page=99, per_page=30).page == 4
    assert filter_page([], page=2).rows == [] and filter_page([], page=2).pages == 1
    assert filter_page(ROWS).labels == sorted({"billing", "technical_issue", "shipping", "refund"})


def test_cache_rereads_a_changed_file(tmp_path):
    import json

    path, cache = tmp_path / "p.jsonl", PredictionsCache()
    path.write_text(json.dumps(ROWS[0]) + "\nbroken\n")
    assert [r["index"] for r in cache.load(path)] == [0]
    assert cache.load(path) is cache.load(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:3]))
    assert len(cache.load(path)) == 3
    assert cache.load(tmp_path / "missing.jsonl") == []


def test_the_dashboard_reads_predictions_through_its_one_run_file_reader(tmp_path):
    """Decryption at rest hooks into runs.read_run_file: the cache must read with it, so a file outside
    the runs folder (here through a symlink) reads as empty however it was reached."""
    import json

    from tuneforge.ui.runs import read_run_file

    runs, outside = tmp_path / "runs", tmp_path / "outside.jsonl"
    runs.mkdir()
    outside.write_text(json.dumps(ROWS[0]) + "\n")
    (runs / "p.jsonl").symlink_to(outside)
    (runs / "q.jsonl").write_text(json.dumps(ROWS[1]) + "\n")
    cache = PredictionsCache(read=lambda path: read_run_file(runs, path))
    assert cache.load(runs / "p.jsonl") == [] and [r["index"] for r in cache.load(runs / "q.jsonl")] == [1]
    shifted = PredictionsCache(read=lambda path: path.read_bytes().replace(b'"index": 1', b'"index": 7'))
    assert [r["index"] for r in shifted.load(runs / "q.jsonl")] == [7]


def test_confusion_matrix_counts_answers_per_reference_with_unparseable_apart():
    from tuneforge.ui.predictions import UNPARSEABLE, confusion

    labels, matrix = confusion(ROWS, "base")
    assert labels == ["billing", "refund", "shipping", "technical_issue"]
    assert sum(n for row in matrix.values() for n in row.values()) == 100
    assert sum(row.get(UNPARSEABLE, 0) for row in matrix.values()) == sum(r["base_label"] is None for r in ROWS)
    right = sum(matrix[label].get(label, 0) for label in labels)
    assert right == sum(r["base_label"] == r["reference"] for r in ROWS)
    assert confusion([{"index": 0, "text": "raw", "tuned_scores": {}}], "tuned") == ([], {})
