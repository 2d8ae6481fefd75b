"""Reading run folders into summaries: state, method, model, rows, best metric, wall time; confinement."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.ui.fake_runs import write_run
from tuneforge.errors import SecurityError
from tuneforge.ui.paths import confined, run_path
from tuneforge.ui.runs import list_runs, run_state, summarize


def test_summary_reads_every_field(runs_dir):
    s = summarize(runs_dir, runs_dir / "alpha")
    assert (s.state, s.objective, s.method, s.model, s.rows) == ("finished", "sft", "lora", "tiny-random", 110)
    assert s.best_metric == "accuracy" and s.best_value == pytest.approx(0.8)
    assert s.wall_seconds == 12.5


def test_failed_run_carries_its_error(runs_dir):
    s = summarize(runs_dir, runs_dir / "beta")
    assert (s.state, s.error) == ("failed", "loss became NaN at step 7")
    assert s.wall_seconds is None  # no manifest: it never finished


def test_old_run_without_status_is_finished_when_it_has_a_manifest(runs_dir):
    assert summarize(runs_dir, runs_dir / "old").state == "finished"
    (runs_dir / "old" / "manifest.json").unlink()
    assert summarize(runs_dir, runs_dir / "old").state == "unknown"


def test_running_run_whose_process_is_gone_is_killed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_run(tmp_path, "r", state="running", pid=int(gone.stdout))
    s = summarize(tmp_path, tmp_path / "r")
    assert s.state == "killed" and "ended without writing a final state" in s.error
    write_run(tmp_path, "live", state="running", pid=os.getpid())
    assert summarize(tmp_path, tmp_path / "live").state == "running"


def test_unknown_state_in_status_is_reported_not_trusted():
    assert run_state({"state": "exploded"}, False) == ("unknown", "status.json: unknown state 'exploded'")


def test_half_written_files_give_empty_fields_not_errors(runs_dir):
    (runs_dir / "alpha" / "eval" / "metrics.json").write_text('{"metrics": {"accura')
    (runs_dir / "alpha" / "status.json").write_text("{")
    s = summarize(runs_dir, runs_dir / "alpha")
    assert s.best_metric is None and s.state == "finished"


def test_list_runs_skips_folders_that_are_not_runs_and_symlinks_out(runs_dir, tmp_path):
    (runs_dir / "notes").mkdir()
    outside = write_run(tmp_path / "elsewhere", "secret")
    (runs_dir / "link").symlink_to(outside)
    assert sorted(r.name for r in list_runs(runs_dir)) == ["alpha", "beta", "old"]
    assert list_runs(tmp_path / "missing") == []


@pytest.mark.parametrize("name", ["..", ".", "../x", "/etc", "a/b", ".hidden", "", "a\x00b"])
def test_run_path_refuses_names_that_leave_the_runs_folder(runs_dir, name):
    with pytest.raises(SecurityError, match="run name"):
        run_path(runs_dir, name)


def test_confined_refuses_symlinks_out(runs_dir, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"state": "finished"}))
    (runs_dir / "alpha" / "status.json").unlink()
    (runs_dir / "alpha" / "status.json").symlink_to(secret)
    with pytest.raises(SecurityError, match="outside the runs folder"):
        confined(runs_dir, runs_dir / "alpha" / "status.json")
    assert summarize(runs_dir, runs_dir / "alpha").state == "finished"  # from the manifest, not the linked file
    assert run_path(runs_dir, "alpha") == runs_dir / "alpha"


def test_running_run_with_a_lock_is_alive_only_while_the_lock_is_held(tmp_path):
    from tuneforge.rundir import RunDir
    from tuneforge.train.lock import RunLock

    run = write_run(tmp_path, "locked", state="running", pid=os.getpid())  # our pid exists: only the lock decides
    lock = RunLock.acquire(RunDir(run).lock)
    try:
        assert summarize(tmp_path, run).state == "running"
    finally:
        lock.release()
    assert summarize(tmp_path, run).state == "killed"
