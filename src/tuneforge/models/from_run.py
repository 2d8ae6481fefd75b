"""Start from a trained run: a run directory as ``model:`` resolves to a plain model folder.

A run directory used as the starting model (``model: runs/x``, or a stage's predecessor in
a multi-stage run) becomes: the run's full ``model/`` folder, or base + the run's adapter
merged (PEFT ``merge_and_unload``) and saved once under the cache, keyed by the SHA-256 of
the run's weights. So SFT → DPO trains a new adapter on the SFT-merged weights, and DPO's
reference (adapter disabled) is the SFT model, as in the DPO paper.

Why a saved merged folder rather than rebuilding "base → parent adapter merged → this
adapter" at every load: every command that takes a model (preflight's module check, the
memory estimate, lineage hashes, merge, export, lm-eval, serve) resolves ``model:`` to one
plain folder through :func:`tuneforge.models.load.resolve`, so they all work unchanged on a
later stage, for chains of any depth; and a retrained parent (new weights, new hash) gets a
new folder instead of silently changing what an existing folder holds. The cost is one
model's worth of disk in the cache per parent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuneforge.errors import ModelError, RunDirError
from tuneforge.rundir import RunDir

log = logging.getLogger("tuneforge.models")

SOURCE_FILE = "tuneforge_run_source.json"
"""Written into a merged folder: the run and weights hash it was built from."""

PARENT_FILE = "parent.json"
"""Written into a run that started from another run (:func:`parent_record`), when it starts."""


def weights_digest(run: RunDir) -> str:
    """SHA-256 of a run's trained weights folder (adapter/ or model/), as the manifest records it."""
    from tuneforge.data.load import source_digest

    return source_digest(run.weights)


def run_start_point(run: RunDir) -> Path:
    """The plain model folder a finished run's weights amount to (see the module docstring).

    Raises:
        ModelError: the run has not finished (its weights could still change or be partial).
    """
    state = run.state()
    if state != "finished":
        raise ModelError(
            f"{run.root} is a run directory in state '{state}'; a run is used as a starting model only once it "
            "has finished (finish or resume it first)"
        )
    if not run.adapter.is_dir():
        return run.model
    from tuneforge.methods.bottleneck import check_mergeable
    from tuneforge.models.load import cache_dir

    check_mergeable(run.adapter)  # before the slow load: a bottleneck adapter cannot be merged into a start point

    digest = weights_digest(run)
    target = cache_dir() / "models" / f"run-{run.root.name}-{digest[:12]}"
    if (target / "config.json").is_file():
        return target
    return _save_merged(run, target, digest)


def _save_merged(run: RunDir, target: Path, digest: str) -> Path:
    import torch

    from tuneforge.models.load import load

    log.info("merging %s into %s (once)", run.root, target)
    # float32: the merge happens in the precision the next stage trains from, with no rounding of the sum.
    loaded = load(run.root, dtype=torch.float32, merge=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)  # the adapter's tokenizer: the chat template it was trained with
        (tmp / SOURCE_FILE).write_text(json.dumps({"run": str(run.root.resolve()), "weights_sha256": digest}))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def parent_record(name_or_path: str) -> dict[str, Any] | None:
    """``{run, stage, weights_sha256, parent}`` when a model reference is a run directory, else ``None``.

    ``parent`` nests the run's own parent, so a manifest carries the whole lineage chain.
    """
    run = RunDir(Path(name_or_path).expanduser())
    if not run.is_run():
        return None
    record: dict[str, Any] = {"run": str(run.root.resolve()), "stage": run.root.name, "weights_sha256": weights_digest(run)}
    try:
        import yaml

        record["objective"] = yaml.safe_load(run.config.read_text(encoding="utf-8"))["training"]["objective"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        record["objective"] = None
    try:
        record["parent"] = json.loads(run.manifest.read_text(encoding="utf-8")).get("parent")
    except (OSError, ValueError, AttributeError):
        record["parent"] = None
    return record


def check_parent(run: RunDir) -> None:
    """Refuse to reuse or resume ``run`` when the run it started from now holds other weights.

    A later stage (or any run with ``model: RUN``) is only valid on top of the exact weights it
    started from: if that run was retrained since (deleted and run again, say), skipping the
    finished later stage or resuming it would mix two lineages.

    Raises:
        RunDirError: the parent's weights SHA-256 differs from the one recorded in ``RUN/parent.json``.
    """
    try:
        recorded = json.loads((run.root / PARENT_FILE).read_text(encoding="utf-8"))
        parent, digest = RunDir(Path(recorded["run"])), recorded["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # started from a model folder, or before parents were recorded
    now = weights_digest(parent) if parent.is_run() else None
    if now != digest:
        holds = f"now holds weights {now[:12]}" if now else "no longer holds finished weights"
        raise RunDirError(
            f"{run.root} was trained on top of {parent.root} (weights SHA-256 {digest[:12]}), which {holds}: "
            f"it cannot be reused or resumed on another parent. Delete {run.root} to train it again from the "
            "new weights, or start a new run with --set name=<new name>"
        )
