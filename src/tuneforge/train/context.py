"""The run context: the one writer of a run directory.

Every file of ``runs/<name>/`` that tuneforge writes goes through a
:class:`RunContext` method, so encryption, an audit log or a dashboard hook in
here once, not in every recipe. The context also decides, before anything is
written, whether a run may start, resume, or is already finished:

* the folder is locked (:class:`tuneforge.train.lock.RunLock`) by the process
  writing it; a second process is refused with the holder's PID;
* ``--resume`` is refused when the config differs from the stored one (outside
  :data:`tuneforge.train.resume.RESUMABLE_FIELDS`) or the data files changed;
* a finished run is never trained again: the caller shows its stored results;
* nothing is written until the recipe calls :meth:`RunContext.begin`, after the
  model and data loaded; a fresh folder is removed when the run fails before that.

Files are written atomically (temp file + rename) with mode 0600 in a 0700
folder, and ``status.json`` (running → finished | failed | killed) is written
last, so a run that died half way never looks finished.

With ``security.encrypt`` every file except those :data:`tuneforge.security.at_rest.PLAIN`
names is encrypted by :attr:`RunContext.sealer` (the evaluation writes its report files through
it too), and the process's temp folder points into ``RUN/.tmp`` (0700) until the run ends, so
nothing a library spills to ``/tmp`` leaves the run, and it is removed with its content.

The Trainer's ``checkpoints/`` go through the sealer too (:mod:`tuneforge.train.sealed_checkpoints`).
TensorBoard writes ``tensorboard/`` on its own (losses only); it is covered by the 0700 folder, and
:meth:`RunContext.mark_finished` restricts its files to 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config.schema import RunConfig
from tuneforge.errors import RunDirError
from tuneforge.models.from_run import PARENT_FILE, check_parent, parent_record
from tuneforge.rundir import RunDir
from tuneforge.security.at_rest import Sealer
from tuneforge.security.crypto import Key
from tuneforge.security.key_source import run_key_source
from tuneforge.train.lock import RunLock
from tuneforge.train.resume import RESUMABLE_FIELDS, changed_sources, config_differences, latest_complete_checkpoint

_OUTPUTS = ("parent.json", "checkpoints", "tensorboard", "eval", "adapter", "model", "ranks", "data", "metrics.jsonl", "manifest.json")
"""What a restarted (never checkpointed) run clears before it starts again."""


class RunContext:
    """A run directory opened for writing by one process (see the module docstring).

    Attributes:
        cfg: The run's config.
        paths: The folder layout (:class:`tuneforge.rundir.RunDir`).
        is_main: Whether this process writes the run (rank 0 of a multi-process launch).
        checkpoint: The checkpoint to resume from, or ``None``.
        finished: The folder already holds this run, finished: nothing is to be trained.
        sealer: Writes the run's files, encrypting them when ``security.encrypt`` is on.
    """

    def __init__(self, cfg: RunConfig, paths: RunDir, *, is_main: bool = True, lock: RunLock | None = None,
                 created: bool = False, checkpoint: str | None = None, finished: bool = False, key: Key | None = None):
        self.cfg = cfg
        self.paths = paths
        self.is_main = is_main
        self.checkpoint = checkpoint
        self.finished = finished
        self._lock = lock
        self._created = created
        self._begun = False
        self.sealer = Sealer(paths.root, key)
        self._saved_tmp: tuple[str | None, str | None] | None = None

    @property
    def root(self) -> Path:
        return self.paths.root

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, cfg: RunConfig, *, resume: bool = False, is_main: bool | None = None) -> "RunContext":
        """Check the run directory's state, create and lock it; writes no run file yet.

        Raises:
            RunDirError: the folder is in use, holds a run with another config, has an unfinished
                run and ``resume`` is off, or has nothing to resume.
        """
        is_main = int(os.environ.get("RANK", "0")) == 0 if is_main is None else is_main
        paths = RunDir(cfg.run_dir)
        # The key is loaded before anything is created: a missing or unsafe key stops the run here.
        key = run_key_source(cfg.security.model_dump()).require("security.encrypt") if cfg.security.encrypt else None
        ctx = cls._open(cfg, paths, resume, is_main)
        ctx.sealer = Sealer(paths.root, key)
        return ctx

    @classmethod
    def _open(cls, cfg: RunConfig, paths: RunDir, resume: bool, is_main: bool) -> "RunContext":
        if not is_main:  # rank 0 checks and writes; the others need the checkpoint, and to skip a finished run with it
            checkpoint = latest_complete_checkpoint(paths.checkpoints) if resume else None
            return cls(cfg, paths, is_main=False, checkpoint=checkpoint, finished=paths.recorded_state() == "finished")
        existed = paths.root.is_dir()
        if not existed or not _entries(paths.root):
            if resume:
                raise RunDirError(f"--resume: {paths.root} holds no run to resume (no complete checkpoint in {paths.checkpoints})")
            paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            return cls(cfg, paths, lock=RunLock.acquire(paths.lock), created=not existed)
        # Lock first: a run in progress must not be judged (or touched) by its half-written files.
        lock = RunLock.acquire(paths.lock)
        try:
            return cls._reopen(cfg, paths, lock, resume)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _reopen(cls, cfg: RunConfig, paths: RunDir, lock: RunLock, resume: bool) -> "RunContext":
        stored = _stored_config(paths)
        recorded = paths.recorded_state()  # we hold the lock, so "running" means its writer died
        diffs = config_differences(stored, cfg)
        if recorded == "finished" or latest_complete_checkpoint(paths.checkpoints):
            check_parent(paths)  # reused or resumed: only on the weights it started from
        if recorded == "finished":
            if diffs:
                raise RunDirError(
                    f"run {paths.root} already finished with a different config ({'; '.join(diffs)}); "
                    "start a new run with --set name=<new name>"
                )
            return cls(cfg, paths, lock=lock, finished=True)
        checkpoint = latest_complete_checkpoint(paths.checkpoints)
        if diffs and (resume or checkpoint):
            raise RunDirError(
                f"cannot resume {paths.root}: the config differs from the stored {paths.config}, which produced "
                "its checkpoints:\n" + "\n".join(f"  - {d}" for d in diffs)
                + f"\nonly {', '.join(RESUMABLE_FIELDS)} may change on resume; resume with the stored settings, "
                "or start a new run with --set name=<new name>"
            )
        if resume:
            if checkpoint is None:
                raise RunDirError(f"--resume: no complete checkpoint in {paths.checkpoints} to resume from")
            return cls(cfg, paths, lock=lock, checkpoint=checkpoint)
        if checkpoint is not None:
            raise RunDirError(
                f"run directory {paths.root} holds an unfinished run ({recorded}, {Path(checkpoint).name}); "
                "continue it with --resume, or start a new run with --set name=<new name>"
            )
        # Started but never checkpointed (failed or killed early): nothing to lose, so it starts again.
        return cls(cfg, paths, lock=lock)

    # ------------------------------------------------------------------ lifecycle

    def begin(self, *, report: Any, splits: dict[str, list[dict]], sources: dict[str, str]) -> None:
        """Record the run's inputs once the model and data loaded; the first write of a run.

        A fresh run writes the config, data report and held-out splits. A resumed run keeps the
        stored ones (they are the truth) after checking that the data files did not change.

        Raises:
            RunDirError: resuming, and a data file's content differs from the one the run started with.
        """
        if not self.is_main:
            return
        if self.checkpoint is not None:
            changed = changed_sources(self.paths.data_report, sources, self.sealer.key)
            if changed:
                raise RunDirError(
                    f"cannot resume {self.root}: these data files changed since the run started (SHA-256 differs "
                    f"from {self.paths.data_report}): {', '.join(changed)}; restore them or start a new run"
                )
        else:
            for name in _OUTPUTS:  # leftovers of an attempt that never reached a checkpoint
                _remove(self.root / name)
            parent = parent_record(self.cfg.model.name_or_path)
            if parent is not None:  # started from a run: its weights' hash, checked on reuse and resume
                self.write_json(PARENT_FILE, parent)
            self.write_json("data_report.json", report.to_dict())
            for split, rows in splits.items():
                self.write_jsonl(f"data/{split}.jsonl", rows)
        self.write_config(self.cfg)
        self._status("running")
        self._begun = True
        if self.sealer.key is not None:
            self._private_tmp()

    def _private_tmp(self) -> None:
        """Point TMPDIR (and :mod:`tempfile`) into ``RUN/.tmp`` (0700) until :meth:`close`.

        Libraries may spill to the temp folder (datasets, tokenizers, torch); inside the run they
        stay private and are removed with the folder at the end, and a test can scan it.
        """
        tmp = self.root / ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
        tmp.mkdir(mode=0o700)
        self._saved_tmp = (os.environ.get("TMPDIR"), tempfile.tempdir)
        os.environ["TMPDIR"] = str(tmp)
        tempfile.tempdir = str(tmp)

    def _restore_tmp(self) -> None:
        if self._saved_tmp is None:
            return
        env, module = self._saved_tmp
        if env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = env
        tempfile.tempdir = module
        self._saved_tmp = None
        shutil.rmtree(self.root / ".tmp", ignore_errors=True)

    def begin_stages(self, stages: list[str]) -> None:
        """Record a multi-stage run's config and mark it running; the first write of such a run.

        Its stages are ordinary runs below ``stages/``, each with its own context, lock and resume,
        so nothing here is cleared: a restarted chain keeps its finished stages.
        """
        if not self.is_main:
            return
        self.write_config(self.cfg)
        self._status("running", stages=stages)
        self._begun = True

    def mark_finished(self) -> None:
        """Make every file private and record the run as finished: the very last write of a run."""
        if not self.is_main:
            return
        _restrict(self.root)
        self._status("finished")

    def mark_failed(self, exc: BaseException) -> None:
        state = "failed" if isinstance(exc, Exception) else "killed"  # KeyboardInterrupt, SystemExit
        self._status(state, error=f"{type(exc).__name__}: {exc}".strip().rstrip(":"))

    def close(self, exc: BaseException | None = None) -> None:
        """Release the lock; on failure mark the run failed, or remove a folder that never got a file."""
        try:
            self._restore_tmp()
            if exc is not None and self.is_main:
                if self._begun:
                    self.mark_failed(exc)
                elif self._created:
                    shutil.rmtree(self.root, ignore_errors=True)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> "RunContext":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc)

    # ------------------------------------------------------------------ writing

    def write_config(self, cfg: RunConfig) -> Path:
        """The resolved config, every default written out (it reloads as the same config)."""
        return self.write_text("config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    def write_text(self, relative: str, text: str) -> Path:
        """Write ``RUN/relative`` atomically, mode 0600; encrypted unless the run is plain or the file is one of PLAIN."""
        return self.sealer.write_text(self.root / relative, text)

    def write_json(self, relative: str, obj: Any) -> Path:
        return self.write_text(relative, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    def write_jsonl(self, relative: str, rows: list[dict]) -> Path:
        return self.write_text(relative, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def append_metrics(self, record: dict) -> None:
        """Append one line to ``metrics.jsonl`` (one ``write`` per line, so a crash loses at most that line)."""
        fd = os.open(self.paths.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    def save_weights(self, model: Any, tokenizer: Any, relative: str, *, generation_config: Any = None) -> Path:
        """Save weights, tokenizer and generation config into ``relative`` (``adapter`` or ``model``) at once.

        Everything goes into a temporary sibling folder that is renamed into place, so a failure
        (disk full) never leaves a weights folder with a missing or empty file.
        """
        target = self.root / relative
        tmp = Path(tempfile.mkdtemp(prefix=f".{relative}.", dir=self.root))
        try:
            if self.sealer.key is not None:  # weights encrypted in memory, never written in plaintext
                from tuneforge.models.sealed import save_sealed

                save_sealed(model, tmp, self.sealer, relative)
            else:
                model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            if generation_config is not None:
                generation_config.save_pretrained(str(tmp))
            _restrict(tmp)
            _remove(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _status(self, state: str, **extra: Any) -> None:
        self.write_json("status.json", {
            "state": state, "objective": self.cfg.training.objective, "pid": os.getpid(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "error": None, **extra,
        })


def _stored_config(paths: RunDir) -> RunConfig:
    if not paths.config.is_file():
        raise RunDirError(
            f"{paths.root} exists and is not a tuneforge run (no config.yaml); pick another name with --set name=<new name>"
        )
    try:
        # The stored config is validated as written (paths were resolved when it was first loaded).
        return RunConfig.model_validate(yaml.safe_load(paths.config.read_text(encoding="utf-8")))
    except Exception as exc:  # YAML or schema errors: a damaged or foreign file
        raise RunDirError(f"{paths.config} cannot be read back ({exc}); start a new run with --set name=<new name>") from None


def _entries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name != ".lock"]


def _restrict(folder: Path) -> None:
    """Files 0600 and folders 0700 under ``folder``: what other writers made with the umask's modes."""
    folder.chmod(0o700)
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o700)
        for f in filenames:
            path = os.path.join(dirpath, f)
            if not os.path.islink(path):  # a link's target is not ours to change
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(path, 0o600)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
