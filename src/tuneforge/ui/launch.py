"""Start, follow and stop ``tuneforge train`` runs from the dashboard.

A launched run is an ordinary ``tuneforge train`` process in its own session: closing
the dashboard does not stop it, and a dashboard opened later still knows it. What the
dashboard keeps about it lives in ``RUNS/.launch/`` (a folder name no run can have):
``NAME.yaml`` the config as submitted, ``NAME.log`` the process's output, ``NAME.json``
its pid, and ``NAME.exit`` its exit code once it ends.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.ui.paths import run_path

LAUNCH_DIR = ".launch"
SHOWN_NAME = "config.yaml"  # how the submitted text is named in problems (its temporary path means nothing to a user)
_LINE = re.compile(r"^(?:\S+?):(\d+): ")


@dataclass
class Checked:
    """The outcome of checking a submitted config: problems as ``tuneforge validate`` words them, by line."""

    problems: list[str] = field(default_factory=list)
    by_line: dict[int, list[str]] = field(default_factory=dict)
    name: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def problems_by_line(problems: list[str]) -> dict[int, list[str]]:
    """``{line: [problem, ...]}`` for the problems that name a line (``config.yaml:10: unknown field ...``).

    Example:
        >>> problems_by_line(["config.yaml:3: unknown field 'x'", "no line here"])
        {3: ["config.yaml:3: unknown field 'x'"]}
    """
    out: dict[int, list[str]] = {}
    for problem in problems:
        match = _LINE.match(problem)
        if match:
            out.setdefault(int(match.group(1)), []).append(problem)
    return out


def check_config(text: str, runs_dir: Path) -> Checked:
    """Validate submitted YAML exactly as ``tuneforge validate`` does (schema, then preflight), with the run
    placed under ``runs_dir``; relative data paths are taken from the dashboard's working directory."""
    from tuneforge.config import load_config
    from tuneforge.config.preflight import preflight

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SHOWN_NAME
        path.write_text(text, encoding="utf-8")
        try:
            cfg = load_config(path, [f"out_dir={Path(runs_dir).resolve()}"])
            preflight(cfg)
        except ConfigError as exc:
            problems = [p.replace(str(path), SHOWN_NAME) for p in exc.problems]
            return Checked(problems, problems_by_line(problems))
        except TuneforgeError as exc:
            return Checked([str(exc).replace(str(path), SHOWN_NAME)])
    if (Path(runs_dir) / cfg.name).exists():
        problem = f"a run named {cfg.name!r} already exists in {runs_dir}: change `name:`"
        return Checked([problem], {}, cfg.name)
    return Checked(name=cfg.name)


class Launcher:
    """Starts train processes and reaps them (so none is left a zombie while the dashboard runs)."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self.folder = self.runs_dir / LAUNCH_DIR

    def launch(self, text: str) -> Checked:
        """Check ``text``; if it is valid, start ``tuneforge train`` on it in its own session."""
        checked = check_config(text, self.runs_dir)
        if not checked.ok:
            return checked
        name = checked.name
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / f"{name}.yaml"
        config.write_text(text, encoding="utf-8")
        command = [sys.executable, "-m", "tuneforge", "train", str(config), "--set",
                   f"out_dir={self.runs_dir.resolve()}"]
        spawn(self.folder, name, command)
        return checked

    def stop(self, name: str) -> str:
        """Stop a running run with SIGTERM: a run launched here as its whole process group, another
        through the pid in its ``status.json``, once that pid is seen to be a ``tuneforge`` process.

        Raises:
            SecurityError: the name leaves the runs folder.
            TuneforgeError: the run is not running, or its process cannot be confirmed.
        """
        folder = run_path(self.runs_dir, name)
        record = launch_record(self.runs_dir, name)
        if record:
            pid = record.get("pid")
            if not isinstance(pid, int) or record.get("exit") is not None or not _is_ours(pid, self.folder, name):
                raise TuneforgeError(f"run {name!r} is not running (its tuneforge train process has ended)")
            os.killpg(pid, signal.SIGTERM)  # its own session: the shell and the train process
            return f"sent SIGTERM to run {name!r} (process group {pid})"
        try:
            status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            status = None
        pid = status.get("pid") if isinstance(status, dict) and status.get("state") == "running" else None
        if not isinstance(pid, int) or pid <= 0 or not _cmdline_has(pid, b"tuneforge"):
            raise TuneforgeError(f"run {name!r} is not running, or its status.json names no tuneforge process to stop")
        os.kill(pid, signal.SIGTERM)
        return f"sent SIGTERM to run {name!r} (process {pid})"


def spawn(folder: Path, job: str, command: list[str]) -> int:
    """Start ``command`` in its own session as job ``job`` of ``folder`` (the ``.launch/`` folder): output
    in ``JOB.log``, pid in ``JOB.json``, exit code in ``JOB.exit`` once it ends; returns the pid."""
    folder.mkdir(parents=True, exist_ok=True)
    exit_file = folder / f"{job}.exit"
    exit_file.unlink(missing_ok=True)
    # The shell records the exit code even when no dashboard is open to collect it.
    script = f"{shlex.join(command)}; echo $? > {shlex.quote(str(exit_file))}"
    with open(folder / f"{job}.log", "wb") as log:
        process = subprocess.Popen(["/bin/sh", "-c", script], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    # Until the child has exec'd the shell, its /proc cmdline is still this process's, and the job
    # would read as dead: wait for the exec (milliseconds) before anyone can look.
    deadline = time.monotonic() + 5
    while not _is_ours(process.pid, folder, job) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    (folder / f"{job}.json").write_text(json.dumps({"pid": process.pid}), encoding="utf-8")
    threading.Thread(target=process.wait, name=f"reap-{job}", daemon=True).start()
    return process.pid


def _cmdline_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _is_ours(pid: int, folder: Path, job: str) -> bool:
    """Whether ``pid`` is still the wrapper shell of ``job``: its command line names the job's exit file
    (``.launch/JOB.exit``; a recycled pid must never be signalled, nor read as the job being alive)."""
    return _cmdline_has(pid, f"{Path(folder).name}/{job}.exit".encode())


def launch_record(runs_dir: Path, name: str) -> dict[str, Any]:
    """What the dashboard knows of a run it launched (see :func:`job_record`); ``{}`` for runs it did not launch."""
    return job_record(Path(runs_dir) / LAUNCH_DIR, name)


def job_record(folder: Path, job: str) -> dict[str, Any]:
    """What the dashboard knows of a job it started with :func:`spawn`: ``pid``, ``alive``, ``exit`` (code or
    None), ``log_tail``; ``{}`` for a job it did not start."""
    try:
        pid = json.loads((folder / f"{job}.json").read_text(encoding="utf-8")).get("pid")
    except (OSError, ValueError, AttributeError):
        return {}
    try:
        code: int | None = int((folder / f"{job}.exit").read_text().strip())
    except (OSError, ValueError):
        code = None
    try:
        tail = (folder / f"{job}.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
    except OSError:
        tail = []
    alive = isinstance(pid, int) and code is None and _is_ours(pid, folder, job)
    return {"pid": pid, "alive": alive, "exit": code, "log_tail": tail[0] if tail else None}
