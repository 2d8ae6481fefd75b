"""Comparing runs: one table of their numbers, their loss curves overlaid."""

from __future__ import annotations

import json

import pytest

from tests.ui.fake_runs import append_metrics, write_run
from tuneforge.ui.compare import compare_run, curves, metric_names
from tuneforge.ui.tail import read_all_records


def test_compare_run_reads_final_and_best_losses_and_metrics(runs_dir):
    c = compare_run(runs_dir, "alpha")
    assert c.final_loss == pytest.approx(3.0 / 10) and c.best_eval_loss == pytest.approx(3.0 * 1.07 / 10)
    assert c.metrics == {"accuracy": pytest.approx(0.8)}
    assert [s for s, _ in c.curves["loss"]] == list(range(1, 11)) and [s for s, _ in c.curves["eval_loss"]] == [5, 10]
    assert metric_names([c, compare_run(runs_dir, "beta")]) == ["accuracy"]


def test_curves_skip_lines_without_a_number():
    assert curves([{"step": 1, "loss": None}, {"loss": 2.0}, {"step": 3, "eval_loss": 1.0}]) == {"loss": [], "eval_loss": [(3, 1.0)]}


def test_read_all_records_crosses_batches(tmp_path):
    run = write_run(tmp_path, "r", metrics_steps=0)
    append_metrics(run, range(1, 20001))  # > 1 MiB: several reads
    records = read_all_records(run / "metrics.jsonl")
    assert len(records) == 20000 + 4000 and records[-1] == json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_compare_page_table_and_refusals(client):
    page = client.get("/compare", params=[("run", "alpha"), ("run", "beta")])
    assert page.status_code == 200
    table = page.text.split('id="compare-table"')[1].split("</table>")[0]
    assert table.count("<tr>") == 3 and "0.3000" in table and "accuracy (tuned)" in table
    drawn = json.loads(page.text.split("tuneforge.comparePage(")[1].split(");</script>")[0])
    assert [name for name, _ in drawn] == ["alpha", "beta"] and drawn[0][1]["loss"][0] == [1, 3.0]
    assert client.get("/compare", params={"run": ".."}).status_code == 400
    assert client.get("/compare", params={"run": "ghost"}).status_code == 404
    assert "Pick two or more runs" in client.get("/compare").text
