"""Export a finished run from its page: ``tuneforge export`` in the background, output inside the run folder.

An export is the same ``tuneforge export RUN --format ... --output RUN/export/KIND`` a user
would type, started like a launched run (its own session, see :func:`tuneforge.ui.launch.spawn`),
so it keeps going if the dashboard closes. Its records live in ``RUNS/.launch/exports/``
(``RUN.KIND.log/.json/.exit``), a folder the runs list does not read.

What can be refused without starting anything is refused here, with a reason: a run that
is not finished, and GGUF of an architecture the GGUF writer cannot write. Anything the
command itself refuses (a run encrypted at rest without its key, say) ends the job, and
its last log line is shown as the reason.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import ExportError, TuneforgeError
from tuneforge.rundir import RunDir
from tuneforge.ui.launch import LAUNCH_DIR, job_record, spawn
from tuneforge.ui.paths import run_path
from tuneforge.ui.runs import read_yaml, summarize

# kind -> (what the button says, the `tuneforge export` options)
KINDS: dict[str, tuple[str, list[str]]] = {
    "hf": ("merged HF model", ["--format", "hf"]),
    "gguf-f16": ("GGUF f16", ["--format", "gguf", "--quant", "f16"]),
    "gguf-q8_0": ("GGUF q8_0", ["--format", "gguf", "--quant", "q8_0"]),
}


@dataclass(frozen=True)
class ExportJob:
    """One kind of export of a run, as the run page shows it."""

    kind: str
    label: str
    state: str
    """``none``, ``running``, ``finished`` or ``failed``."""
    output: Path
    files: list[str]
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "output": str(self.output)}


class Exporter:
    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self.folder = self.runs_dir / LAUNCH_DIR / "exports"

    def output(self, name: str, kind: str) -> Path:
        return RunDir(run_path(self.runs_dir, name)).export / kind

    def start(self, name: str, kind: str) -> ExportJob:
        """Check, then start ``tuneforge export`` of run ``name`` as ``kind``.

        Raises:
            SecurityError: the name leaves the runs folder.
            TuneforgeError: refused (unknown kind, run not finished, export already running, GGUF of an
                unsupported architecture), with the reason.
        """
        folder = run_path(self.runs_dir, name)
        if kind not in KINDS:
            raise TuneforgeError(f"unknown export {kind!r}: choose one of {', '.join(KINDS)}")
        state = summarize(self.runs_dir, folder).state
        if state != "finished":
            raise TuneforgeError(f"run {name!r} is {state}: only a finished run can be exported")
        if self.job(name, kind).state == "running":
            raise TuneforgeError(f"the {KINDS[kind][0]} export of {name!r} is already running")
        if kind.startswith("gguf"):
            check_gguf_architecture(self.runs_dir, folder)
        command = [sys.executable, "-m", "tuneforge", "export", str(folder.resolve()), *KINDS[kind][1],
                   "--output", str(self.output(name, kind).resolve())]
        spawn(self.folder, f"{name}.{kind}", command)
        return self.job(name, kind)

    def job(self, name: str, kind: str) -> ExportJob:
        record = job_record(self.folder, f"{name}.{kind}")
        output = self.output(name, kind)
        files = sorted(p.name for p in output.iterdir()) if output.is_dir() else []
        files = [f for f in files if not f.startswith(".")]
        if not record:
            state, message = ("finished", None) if files else ("none", None)
        elif record["alive"]:
            state, message = "running", None
        elif record["exit"] == 0:
            state, message = "finished", None
        else:
            code = record["exit"]
            state = "failed"
            message = record["log_tail"] or (f"exited with code {code}" if code is not None else "stopped before it finished")
        return ExportJob(kind, KINDS[kind][0], state, output, files if state == "finished" else [], message)

    def jobs(self, name: str) -> list[ExportJob]:
        return [self.job(name, kind) for kind in KINDS]


def check_gguf_architecture(runs_dir: Path, folder: Path) -> None:
    """Refuse GGUF for a model the GGUF writer cannot write (it reads only ``config.json``: no model is loaded).

    Raises:
        ExportError: the architecture (or rotary embedding) is not supported, or the base model is not found.
    """
    from tuneforge.config.schema import ModelConfig
    from tuneforge.export.gguf_file import read_config
    from tuneforge.models.load import resolve

    run = RunDir(folder)
    if (run.model / "config.json").is_file():  # a full fine-tune: its own weights
        read_config(run.model)
        return
    model = (read_yaml(runs_dir, run.config) or {}).get("model")
    try:
        base = resolve(ModelConfig.model_validate(model if isinstance(model, dict) else {"name_or_path": model}))
    except (TuneforgeError, ValueError) as exc:
        raise ExportError(f"cannot find the base model of run {folder.name!r} to check its architecture: {exc}") from exc
    read_config(Path(base))
