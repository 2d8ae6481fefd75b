"""The run context on its own (no model): when it writes, how, and the states it records."""

import json
import stat

import pytest

from tuneforge import RunDirError, load_config
from tuneforge.data import DataReport
from tuneforge.rundir import RunDir
from tuneforge.train.context import RunContext


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    return load_config(data={"name": "ctx", "out_dir": str(tmp_path / "runs"), "data": {"train": str(tmp_path / "d.jsonl")}})


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_nothing_but_the_lock_exists_before_begin_and_a_failure_then_removes_the_folder(cfg):
    with pytest.raises(RuntimeError):
        with RunContext.open(cfg) as ctx:
            assert [p.name for p in ctx.root.iterdir()] == [".lock"] and _mode(ctx.root) == 0o700
            raise RuntimeError("model failed to load")
    assert not RunDir(cfg.run_dir).root.exists()


def test_begin_records_inputs_privately_and_the_states_follow_the_run(cfg):
    paths = RunDir(cfg.run_dir)
    with RunContext.open(cfg) as ctx:
        ctx.begin(report=DataReport(), splits={"test": [{"messages": []}]}, sources={})
        assert paths.state() == "running"  # this process holds the lock
        ctx.append_metrics({"step": 1, "loss": 2.0})
        ctx.append_metrics({"step": 2, "loss": 1.0})
        for p in (paths.config, paths.data_report, paths.test_split, paths.metrics, paths.status):
            assert _mode(p) == 0o600, p
        assert [json.loads(line)["step"] for line in paths.metrics.read_text().splitlines()] == [1, 2]
        assert list(paths.root.rglob("*.tmp")) == []
    assert paths.state() == "killed"  # closed without finishing or failing: as after SIGKILL
    with RunContext.open(cfg) as ctx:  # never checkpointed, so it may start again
        ctx.begin(report=DataReport(), splits={}, sources={})
        assert not paths.metrics.exists()  # the old attempt's log is cleared
        ctx.mark_finished()
    assert paths.state() == "finished"
    assert RunContext.open(cfg).finished


def test_failure_after_begin_is_recorded_with_the_error(cfg):
    paths = RunDir(cfg.run_dir)
    with pytest.raises(ValueError):
        with RunContext.open(cfg) as ctx:
            ctx.begin(report=DataReport(), splits={}, sources={})
            raise ValueError("disk on fire")
    status = json.loads(paths.status.read_text())
    assert (status["state"], status["error"], status["objective"]) == ("failed", "ValueError: disk on fire", "sft")


def test_a_foreign_folder_is_not_taken_over(cfg):
    root = RunDir(cfg.run_dir).root
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a tuneforge run"):
        RunContext.open(cfg)
    assert (root / "notes.txt").read_text() == "mine"
