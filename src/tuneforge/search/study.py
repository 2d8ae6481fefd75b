"""Create or load a study, run trials as real runs, and export the best config.

Why ``study.optimize(n_trials=1)`` in a loop and not one ``optimize(n_trials=N)``: ``--trials N``
counts the study's finished trials (complete or pruned) across restarts and workers, so each worker
re-reads that count before it starts another trial. One ``optimize`` call per trial still gets
optuna's heartbeat thread and its ``fail_stale_trials`` at each trial start: a trial whose worker
was killed stops beating and is marked FAIL by the next worker (or the restarted one) once it has
been silent for 3 heartbeats. Its run folder is left as it is (its ``status.json`` reads ``killed``)
for inspection; the trial is not retried, since the sampler proposes a new one anyway.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import optuna
import yaml
from optuna.trial import TrialState
from transformers import TrainerCallback

from tuneforge.config.load import load_config
from tuneforge.config.schema import RunConfig, SearchConfig
from tuneforge.errors import ConfigError, TrainingError
from tuneforge.search import space as search_space

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class TuneResult:
    """What a search produced: the study, its folder, and the best trial (None when none completed)."""

    study: optuna.Study
    study_dir: Path
    best_config: Path | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None


class _Surplus(Exception):
    """Another worker already started the study's last trial; this one records nothing."""


class _TimedOut(Exception):
    """``--timeout`` fell while a trial was training: the trial stops and counts as failed, not as a result."""


class DeadlineCallback(TrainerCallback):
    """Stops the running trial at ``--timeout``: a search asked to end by then must not wait for a long trial.

    Raising (rather than ``control.should_training_stop``) keeps a half-trained trial from reporting its
    last validation value as if it had run its full budget; its run's status reads failed with the reason.
    """

    def __init__(self, deadline: float, timeout: float):
        self.deadline, self.timeout = deadline, timeout

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() >= self.deadline:
            raise _TimedOut(f"--timeout {self.timeout:g}s reached at step {state.global_step}; trial stopped")


