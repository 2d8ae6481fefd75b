"""The final evaluation's progress, from eval/progress.json to the run page's event stream."""

from __future__ import annotations

import json

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
