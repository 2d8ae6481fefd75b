"""Fixtures for dashboard tests: a runs folder with run folders written file by file (no model needed)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.ui.fake_runs import write_run


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "alpha")
    write_run(root, "beta", state="failed", error="loss became NaN at step 7")
    write_run(root, "old", state=None)
    return root


@pytest.fixture
def client(runs_dir):
    from tuneforge.ui import create_app

    with TestClient(create_app(runs_dir, keys=None)) as c:
        yield c
