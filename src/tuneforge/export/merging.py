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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import ExportError, ModelError
from tuneforge.export.output import atomic_folder, check_output
from tuneforge.rundir import RunDir
from tuneforge.security.lineage import audited_output

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


def check_mergeable(source: Source) -> None:
    """Refuse, before anything slow, an adapter that cannot be folded into the base weights (bottleneck adapters).

    Raises:
        ExportError: says why and what to do instead.
    """
    if source.kind != "model":
        from tuneforge.methods.bottleneck import check_mergeable as check_adapter

        check_adapter(source.weights)


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


def load_merged(source: Source, *, trust_remote_code: bool = False) -> tuple[Any, Any, str]:
    """Load a source with any adapter folded in: ``(model, tokenizer, base_path)``.

    Raises:
        ExportError: the adapter is a kind PEFT cannot merge (prefix/prompt tuning).
    """
    from tuneforge.config.schema import ModelConfig
    from tuneforge.models import load, load_model

    if is_reward_model(source):
        # A reward model loads through its scorer (sequence classification); merging folds the
        # LoRA weights in and keeps the trained score head in place of the new one.
        from tuneforge.eval.reward import load_reward_model

        scorer = load_reward_model(source.path, trust_remote_code=trust_remote_code)
        model = scorer.model
        if getattr(model, "peft_config", None):
            model = model.merge_and_unload(safe_merge=True)
        return model, scorer.tokenizer, base_model_path(source) or str(source.path)
    if source.kind == "model":
        return load_model(ModelConfig(name_or_path=str(source.path), trust_remote_code=trust_remote_code))
    loaded = load(source.path, trust_remote_code=trust_remote_code)
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


def is_reward_model(source: Source) -> bool:
    """Whether ``source`` is a reward model (a score head, no LM head): see :attr:`tuneforge.models.target.Target.task`."""
    from tuneforge.models import resolve_target

    return source.kind in ("run", "adapter", "model") and resolve_target(source.path).task == "reward"


def save_model(model: Any, tokenizer: Any, folder: Path, provenance: dict[str, Any], *,
               sealer: Any = None, name: str = "merged") -> None:
    """Save model (safetensors), tokenizer, generation config and provenance into ``folder`` (a fresh one).

    A model that cannot generate (a reward model) gets no generation config. With an encrypting
    ``sealer`` (that of an encrypted run) the weights are encrypted in memory and ``name`` is the
    folder's run-relative name, authenticated in the file.
    """
    from tuneforge.data.prompts import stop_token_ids

    gen = getattr(model, "generation_config", None)
    if gen is not None and model.can_generate():
        gen.eos_token_id = stop_token_ids(tokenizer, model)  # the end-of-turn token, eos, the model's own
        if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
            gen.pad_token_id = tokenizer.pad_token_id
    if sealer is not None and sealer.key is not None:
        from tuneforge.models.sealed import save_sealed

        save_sealed(model, folder, sealer, name)
    else:
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))


def source_sealer(source: Source) -> Any:
    """The sealer of the run ``source`` comes from (encrypting when that run is encrypted), or None."""
    from tuneforge.security.at_rest import Sealer

    return Sealer.for_run(source.run.root) if source.run is not None else None


def base_model_path(source: Source) -> str | None:
    """The base model folder of a source, found without loading it (``None`` when it cannot be resolved yet)."""
    from tuneforge.config.schema import ModelConfig
    from tuneforge.errors import TuneforgeError
    from tuneforge.models import resolve

    if source.kind == "model":
        return str(source.path)
    try:
        if source.run is not None:
            from tuneforge.config.load import load_config

            return resolve(load_config(source.run.config).model)
        base = json.loads((source.path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return resolve(ModelConfig(name_or_path=base)) if base else None
    except (TuneforgeError, OSError, ValueError):
        return None  # the load itself reports what is wrong


def check_merge_output(source: Source, output: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse an output that would land in or over the source weights, the run or the base model.

    Raises:
        ExportError: see :func:`tuneforge.export.output.check_output`.
    """
    base = base_model_path(source)
    protected = [source.weights] + ([Path(base)] if base and Path(base).exists() else [])
    return check_output(output, protected=protected, not_above=[source.path], overwrite=overwrite)


def merge_source(
    source: Source, output: Path, *, overwrite: bool = False, trust_remote_code: bool = False,
    what: str = "merge", add: Callable[[Path, str], None] | None = None, sealer: Any = None,
) -> Path:
    """Merge (or, for a full fine-tune or a plain model, re-save) ``source`` into ``output``, atomically.

    Args:
        source: What to merge.
        output: The folder to write (checked before the slow load).
        overwrite: Replace an existing folder that tuneforge did not write.
        trust_remote_code: Run custom model code (``--trust-remote-code``).
        what: Recorded in the folder's marker.
        add: Writes more files into the folder before it is swapped in: ``add(folder, base_path)``.
        sealer: Writes the weights (default: the source run's, so an encrypted run's merge is encrypted).
    """
    check_mergeable(source)  # before the slow load
    check_merge_output(source, output, overwrite=overwrite)
    model, tokenizer, base_path = load_merged(source, trust_remote_code=trust_remote_code)
    provenance = {
        "source": str(source.path.resolve()),
        "kind": source.kind,
        "base_model": str(base_path),
        "weights": str(source.weights.resolve()),
        "weights_fingerprint": fingerprint(source.weights),
    }
    sealer = sealer if sealer is not None else source_sealer(source)
    with atomic_folder(output, what) as folder:
        save_model(model, tokenizer, folder, provenance, sealer=sealer, name=sealer.name(Path(output)) if sealer else "merged")
        if add is not None:
            add(folder, str(base_path))
    return Path(output)


@audited_output("merge")  # audit log: who merged which run, and the SHA-256 of every file written
def merge(
    run_or_adapter: str | Path, output: str | Path | None = None, *, overwrite: bool = False,
    trust_remote_code: bool = False,
) -> Path:
    """Fold a run's LoRA/DoRA adapter into the base weights and save a plain model folder.

    For a full fine-tune (a run with ``model/``) the model is saved as it is. The
    folder loads with ``AutoModelForCausalLM.from_pretrained`` and generates what
    the adapter model generates (a reward model's folder loads with
    ``AutoModelForSequenceClassification`` and scores as the run does). It is written beside the output and renamed into
    place, with a ``.tuneforge`` marker; an existing folder without that marker is
    replaced only with ``overwrite``.

    Args:
        run_or_adapter: A run directory (``runs/NAME``) or a PEFT adapter folder.
        output: Where to write; default ``RUN/merged`` (or ``<adapter>-merged``).
        overwrite: Replace an existing output folder that tuneforge did not write.
        trust_remote_code: Run custom model code shipped with the base model.

    Returns:
        The merged model folder.

    Raises:
        ExportError: not a run or adapter, no trained weights, an adapter that cannot be merged,
            or an output that is a file, not writable, inside the source or base model, or not ours.

    Example:
        >>> merge("runs/support-bot")
        PosixPath('runs/support-bot/merged')
    """
    from tuneforge.export.card import write_model_card

    source = find_source(run_or_adapter)
    if source.kind == "model":
        raise ExportError(f"{source.path} is a plain model folder; there is no adapter to merge")
    out = Path(output) if output is not None else default_output(source)
    # README.md: lineage, data, eval, hashes of the files (written inside the atomic folder)
    card = lambda folder, base: write_model_card(source.path, folder)  # noqa: E731
    return merge_source(source, out, overwrite=overwrite, trust_remote_code=trust_remote_code, add=card)
