"""What a path or name points at: a run, an adapter, a model folder, a GGUF file, an alias or a hub id.

Every command that takes "a model" (eval, generate, chat, serve, merge, export)
classifies its argument here, once, so they agree on what a folder is and say
the same thing when it is nothing usable. Classifying reads only a few small
files; nothing is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tuneforge.errors import ModelError
from tuneforge.rundir import RunDir

TargetKind = Literal["run", "adapter", "model", "gguf", "alias", "hub"]
Task = Literal["causal_lm", "reward"]


@dataclass(frozen=True)
class Target:
    """A classified model reference.

    Attributes:
        kind: ``run`` (a run directory with trained weights), ``adapter`` (a PEFT adapter folder),
            ``model`` (a plain Hugging Face folder), ``gguf`` (a ``.gguf`` file), ``alias`` (an
            embedded model such as ``smollm2-135m-instruct``) or ``hub`` (a Hugging Face Hub id).
        ref: The reference as given.
        path: The local path (``None`` for aliases and hub ids).
        run: The run directory, for ``run``.
    """

    kind: TargetKind
    ref: str
    path: Path | None = None
    run: RunDir | None = None

    @property
    def weights(self) -> Path | None:
        """The trained weights: a run's adapter/ or model/, else the path itself."""
        return self.run.weights if self.run is not None else self.path

    @property
    def task(self) -> Task:
        """``reward`` for a reward model (scores text, cannot generate), else ``causal_lm``.

        A run or adapter says so in ``adapter_config.json`` (PEFT's ``task_type: SEQ_CLS``, written
        with the weights), a model folder in ``config.json`` (a one-output
        ``*ForSequenceClassification``, as ``tuneforge merge`` writes a reward run).
        """
        folder = self.weights
        if self.kind not in ("run", "adapter", "model") or folder is None:
            return "causal_lm"
        if (folder / "adapter_config.json").is_file():
            return "reward" if _read(folder / "adapter_config.json").get("task_type") == "SEQ_CLS" else "causal_lm"
        config = _read(folder / "config.json")
        seqcls = any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])
        return "reward" if seqcls and len(config.get("id2label") or {"0": ""}) == 1 else "causal_lm"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_target(target: str | Path) -> Target:
    """Classify a model reference.

    Raises:
        ModelError: a run directory without trained weights yet, or a local path that does not
            exist or holds nothing loadable.

    Example:
        >>> resolve_target("runs/tickets").kind  # doctest: +SKIP
        'run'
    """
    from tuneforge.models.load import ALIASES

    ref = str(target)
    if ref in ALIASES:
        return Target("alias", ref)
    path = Path(ref).expanduser()
    run = RunDir(path)
    if run.is_run():
        return Target("run", ref, path, run)
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return Target("adapter", ref, path)
    if run.config.is_file() and (path / "stages").is_dir():  # a multi-stage run stands for its final stage
        return resolve_target(_final_stage(run))
    if run.config.is_file():
        raise ModelError(f"run directory {path} has no trained weights yet ({run.adapter.name}/ or {run.model.name}/)")
    if path.is_file() and path.suffix == ".gguf":
        return Target("gguf", ref, path)
    if path.is_dir() and (path / "config.json").is_file():
        return Target("model", ref, path)
    if path.exists():
        ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
        hint = f"; it holds {ggufs[0].name}: point at that file, or set model.gguf_file" if ggufs else ""
        raise ModelError(f"{path} is neither a run directory, a PEFT adapter folder nor a model folder (no config.json){hint}")
    looks_local = ref.startswith((".", "/", "~")) or ref.count("/") > 1 or ref.endswith((".gguf", ".safetensors"))
    # "runs/typo" has the shape of a hub id (org/name), but its first part is a local folder.
    looks_local = looks_local or (path.parent != Path(".") and path.parent.is_dir())
    if looks_local:
        raise ModelError(
            f"model path not found: {ref} (expected a run directory like runs/NAME, a PEFT adapter folder, "
            f"a model folder, a .gguf file or a model alias: {', '.join(ALIASES)})"
        )
    return Target("hub", ref)


def _final_stage(chain: RunDir) -> Path:
    """The final stage of a finished multi-stage run (its manifest names it).

    Raises:
        ModelError: the chain has not finished; the message lists its stages, which may be used one by one.
    """
    import json

    try:
        return Path(json.loads(chain.manifest.read_text(encoding="utf-8"))["final"])
    except (OSError, ValueError, KeyError, TypeError):
        stages = ", ".join(sorted(p.name for p in (chain.root / "stages").iterdir()))
        raise ModelError(
            f"multi-stage run {chain.root} has not finished, so it has no final model yet; "
            f"point at one of its stages instead ({chain.root}/stages/: {stages})"
        ) from None