class PruningCallback(TrainerCallback):
    """Reports each validation ``eval_<metric>`` to the optuna trial; raises TrialPruned when it is hopeless.

    Raising inside the Trainer ends the run unsaved (its status reads failed: TrialPruned), which is
    what a pruned trial should cost: no weights written and no test evaluation.
    """

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric = trial, metric
        self.last: float | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = _metric(metrics or {}, self.metric)
        if value is None:
            return
        self.last = value
        self.trial.report(value, step=state.global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {state.global_step}: validation {self.metric} {value:.4g}")


def _metric(metrics: dict[str, float], name: str) -> float | None:
    if name == "perplexity" and "eval_loss" in metrics:
        return math.exp(min(metrics["eval_loss"], 50.0))
    value = metrics.get(f"eval_{name}")
    return None if value is None else float(value)


def tune(
    config: str | Path, *, trials: int | None = None, timeout: float | None = None, storage: str | None = None,
    study: str | None = None, overrides: Sequence[str] = (), console: Any = None,
) -> TuneResult:
    """Run (or continue) the hyperparameter search of ``config``'s ``search:`` section.

    Args:
        config: A run config (YAML) with a ``search:`` section.
        trials: Finished trials the study should hold (default ``search.trials``); a restarted or
            second worker only runs what is missing.
        timeout: Stop starting new trials after this many seconds.
        storage: An optuna RDB URL (``postgresql://...`` for several machines); default
            ``sqlite:///<out_dir>/<study>/study.db``.
        study: The study name (default: the config's ``name``); its trials run under ``out_dir/<study>/``.
        overrides: ``--set`` overrides applied to every trial.
        console: A ``rich.console.Console``.

    Returns:
        A :class:`TuneResult` with the best config written as ``out_dir/<study>/best.yaml``.

    Raises:
        ConfigError: no ``search:`` section, a bad search space, or ``trials`` < 1.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    base = load_config(config, overrides)
    if base.search is None:
        raise ConfigError(f"{config}: no 'search:' section; add one, e.g. search: {{space: "
                          "{training.learning_rate: {loguniform: [1e-5, 1e-3]}}}")
    search = base.search
    n_trials = search.trials if trials is None else trials
    if n_trials < 1:
        raise ConfigError(f"--trials {n_trials}: an empty study finds nothing; give at least 1 trial")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout {timeout}: give a positive number of seconds")
    search_space.check_values(config, search, overrides)
    name = study or base.name
    study_dir = Path(base.out_dir) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    opt_study = load_study(search, name, storage or f"sqlite:///{study_dir.resolve() / 'study.db'}")
    check_unchanged(opt_study, search_fingerprint(base), name)
    started = time.monotonic()
    deadline = None if timeout is None else DeadlineCallback(started + timeout, timeout)
    objective = _objective(config, overrides, search, base, study_dir, n_trials, console, deadline)
    while _taken(opt_study) < n_trials:
        if deadline is not None and time.monotonic() >= deadline.deadline:
            console.print(f"search: --timeout {timeout:g}s reached")
            break
        opt_study.optimize(objective, n_trials=1, catch=(TrainingError, _Surplus, _TimedOut))
    return finish(opt_study, config, search, study_dir, base, console)


def load_study(search: SearchConfig, name: str, url: str) -> optuna.Study:
    """Create the study, or load it when it exists (a restart, or another worker)."""
    from filelock import FileLock

    beat = search.heartbeat_seconds
    sqlite = url.startswith("sqlite:///")
    # Two workers starting at once both try to create the tables (alembic stamps the schema) and
    # one fails; for a local SQLite file a lock beside it makes the first one create them.
    with FileLock(url.removeprefix("sqlite:///") + ".lock") if sqlite else contextlib.nullcontext():
        storage = optuna.storages.RDBStorage(
            url, heartbeat_interval=beat, grace_period=3 * beat,
            # SQLite locks the whole file per write; several local workers wait instead of failing.
            engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None,
        )
    if search.sampler == "grid":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(search_space.grid(search), seed=search.seed)
    elif search.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=search.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=max(search.startup_trials, 1))
    pruner: optuna.pruners.BasePruner = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials, n_warmup_steps=0),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(),
        "none": lambda: optuna.pruners.NopPruner(),
    }[search.pruner]()
    with FileLock(url.removeprefix("sqlite:///") + ".lock") if sqlite else contextlib.nullcontext():
        return optuna.create_study(
            storage=storage, study_name=name, sampler=sampler, pruner=pruner, load_if_exists=True,
            direction="maximize" if search.maximize else "minimize",
        )


def search_fingerprint(base: RunConfig) -> dict[str, Any]:
    """What makes two trials' values comparable: the space, the metric and direction, and every other setting.

    ``search.trials``, the sampler, pruner and heartbeat may change between restarts (they decide which
    trials run, not what a trial's value means); the run name and out_dir are where trials go.
    """
    search = base.search
    assert search is not None
    return {
        "space": {k: v.model_dump(mode="json", exclude_none=True) for k, v in sorted(search.space.items())},
        "metric": search.metric, "maximize": search.maximize,
        # Only settings that differ from their defaults: a field a later tuneforge adds (at its default), or a
        # default spelled out in the YAML, changes nothing a trial means and must not lock a study out.
        "config": base.model_dump(mode="json", exclude={"search", "name", "out_dir"}, exclude_defaults=True),
    }


def check_unchanged(study: optuna.Study, fingerprint: dict[str, Any], name: str) -> None:
    """Record the fingerprint in a new study; refuse to continue one whose space or config has changed.

    Optuna would otherwise mix trials sampled from the old space (or trained on other data) with new
    ones, and the best trial and the importances would compare things that are not comparable.

    Raises:
        ConfigError: listing every dotted key that differs.
    """
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
        return
    changes = _differences(stored, fingerprint)
    if changes:
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise ConfigError(
            f"study '{name}' already holds trials of a different search: {shown}. Its trials would not be "
            "comparable with new ones; start a new study (--study NEW_NAME) or restore the config"
        )


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k, "<unset>"), new.get(k, "<unset>"),
                                                       f"{prefix}.{k}" if prefix else k)]
    if old != new:
        label = prefix.removeprefix("config.") if prefix.startswith("config.") else f"search.{prefix}"
        return [f"{label}: {old!r} -> {new!r}"]
    return []


def _taken(study: optuna.Study) -> int:
    """Trials that count toward ``--trials``: finished ones and ones a live worker is running."""
    return len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))


def _objective(config: str | Path, overrides: Sequence[str], search: SearchConfig, base: RunConfig,
               study_dir: Path, n_trials: int, console: Any, deadline: DeadlineCallback | None = None):
    from tuneforge.train.pipeline import finetune

    def objective(trial: optuna.Trial) -> float:
        # Two workers can pass the count check at the same moment; the later trial stands down.
        earlier = [t for t in trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
                   if t.number < trial.number]
        if len(earlier) >= n_trials:
            trial.set_user_attr("surplus", f"the study already had {n_trials} trials")
            raise _Surplus(trial.number)
        params = search_space.suggest(trial, search)
        run_name = f"{base.name}-t{trial.number}"
        sampled = search_space.overrides(params)
        trial.set_user_attr("run_dir", str(study_dir / run_name))
        trial.set_user_attr("overrides", [*overrides, *sampled])
        cfg = load_config(config, [*overrides, *sampled, f"name={run_name}", f"out_dir={study_dir}"])
        console.print(f"[bold]trial {trial.number}[/] {', '.join(sampled)} -> {cfg.run_dir}", highlight=False)
        reporter = PruningCallback(trial, search.metric)
        try:
            finetune(cfg, console=console, callbacks=[reporter, *([deadline] if deadline else [])])
        except _TimedOut as stop:
            trial.set_user_attr("stopped", str(stop))
            console.print(f"trial {trial.number}: {stop}", highlight=False)
            raise
        if reporter.last is None:
            raise ConfigError(f"trial {trial.number} ({cfg.run_dir}) reported no validation {search.metric}: "
                              "it needs validation data and at least one evaluation (training.eval_steps)")
        return reporter.last

    return objective


def finish(study: optuna.Study, config: str | Path, search: SearchConfig, study_dir: Path, base: RunConfig,
           console: Any) -> TuneResult:
    """Write ``best.yaml`` and the report; print the trials table."""
    from tuneforge.search.report import write_report

    result = TuneResult(study=study, study_dir=study_dir)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        result.best_value, result.best_params = best.value, dict(best.params)
        # Rebuilt from the config and the trial's overrides, not read from its run folder: with a
        # shared database the best trial may have run on another machine.
        cfg = load_config(config, best.user_attrs["overrides"])
        result.best_config = study_dir / "best.yaml"
        result.best_config.write_text(best_yaml(cfg, base.name, best.number, search.metric, best.value))
    result.report = write_report(study, search, study_dir, console)
    return result


def best_yaml(cfg: RunConfig, name: str, number: int, metric: str, value: float) -> str:
    """The best trial's config, ready for ``tuneforge train``: no search section, its own run name."""
    data = cfg.model_dump(mode="json", exclude={"search"})
    data["name"] = f"{name}-best"
    # out_dir stays the config's: the best run sits beside the study folder, not among its trials
    head = f"# Best trial {number} of study '{name}' (validation {metric} {value:.6g}); train it: tuneforge train THIS_FILE\n"
    return head + yaml.safe_dump(data, sort_keys=False)
