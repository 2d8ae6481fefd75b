"""The dashboard over HTTP: pages, event streams, path confinement and serve's key checks."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.ui.fake_runs import append_metrics, write_run
from tuneforge.cli.main import main
from tuneforge.security import create_key
from tuneforge.serve import background_server
from tuneforge.ui import create_app


def test_runs_page_lists_every_run_with_state_and_error(client):
    page = client.get("/").text
    for name in ("alpha", "beta", "old"):
        assert f'href="/runs/{name}"' in page
    assert 'class="state failed"' in page and "loss became NaN at step 7" in page
    assert client.get("/api/runs").json()[0].keys() >= {"name", "state", "best_metric", "wall_seconds", "rows"}


def test_run_page_shows_eval_table_and_data_report(client):
    page = client.get("/runs/alpha").text
    assert "<td>accuracy</td><td>40</td><td>0.3</td><td>0.8</td><td>+0.5</td><td>[+0.4, +0.6]</td><td>better</td>" in page
    assert "duplicate: 10" in page and "tickets.jsonl:3: duplicate row 0" in page
    assert "wrong→right" in page


def test_predictions_page_filters_and_escapes_model_output(client):
    page = client.get("/runs/alpha/predictions", params={"kind": "wrong_to_right"}).text
    assert "22 examples (by accuracy)" in page
    assert "&lt;b&gt;needs&lt;/b&gt;" in page and "<b>needs</b>" not in page  # model text is never HTML
    assert client.get("/runs/alpha/predictions", params={"q": "order 1007"}).text.count('class="example"') == 1
    bad = client.get("/runs/alpha/predictions", params={"kind": "everything"})
    assert bad.status_code == 400 and "expected one of all, wrong_to_right" in bad.text


@pytest.mark.parametrize("path", ["/runs/%2e%2e", "/runs/.hidden/predictions", "/api/runs/%2e%2e/metrics"])
def test_names_that_leave_the_runs_folder_are_refused(client, path):
    response = client.get(path)
    assert response.status_code == 400 and "expected a folder name" in response.text


def test_symlinked_run_folder_out_of_runs_is_refused(client, runs_dir, tmp_path):
    (runs_dir / "link").symlink_to(write_run(tmp_path / "elsewhere", "secret"))
    response = client.get("/runs/link")
    assert response.status_code == 400 and "outside the runs folder" in response.text
    assert client.get("/runs/missing").status_code == 404


def test_finished_run_metrics_stream_sends_the_file_then_ends(client, runs_dir):
    body = client.get("/api/runs/alpha/metrics").text
    events = [e for e in body.split("\n\n") if e]
    data = [json.loads(e.split("data: ")[1]) for e in events]
    assert [r["step"] for r in data[0] if "loss" in r] == list(range(1, 11))
    assert data[-1] == {"state": "finished"} and events[-1].startswith("event: end")
    size = (runs_dir / "alpha" / "metrics.jsonl").stat().st_size
    resumed = client.get("/api/runs/alpha/metrics", headers={"Last-Event-ID": str(size)}).text
    assert "event: metrics" not in resumed  # a reconnecting browser is not sent what it has


def test_running_run_streams_lines_as_they_are_appended(tmp_path):
    run = write_run(tmp_path, "live", state="running", pid=os.getpid(), metrics_steps=2)
    with background_server(create_app(tmp_path, keys=None)) as url:
        steps: list[int] = []

        def grow():
            for step in range(3, 7):
                time.sleep(0.3)
                append_metrics(run, [step])
            status = json.loads((run / "status.json").read_text())
            (run / "status.json").write_text(json.dumps({**status, "state": "finished"}))

        writer = threading.Thread(target=grow)
        writer.start()
        with httpx.stream("GET", f"{url}/api/runs/live/metrics", timeout=20) as response:
            batches = 0
            for line in response.iter_lines():
                if line.startswith("data: ") and "step" in line:
                    steps += [r["step"] for r in json.loads(line[6:]) if "loss" in r]
                    batches += 1
        writer.join()
    assert steps == [1, 2, 3, 4, 5, 6]
    assert batches >= 3  # arrived while being written, not all at the end


def test_keys_required_when_given_and_browser_login_cookie(runs_dir, tmp_path):
    keys = tmp_path / "keys.json"
    key = create_key(keys, "alice")
    with TestClient(create_app(runs_dir, keys=keys)) as c:
        assert c.get("/").status_code == 401
        assert c.get("/api/runs/alpha/metrics").status_code == 401
        assert c.get("/health").status_code == 200 and c.get("/login").status_code == 200
        assert c.get("/", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        c.post("/login", content="key=wrong", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert c.get("/").status_code == 401
        login = c.post("/login", data={"key": key}, follow_redirects=False)
        assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
        assert "samesite=strict" in login.headers["set-cookie"].lower()
        assert c.get("/runs/alpha").status_code == 200


def test_cli_refuses_a_public_host_without_keys(capsys, runs_dir):
    assert main(["ui", "--runs", str(runs_dir), "--host", "0.0.0.0", "--port", "7861"]) == 2
    assert "reachable from other machines: pass --api-keys-file" in capsys.readouterr().err


def test_run_page_shows_confusion_matrices_and_serves_only_known_plots(client, runs_dir):
    page = client.get("/runs/alpha").text
    assert 'id="confusion-base"' in page and 'id="confusion-tuned"' in page
    (runs_dir / "alpha" / "eval" / "metrics.png").write_bytes(b"\x89PNG fake")
    assert 'src="/runs/alpha/eval/metrics.png"' in client.get("/runs/alpha").text
    assert client.get("/runs/alpha/eval/metrics.png").content == b"\x89PNG fake"
    assert client.get("/runs/alpha/eval/metrics.json").status_code == 404  # only the plots, by name
    assert client.get("/runs/alpha/eval/loss_curve.png").status_code == 404
