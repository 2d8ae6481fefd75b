"""Lineage: the hashes that tie a run's outputs to its inputs (data files, base model, config, weights).

The audit log records them when a run starts and ends (:func:`audited_finetune`), and
model cards print them. Data files are hashed exactly as the run manifest hashes them
(:func:`tuneforge.data.load.source_digest`), so the two can be compared.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def config_text(cfg: Any) -> str:
    """The resolved config as YAML, byte for byte what a run writes to ``RUN/config.yaml``."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def source_digest(path: str | Path) -> str:
    """SHA-256 of a file or folder, as the run manifest computes it (imported lazily: datasets is slow)."""
    from tuneforge.data.load import source_digest as digest

    return digest(path)


def data_digests(cfg: Any) -> dict[str, str]:
    """``path -> SHA-256`` of every data source of a config (``unreadable: ...`` when it cannot be read)."""
    out: dict[str, str] = {}
    for role in ("train", "validation", "test"):
        for src in getattr(cfg.data, role):
            try:
                out[src.path] = source_digest(src.path)
            except OSError as exc:
                out[src.path] = f"unreadable: {exc.strerror or exc}"
    return out


def model_digest(model_cfg: Any) -> dict[str, Any]:
    """What the base model is and its SHA-256.

    A GGUF model (the embedded alias included) is hashed as the ``.gguf`` file it came
    from; a local folder as all its files (:func:`source_digest`). A hub id that is not on
    disk gets no hash, only its revision.
    """
    from tuneforge.errors import TuneforgeError
    from tuneforge.models.load import resolve

    ref = model_cfg.name_or_path
    try:
        path = Path(resolve(model_cfg))
    except TuneforgeError as exc:
        return {"name": ref, "sha256": None, "error": str(exc)}
    source = path / "tuneforge_source.json"  # written by dequantize_gguf: the GGUF file it came from
    if source.is_file():
        gguf = Path(json.loads(source.read_text())["gguf"])
        if gguf.is_file():
            return {"name": ref, "path": str(gguf), "kind": "gguf", "sha256": source_digest(gguf)}
    if path.is_dir():
        return {"name": ref, "path": str(path), "kind": "folder", "sha256": source_digest(path)}
    return {"name": ref, "kind": "hub", "revision": model_cfg.revision, "sha256": None}


def file_digests(folder: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """``relative path -> SHA-256`` of every file under ``folder`` (the artifacts of a run or export)."""
    folder = Path(folder)
    out = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(f.relative_to(folder))
        if rel not in exclude:
            out[rel] = source_digest(f)
    return out


def training_details(cfg: Any, *, resume: bool = False) -> dict[str, Any]:
    """What the audit log records when a training run starts."""
    text = config_text(cfg)
    return {
        "run": cfg.name,
        "run_dir": str(cfg.run_dir.resolve()),
        "command": shlex.join(sys.argv),
        "resume": resume,
        "config_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "config": text,
        "data_sha256": data_digests(cfg),
        "base_model": model_digest(cfg.model),
        "method": cfg.method.name,
    }


def audited_finetune(finetune: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``finetune`` so each run is recorded in the audit log: started, then success/error/killed.

    The log is ``$TUNEFORGE_AUDIT_LOG`` or ``<out_dir>/audit.jsonl``; entries carry an HMAC when
    ``$TUNEFORGE_AUDIT_HMAC_KEY(_FILE)`` is set. Only the main process of a multi-process launch writes.
    """
    from tuneforge.config.load import load_config
    from tuneforge.config.schema import RunConfig
    from tuneforge.rundir import RunDir
    from tuneforge.security.audit import AuditLog, audited, log_path, read_hmac_key

    @functools.wraps(finetune)
    def wrapper(config: Any, *args: Any, **kwargs: Any) -> Any:
        cfg = config if isinstance(config, RunConfig) else load_config(config)
        if int(os.environ.get("RANK", "0")) != 0:
            return finetune(cfg, *args, **kwargs)
        log = AuditLog(log_path(cfg.out_dir), read_hmac_key())
        with audited(log, "train", training_details(cfg, resume=bool(kwargs.get("resume")))) as action:
            result = finetune(cfg, *args, **kwargs)
            weights = RunDir(result.run_dir).weights
            action.artifacts = {str(weights.resolve()): file_digests(weights)}
            action.outcome = {"global_step": result.global_step, "train_loss": result.train_loss}
            return result

    return wrapper


def audited_output(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a merge or export of a run so it is audited: source, options, and every output file's SHA-256.

    Recorded in ``$TUNEFORGE_AUDIT_LOG``, else beside the runs (``<out_dir>/audit.jsonl``) when the
    source is a run directory; a plain model or adapter folder outside any run is not audited
    unless ``$TUNEFORGE_AUDIT_LOG`` is set.
    """
    from tuneforge.rundir import RunDir
    from tuneforge.security.audit import LOG_ENV, AuditLog, audited, log_path, read_hmac_key

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(source: Any, *args: Any, **kwargs: Any) -> Any:
            path = Path(source).expanduser()
            is_run = RunDir(path).config.is_file()
            if not is_run and not os.environ.get(LOG_ENV):
                return fn(source, *args, **kwargs)
            details = {"source": str(source), "command": shlex.join(sys.argv),
                       "options": {k: str(v) for k, v in kwargs.items()}, "args": [str(a) for a in args]}
            if is_run:
                details.update(run=path.resolve().name, run_dir=str(path.resolve()))
            log = AuditLog(log_path(path.resolve().parent), read_hmac_key())
            with audited(log, action, details) as act:
                result = fn(source, *args, **kwargs)
                out = Path(getattr(result, "output", result))
                act.artifacts = {str(out.resolve()): file_digests(out) if out.is_dir() else {}}
                return result

        return wrapper

    return decorate
