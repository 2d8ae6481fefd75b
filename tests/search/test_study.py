"""tuneforge tune on the tiny model: trials are real runs, the best config trains, the study resumes."""

import optuna
from optuna.trial import TrialState

from tuneforge import finetune, load_config
from tuneforge.search import tune


def test_three_trials_write_best_config_that_trains(search_config, tmp_path):
    result = tune(search_config(), trials=3)
    trials = result.study.get_trials()
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:  # every trial is a real run directory
        assert (tmp_path / "runs" / "tiny" / f"tiny-t{t.number}" / "config.yaml").is_file()
    best = load_config(result.best_config)
    assert best.search is None and best.name == "tiny-best" and best.out_dir == str(tmp_path / "runs")
    assert best.training.learning_rate == result.best_params["training.learning_rate"]
    assert best.method.r == result.best_params["method.r"]
    assert (result.study_dir / "report.md").read_text().count("| tiny") == 0  # table rows are trials
    assert "history.png" in (result.study_dir / "report.md").read_text()
    trained = finetune(best)
    assert trained.global_step == 6


def _tune_cli(*args):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), "src") if p),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tuneforge", "tune", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _load(tmp_path, name="tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'runs' / name / 'study.db'}")


def test_killed_search_resumes_with_finished_trials_kept_and_the_killed_one_failed(search_config, tmp_path):
    import json
    import signal
    import time

    config = search_config(max_steps=12)
    worker = _tune_cli(config, "--trials", 3)
    status = tmp_path / "runs" / "tiny" / "tiny-t1" / "status.json"
    deadline = time.monotonic() + 300
    while not (status.is_file() and json.loads(status.read_text())["state"] == "running"):
        assert worker.poll() is None, worker.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "trial 1 never started"
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)  # mid-trial: trial 0 finished, trial 1 training
    worker.wait()
    before = _load(tmp_path).trials
    assert before[0].state == TrialState.COMPLETE and before[1].state == TrialState.RUNNING
    time.sleep(6)  # the killed worker's heartbeat (1 s) goes stale after 3 beats; margin for a loaded machine

    result = tune(config, trials=3)
    trials = result.study.get_trials()
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == before[0].value  # kept, not re-run
    assert trials[1].state == TrialState.FAIL  # interrupted: failed, not a result
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 and trials[1] not in finished
    assert result.best_value is not None


def test_two_workers_share_one_sqlite_study_without_duplicates(search_config, tmp_path):
    config = search_config()
    workers = [_tune_cli(config, "--trials", 4) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read().decode()[-3000:]
    trials = _load(tmp_path).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert len({t.user_attrs["run_dir"] for t in finished}) == 4  # each trial its own run
    # A surplus trial (both workers passed the count at once) stands down as FAIL, without a run.
    assert all(t.user_attrs.get("surplus") for t in trials if t not in finished)


def test_median_pruner_stops_a_hopeless_trial_early(search_config, tmp_path):
    config = search_config({"space": {"training.learning_rate": {"choice": [0.02, 1e-12, 0.01]}}, "sampler": "grid",
                            "seed": 0, "startup_trials": 1, "heartbeat_seconds": 1}, max_steps=8)
    result = tune(config, trials=3)
    trials = result.study.trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.params) for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for t in pruned:
        step = max(t.intermediate_values)
        assert step < 8  # stopped before the last step
        earlier = sorted(c.intermediate_values[step] for c in complete if c.number < t.number)
        assert t.intermediate_values[step] > earlier[(len(earlier) - 1) // 2]  # worse than the median at that step
        assert "TrialPruned" in (tmp_path / "runs" / "tiny" / f"tiny-t{t.number}" / "status.json").read_text()
        assert not (tmp_path / "runs" / "tiny" / f"tiny-t{t.number}" / "adapter").exists()  # no weights saved
    assert result.best_params["training.learning_rate"] != 1e-12


def test_changed_space_or_config_is_refused_naming_what_changed(search_config, capsys):
    from tuneforge.cli.main import main

    assert main(["tune", str(search_config()), "--trials", "1"]) == 0
    changed = search_config({"space": {"training.learning_rate": {"loguniform": [1e-4, 1e-2]},
                                       "method.r": {"choice": [2, 8]}}, "heartbeat_seconds": 1}, max_steps=8)
    capsys.readouterr()
    assert main(["tune", str(changed), "--trials", "2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "study 'tiny' already holds trials of a different search" in err
    assert "search.space.method.r.choice: [2, 4] -> [2, 8]" in err
    assert "training.max_steps: 6 -> 8" in err
    assert "--study NEW_NAME" in err and "Traceback" not in err
    # a default spelled out (or a field a later version adds at its default) is not a change
    spelled = search_config(name="spelled")  # its own file; --study names the same study
    assert main(["tune", str(spelled), "--study", "tiny", "--trials", "2", "--set", "data.balance=none"]) == 0
    # the same search under a new study name starts afresh; the old study is untouched
    assert main(["tune", str(changed), "--trials", "1", "--study", "tiny2"]) == 0
    assert len(_load(changed.parent, "tiny").trials) == 2


def test_timeout_stops_the_running_trial_and_counts_it_failed(search_config, tmp_path):
    import json

    config = search_config(max_steps=400, eval_steps=200)
    result = tune(config, trials=3, timeout=4)
    trials = result.study.get_trials()
    assert len(trials) == 1 and trials[0].state == TrialState.FAIL  # no new trial after the deadline
    assert "--timeout 4s reached" in trials[0].user_attrs["stopped"]
    run = tmp_path / "runs" / "tiny" / "tiny-t0"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "--timeout" in status.get("error", "")
    steps = [json.loads(line).get("step", 0) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) < 400  # stopped mid-training, not after its 400 steps
    assert result.best_config is None
