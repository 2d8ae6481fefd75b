"""Fold a trained adapter into its base model and save a plain Hugging Face folder.

The merged folder (``RUN/merged/`` by default) holds safetensors weights, the
tokenizer with its chat template, and a generation config whose stop tokens
include the end-of-turn token, so ``AutoModelForCausalLM.from_pretrained``,
vLLM and the GGUF converter can use it without PEFT. A ``tuneforge_merge.json``
records what it was merged from, so an export can tell a stale merge from a
current one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import ExportError, ModelError
from tuneforge.rundir import RunDir

PROVENANCE_FILE = "tuneforge_merge.json"


@dataclass(frozen=True)
class Source:
    """What a user pointed an export at."""

    kind: str
    """``"run"``, ``"adapter"`` or ``"model"``."""
    path: Path
    run: RunDir | None = None

    @property
    def weights(self) -> Path:
        """The trained weights: the run's adapter/ or model/, the adapter folder, or the model folder."""
        return self.run.weights if self.run is not None else self.path


def find_source(target: str | Path) -> Source:
    """Classify a run directory, a PEFT adapter folder, a model folder or a model alias.

    Raises:
        ExportError: nothing usable is there.
    """
    from tuneforge.models import resolve, resolve_target

    try:
        found = resolve_target(target)
    except ModelError as exc:
        raise ExportError(str(exc)) from None
    if found.kind in ("run", "adapter", "model"):
        return Source(found.kind, found.path, found.run)
    if found.kind == "alias":
        return Source("model", Path(resolve(found.ref)))
    raise ExportError(
        f"{target} is a {'GGUF file' if found.kind == 'gguf' else 'Hugging Face Hub id'}; export takes a run "
        "directory like runs/NAME, a PEFT adapter folder, a model folder or a model alias"
    )


def fingerprint(folder: Path) -> str:
    """A cheap identity of a weights folder (names, sizes, modification times), to detect re-training."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def is_current(source: Source, merged: Path) -> bool:
    """Whether ``merged`` was written from the weights ``source`` holds now."""
    record = Path(merged) / PROVENANCE_FILE
    if not record.is_file() or not (Path(merged) / "config.json").is_file():
        return False
    return json.loads(record.read_text()).get("weights_fingerprint") == fingerprint(source.weights)


def default_output(source: Source) -> Path:
    """``RUN/merged`` for a run; ``<adapter>-merged`` beside an adapter folder."""
    if source.run is not None:
        return source.run.merged
    return source.path.with_name(source.path.name + "-merged")


def load_merged(source: Source) -> tuple[Any, Any, str]:
    """Load a source with any adapter folded in: ``(model, tokenizer, base_path)``.

    Raises:
        ExportError: the adapter is a kind PEFT cannot merge (prefix/prompt tuning).
    """
    from tuneforge.models import load, load_model

    if source.kind == "model":
        return load_model(str(source.path))
    loaded = load(source.path)
    model = loaded.model
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        cfg = next(iter(peft_config.values()))
        if getattr(cfg, "is_prompt_learning", False):
            raise ExportError(
                f"the {cfg.peft_type.value} adapter in {source.weights} adds virtual tokens and cannot be "
                "merged into the weights; serve it with the adapter instead"
            )
        try:
            model = model.merge_and_unload(safe_merge=True)
        except ValueError as exc:  # safe_merge found NaNs
            raise ExportError(f"merging {source.weights} failed: {exc}") from exc
    return model, loaded.tokenizer, loaded.base_path


def save_model(model: Any, tokenizer: Any, output: Path, provenance: dict[str, Any]) -> Path:
    """Save model (safetensors), tokenizer and generation config into ``output``, replacing it whole.

    The folder is written beside ``output`` first and swapped in, so a failed save
    never leaves half a model behind.
    """
    from tuneforge.data.prompts import stop_token_ids

    output = Path(output)
    if output.exists() and any(output.iterdir()) and not (output / "config.json").is_file():
        raise ExportError(f"output {output} exists and is not a model folder; choose an empty or new folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would stay on the renamed folder and lock out a server's user.
    tmp = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.partial"
    tmp.mkdir()
    try:
        gen = model.generation_config
        gen.eos_token_id = stop_token_ids(tokenizer, model)  # the end-of-turn token, eos, the model's own
        if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
            gen.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def merge_source(source: Source, output: Path) -> Path:
    """Merge (or, for a full fine-tune or a plain model, re-save) ``source`` into ``output``."""
    model, tokenizer, base_path = load_merged(source)
    target = Path(output).resolve()
    for keep in (source.path, source.weights, Path(base_path)):
        keep = keep.resolve()
        if target == keep or target in keep.parents:
            raise ExportError(f"output {output} would overwrite {keep}; choose another folder")
    provenance = {
        "source": str(source.path.resolve()),
        "kind": source.kind,
        "base_model": str(base_path),
        "weights": str(source.weights.resolve()),
        "weights_fingerprint": fingerprint(source.weights),
    }
    return save_model(model, tokenizer, output, provenance)


def merge(run_or_adapter: str | Path, output: str | Path | None = None) -> Path:
    """Fold a run's LoRA/DoRA adapter into the base weights and save a plain model folder.

    For a full fine-tune (a run with ``model/``) the model is saved as it is. The
    folder loads with ``AutoModelForCausalLM.from_pretrained`` and generates what
    the adapter model generates.

    Args:
        run_or_adapter: A run directory (``runs/NAME``) or a PEFT adapter folder.
        output: Where to write; default ``RUN/merged`` (or ``<adapter>-merged``).

    Returns:
        The merged model folder.

    Raises:
        ExportError: not a run or adapter, no trained weights, or an adapter that cannot be merged.

    Example:
        >>> merge("runs/support-bot")
        PosixPath('runs/support-bot/merged')
    """
    source = find_source(run_or_adapter)
    if source.kind == "model":
        raise ExportError(f"{source.path} is a plain model folder; there is no adapter to merge")
    return merge_source(source, Path(output) if output is not None else default_output(source))
