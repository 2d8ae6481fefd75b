"""Launching, validating and stopping runs from the dashboard (ordinary `tuneforge train` processes)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.train.conftest import write_tickets
from tests.ui.fake_runs import write_run
from tuneforge.config import load_config
from tuneforge.errors import ConfigError
from tuneforge.ui import create_app
from tuneforge.ui.launch import check_config, launch_record
from tuneforge.ui.runs import summarize

TYPO = "name: typo\nmodel: {model}\ndata:\n  train: {data}\ntraining:\n  learning_rte: 0.001\n"


def wait_state(runs_dir, name, states, timeout=240):
    deadline = time.monotonic() + timeout
    while (state := summarize(runs_dir, runs_dir / name).state) not in states:
        assert time.monotonic() < deadline, f"{name} still {state}: {launch_record(runs_dir, name)}"
        time.sleep(0.5)
    return state


def test_problems_are_worded_as_validate_words_them_and_placed_at_their_line(tmp_path, tiny_model_dir):
    text = TYPO.format(model=tiny_model_dir, data=write_tickets(tmp_path / "t.jsonl"))
    checked = check_config(text, tmp_path / "runs")
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError) as direct:
        load_config(tmp_path / "config.yaml")
    assert checked.problems == [p.replace(str(tmp_path / "config.yaml"), "config.yaml") for p in direct.value.problems]
    assert list(checked.by_line) == [6] and "unknown field 'training.learning_rte'" in checked.by_line[6][0]


def test_launch_form_shows_the_error_beside_its_line(tmp_path, tiny_model_dir):
    text = TYPO.format(model=tiny_model_dir, data=write_tickets(tmp_path / "t.jsonl"))
    with TestClient(create_app(tmp_path / "runs", keys=None)) as client:
        page = client.post("/launch", data={"config": text, "action": "launch"})
        assert page.status_code == 422
        row = page.text.split('<tr class="bad">')[1].split("</tr>")[0]
        assert "learning_rte: 0.001" in row and "did you mean &#39;learning_rate&#39;" in row
        assert not (tmp_path / "runs").exists()  # nothing launched
        hostile = client.post("/launch", data={"config": text}, headers={"Origin": "https://evil.example"})
        assert hostile.status_code == 403


def test_loopback_names_only_when_asked(tmp_path):
    with TestClient(create_app(tmp_path, keys=None, allowed_hosts=["127.0.0.1", "localhost"])) as client:
        assert client.get("/").status_code == 400  # Host: testserver, as a rebinding domain would be
        assert client.get("/", headers={"Host": "127.0.0.1:7860"}).status_code == 200


@pytest.mark.slow
def test_launch_a_tiny_run_watch_it_finish_and_stop_another(tmp_path, tiny_config):
    runs = tmp_path / "runs"
    with TestClient(create_app(runs, keys=None)) as client:
        ok = client.post("/launch", data={"config": tiny_config("tiny-ui"), "action": "validate"})
        assert ok.status_code == 200 and "config OK: run <b>tiny-ui</b>" in ok.text
        started = client.post("/launch", data={"config": tiny_config("tiny-ui"), "action": "launch"}, follow_redirects=False)
        assert started.status_code == 303 and started.headers["location"] == "/runs/tiny-ui"
        assert client.get("/api/runs").json()[0]["name"] == "tiny-ui"  # listed at once, before train makes its folder
        long = client.post("/launch", data={"config": tiny_config("long", max_steps=100000), "action": "launch"})
        assert long.status_code == 200
        assert wait_state(runs, "tiny-ui", {"finished", "failed"}) == "finished", launch_record(runs, "tiny-ui")
        assert (runs / "tiny-ui" / "manifest.json").is_file()
        # status.json may say finished a moment before the wrapper records the exit code
        deadline = time.monotonic() + 30
        while launch_record(runs, "tiny-ui")["exit"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert launch_record(runs, "tiny-ui")["exit"] == 0
        again = client.post("/launch", data={"config": tiny_config("tiny-ui"), "action": "launch"})
        assert again.status_code == 422 and "a run named &#39;tiny-ui&#39; already exists" in again.text
        assert client.post("/runs/long/stop", follow_redirects=False).status_code == 303
        assert wait_state(runs, "long", {"killed", "failed", "finished"}) == "killed"
        refused = client.post("/runs/tiny-ui/stop")
        assert refused.status_code == 409 and "is not running" in refused.text


def test_stop_a_run_started_elsewhere_only_when_its_pid_is_tuneforge(tmp_path):
    import json
    import subprocess
    import sys

    runs = tmp_path / "runs"
    nap = "import time; time.sleep(120)"
    train = subprocess.Popen([sys.executable, "-c", nap, "tuneforge", "train", "x.yaml"])  # looks like a train process
    other = subprocess.Popen([sys.executable, "-c", nap])
    try:
        for name, proc in (("elsewhere", train), ("stranger", other)):
            run = write_run(runs, name, state="running", pid=proc.pid)
            assert json.loads((run / "status.json").read_text())["pid"] == proc.pid
        with TestClient(create_app(runs, keys=None)) as client:
            assert client.post("/runs/elsewhere/stop", follow_redirects=False).status_code == 303
            assert train.wait(timeout=10) == -15  # SIGTERM
            refused = client.post("/runs/stranger/stop")
            assert refused.status_code == 409 and "names no tuneforge process" in refused.text
            assert other.poll() is None  # a pid that is not tuneforge is never signalled
    finally:
        for proc in (train, other):
            proc.kill()
            proc.wait()
