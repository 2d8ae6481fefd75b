"""Read a run folder into what the dashboard shows: :class:`RunSummary`, the eval table, the data report.

Pure readers over the files a run writes (see :mod:`tuneforge.rundir`). A run that is
still being written, or one left by an older version, must still show: a missing or
half-written file gives an empty field, never an error page.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import SecurityError
from tuneforge.rundir import RunDir
from tuneforge.ui.launch import LAUNCH_DIR, launch_record
from tuneforge.ui.paths import confined

STATES = ("running", "finished", "failed", "killed", "unknown")
# Files whose presence makes a folder a run (a run that just started has only some of them).
_RUN_MARKERS = ("status.json", "config.yaml", "manifest.json", "metrics.jsonl")


@dataclass(frozen=True)
class RunSummary:
    """One row of the runs list."""

    name: str
    state: str
    error: str | None = None
    objective: str | None = None
    method: str | None = None
    model: str | None = None
    rows: int | None = None
    best_metric: str | None = None
    best_value: float | None = None
    wall_seconds: float | None = None
    updated: float | None = None
    encrypted: bool = False
    """``security.encrypt`` is on: the dashboard holds no key, so the run's rows and weights are not shown."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_run_file(runs_dir: Path, path: Path) -> bytes:
    """The bytes of a file under ``runs_dir``: the one place the dashboard's new readers open run files, so
    that decryption at rest hooks in here once.

    Raises:
        OSError: missing or unreadable.
        SecurityError: ``path`` resolves (through a symlink) outside ``runs_dir``.
    """
    return confined(runs_dir, path).read_bytes()


def read_json(runs_dir: Path, path: Path) -> Any:
    """The JSON in ``path``, or ``None`` when missing, unreadable, half-written or a symlink out of ``runs_dir``."""
    try:
        return json.loads(read_run_file(runs_dir, path).decode("utf-8"))
    except (OSError, ValueError, SecurityError):
        return None


def read_yaml(runs_dir: Path, path: Path) -> Any:
    """The YAML in ``path`` (safe loader), or ``None`` when missing, unreadable or a symlink out of ``runs_dir``."""
    try:
        return yaml.safe_load(read_run_file(runs_dir, path).decode("utf-8"))
    except (OSError, ValueError, yaml.YAMLError, SecurityError):
        return None


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # no pid to check: trust the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def writer_alive(folder: Path, status: Any) -> bool:
    """Whether the process that wrote ``status.json`` still runs: it holds the run's lock (``RUN/.lock``,
    released by the kernel however the process ends); for runs without a lock file, its pid exists."""
    lock = RunDir(folder).lock
    if lock.exists():
        from tuneforge.train.lock import holder_pid

        return holder_pid(lock) is not None
    return pid_alive(status.get("pid") if isinstance(status, dict) else None)


def run_state(
    status: Any, has_manifest: bool, launched: dict[str, Any] | None = None, alive: bool = True,
) -> tuple[str, str | None]:
    """``(state, error)`` from ``status.json`` (``None`` for runs made before it existed), else from what the
    dashboard knows of a run it launched (:func:`tuneforge.ui.launch.launch_record`), else from the manifest.

    A run whose status still says ``running`` but whose process is gone was killed
    without a chance to write its final state (SIGKILL, power loss, OOM killer).

    Example:
        >>> run_state(None, True)
        ('finished', None)
    """
    if not isinstance(status, dict) and launched:
        if launched["alive"]:
            return "running", None
        if launched["exit"] == 0:
            return "finished", None
        if launched["exit"] is not None:
            return "failed", launched["log_tail"] or f"tuneforge train exited with code {launched['exit']}"
        return "killed", "the process ended before it finished (stopped, or killed)"
    if not isinstance(status, dict):
        return ("finished" if has_manifest else "unknown"), None
    state = status.get("state")
    if state not in STATES:
        return "unknown", f"status.json: unknown state {state!r}"
    error = status.get("error")
    if state == "running" and not alive:
        return "killed", error or f"process {status.get('pid')} ended without writing a final state"
    return state, error if isinstance(error, str) else None


def best_eval_metric(metrics: Any) -> tuple[str | None, float | None]:
    """The headline tuned metric of ``eval/metrics.json``: the one that decides wrong→right, else the first."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("metrics"), dict) or not metrics["metrics"]:
        return None, None
    changed = metrics.get("changed") or {}
    name = changed.get("metric") if changed.get("metric") in metrics["metrics"] else next(iter(metrics["metrics"]))
    value = (metrics["metrics"][name] or {}).get("tuned")
    return name, value if isinstance(value, (int, float)) else None


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds a run, or is the folder-to-be of a run the dashboard launched."""
    if path.is_dir() and any((path / marker).exists() for marker in _RUN_MARKERS):
        return True
    return (path.parent / LAUNCH_DIR / f"{path.name}.json").is_file()


def summarize(runs_dir: Path, folder: Path) -> RunSummary:
    """Everything the runs list shows about one run folder."""
    run = RunDir(folder)
    status = read_json(runs_dir, folder / "status.json")
    manifest = read_json(runs_dir, run.manifest) or {}
    config = read_yaml(runs_dir, run.config) or {}
    report = read_json(runs_dir, run.data_report) or {}
    state, error = run_state(status, bool(manifest), launch_record(runs_dir, folder.name), writer_alive(folder, status))
    status = status if isinstance(status, dict) else {}
    model_cfg, method_cfg = config.get("model") or {}, config.get("method") or {}
    metric, value = best_eval_metric(read_json(runs_dir, run.eval / "metrics.json"))
    updated = [p.stat().st_mtime for p in (folder / m for m in _RUN_MARKERS) if p.exists()]
    return RunSummary(
        name=folder.name, state=state, error=error,
        objective=status.get("objective") or config.get("objective") or ("sft" if config else None),
        method=manifest.get("method") or (method_cfg.get("name") if isinstance(method_cfg, dict) else None),
        model=manifest.get("model") or (model_cfg.get("name_or_path") if isinstance(model_cfg, dict) else None),
        rows=(report.get("totals") or {}).get("rows_kept"),
        best_metric=metric, best_value=value,
        wall_seconds=manifest.get("wall_seconds"),
        updated=max(updated) if updated else None,
        encrypted=bool(isinstance(config.get("security"), dict) and config["security"].get("encrypt")),
    )


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """Every run folder directly under ``runs_dir``, newest first (a missing folder holds no runs).

    Symlinked run folders that lead outside ``runs_dir`` are left out.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    root = runs_dir.resolve()
    folders = {p for p in runs_dir.iterdir() if p.resolve().is_relative_to(root) and is_run_folder(p)}
    # Launched runs show before train creates their folder (while the model loads) and if it never does.
    folders |= {runs_dir / p.stem for p in (runs_dir / LAUNCH_DIR).glob("*.json") if not (runs_dir / p.stem).exists()}
    return sorted((summarize(runs_dir, p) for p in folders), key=lambda s: -(s.updated or 0))
