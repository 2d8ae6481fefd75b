"""Data uploads on the launch page: size cap, generated names under RUNS/_uploads, the training loader's checks."""

from __future__ import annotations

import json
import stat

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.train.conftest import write_tickets
from tuneforge.errors import SecurityError
from tuneforge.ui import create_app
from tuneforge.ui.uploads import upload_path, with_training_data


@pytest.fixture
def upload_client(tmp_path):
    app = create_app(tmp_path / "runs", keys=None)
    with TestClient(app) as client:
        yield client, app, tmp_path / "runs"


def stored_files(runs):
    folder = runs / "_uploads"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_valid_file_is_stored_privately_under_a_generated_name(upload_client, tmp_path):
    client, _, runs = upload_client
    data = write_tickets(tmp_path / "tickets.jsonl", n=12).read_bytes()
    response = client.post("/launch/upload", params={"filename": "../../etc/cron.d/tickets.JSONL"}, content=data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] and body["rows"] == 12 and body["format"] == "alpaca"
    [path] = stored_files(runs)
    assert path.name == body["stored"] and path.suffix == ".jsonl" and "etc" not in body["stored"]
    assert path.read_bytes() == data and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r["name"] for r in client.get("/api/runs").json()] == []  # _uploads is not a run


def test_a_bad_row_is_reported_with_line_and_field_and_not_kept(upload_client):
    client, _, runs = upload_client
    rows = [{"instruction": "Classify.", "input": "where is my parcel", "output": "shipping"}] * 3
    rows.insert(2, {"instruction": "Classify.", "input": "hello", "output": 7})
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    response = client.post("/launch/upload", params={"filename": "mine.jsonl"}, content=body)
    assert response.status_code == 422
    problem = response.json()["problem"]
    assert "mine.jsonl:3" in problem and "output" in problem, problem
    assert "_uploads" not in problem  # the generated name means nothing to the user
    assert stored_files(runs) == []


def test_oversize_and_wrong_type_are_refused_and_nothing_is_kept(upload_client, tmp_path):
    client, app, runs = upload_client
    app.state.ui.upload_limit = 1000
    data = write_tickets(tmp_path / "tickets.jsonl", n=40).read_bytes()
    assert len(data) > 1000
    response = client.post("/launch/upload", params={"filename": "big.jsonl"}, content=data)
    assert response.status_code == 413 and "limit" in response.json()["problem"]

    def chunks():  # no Content-Length: the limit is enforced while the bytes arrive
        for i in range(0, len(data), 256):
            yield data[i:i + 256]

    response = client.post("/launch/upload", params={"filename": "big.jsonl"}, content=chunks())
    assert response.status_code == 413 and "over the upload limit" in response.json()["problem"]
    response = client.post("/launch/upload", params={"filename": "run.sh"}, content=b"rm -rf /")
    assert response.status_code == 400 and ".jsonl" in response.json()["problem"]
    hostile = client.post("/launch/upload", params={"filename": "a.jsonl"}, content=data[:500],
                          headers={"Origin": "https://evil.example"})
    assert hostile.status_code == 403
    assert stored_files(runs) == []


def test_upload_names_are_only_ever_generated_ones(tmp_path):
    runs = tmp_path / "runs"
    for name in ("../config.yaml", "..", "x/../../a.jsonl", "0" * 32 + ".sh", "/etc/passwd"):
        with pytest.raises(SecurityError):
            upload_path(runs, name)
    assert upload_path(runs, "0" * 32 + ".csv") == runs / "_uploads" / ("0" * 32 + ".csv")


def test_use_the_upload_as_training_data_then_validate(upload_client, tmp_path, tiny_config):
    client, _, runs = upload_client
    stored = client.post("/launch/upload", params={"filename": "t.jsonl"},
                         content=write_tickets(tmp_path / "t.jsonl", n=60).read_bytes()).json()["stored"]
    page = client.post("/launch/use-upload", data={"config": tiny_config("uploaded"), "upload": stored})
    assert page.status_code == 200 and "data.train is now the upload" in page.text
    text = page.text.split('aria-label="config">')[1].split("</textarea>")[0]
    import html

    config = yaml.safe_load(html.unescape(text))
    assert config["data"]["train"] == str((runs / "_uploads" / stored).resolve())
    assert config["data"]["split"] == {"validation": 0.1, "test": 0.1}  # the rest of data: kept
    checked = client.post("/launch", data={"config": html.unescape(text), "action": "validate"})
    assert checked.status_code == 200 and "config OK" in checked.text
    assert client.post("/launch/use-upload", data={"config": "", "upload": "../../etc/passwd"}).status_code == 400
    missing = client.post("/launch/use-upload", data={"config": "", "upload": "f" * 32 + ".jsonl"})
    assert missing.status_code == 422 and "no upload" in missing.text


def test_with_training_data_keeps_the_rest_and_refuses_non_mappings(tmp_path):
    out = yaml.safe_load(with_training_data("name: a\ndata:\n  train: old.jsonl\n  max_examples: 5\n", tmp_path / "u.csv"))
    assert out == {"name": "a", "data": {"train": str(tmp_path / "u.csv"), "max_examples": 5}}
    assert yaml.safe_load(with_training_data("", tmp_path / "u.csv"))["data"] == {"train": str(tmp_path / "u.csv")}
    from tuneforge.errors import TuneforgeError

    for bad in ("- a\n- b\n", "data: [1]\n", "a: [\n"):
        with pytest.raises(TuneforgeError):
            with_training_data(bad, tmp_path / "u.csv")
