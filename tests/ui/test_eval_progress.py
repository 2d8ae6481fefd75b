"""The final evaluation's progress, from eval/progress.json to the run page's event stream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

from fastapi.testclient import TestClient

from tuneforge.ui import create_app


def test_final_eval_progress_is_recorded_and_streamed(finished_run):
    progress = json.loads((finished_run / "eval" / "progress.json").read_text())
    assert progress["done"] == progress["total"] == 8 * 2 and progress["models"] == 2  # tuned and base
    with TestClient(create_app(finished_run.parent, keys=None)) as client:
        body = client.get("/api/runs/tiny/metrics").text
    event = body.split("event: eval\n")[1].split("\n\n")[0]
    assert json.loads(event.removeprefix("data: ")) == progress
    assert body.index("event: eval") < body.index("event: end")


def test_tuneforge_eval_of_a_run_reports_progress_and_refreshes_the_model_card(finished_run, tmp_path):
    from tuneforge.eval import evaluate

    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished_run, run)
    (run / "README.md").write_text("stale card\n")
    result = evaluate(run, max_examples=4)
    progress = json.loads((run / "eval" / "progress.json").read_text())
    assert progress["pid"] == os.getpid()  # the dashboard follows the evaluating process, not the run's state
    assert progress["done"] == progress["total"] == 4 * 2
    card = (run / "README.md").read_text()
    assert card.startswith("---") and "stale card" not in card
    assert result.examples == 4 and "on 4 held-out test examples" in card


def test_the_run_page_streams_a_later_evaluation_until_it_is_done(finished_run, tmp_path):
    """A finished run being evaluated by a live `tuneforge eval` process: the stream stays open and
    sends its progress until the evaluation is done (and ends at once when that process is gone)."""
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished_run, run)
    progress = run / "eval" / "progress.json"
    step = {"phase": "generating (tuned)", "done": 1, "total": 4, "examples": 2, "models": 2, "elapsed_s": 1.0}
    progress.write_text(json.dumps({**step, "pid": os.getpid()}))

    def finish():
        time.sleep(1.5)
        progress.write_text(json.dumps({**step, "done": 4, "elapsed_s": 3.0, "pid": os.getpid()}))

    thread = threading.Thread(target=finish)
    thread.start()
    with TestClient(create_app(run.parent, keys=None)) as client:
        body = client.get("/api/runs/tiny/metrics").text
    thread.join()
    events = [json.loads(e.split("\n\n")[0].removeprefix("data: ")) for e in body.split("event: eval\n")[1:]]
    assert [e["done"] for e in events] == [1, 4]
    assert body.index("event: end") > body.rindex("event: eval")

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    progress.write_text(json.dumps({**step, "pid": dead.pid}))  # the evaluating process died half way
    with TestClient(create_app(run.parent, keys=None)) as client:
        body = client.get("/api/runs/tiny/metrics").text
    assert body.count("event: eval") == 1 and "event: end" in body
