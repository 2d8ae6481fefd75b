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


def test_confusion_matrix_counts_answers_per_reference_with_unparseable_apart():
    from tuneforge.ui.predictions import UNPARSEABLE, confusion

    labels, matrix = confusion(ROWS, "base")
    assert labels == ["billing", "refund", "shipping", "technical_issue"]
    assert sum(n for row in matrix.values() for n in row.values()) == 100
    assert sum(row.get(UNPARSEABLE, 0) for row in matrix.values()) == sum(r["base_label"] is None for r in ROWS)
    right = sum(matrix[label].get(label, 0) for label in labels)
    assert right == sum(r["base_label"] == r["reference"] for r in ROWS)
    assert confusion([{"index": 0, "text": "raw", "tuned_scores": {}}], "tuned") == ([], {})
