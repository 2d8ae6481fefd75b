"""Pre-flight checks: what a valid config can still get wrong, found before any model is loaded.

The schema checks each field on its own; these checks look at the world the
config points to: the run folder can be created and has disk space, every data
file exists, LoRA/IA3 ``target_modules`` name modules the model has, and
``eval.labels`` fit the reference answers. ``tuneforge validate`` and the start
of ``tuneforge train`` both call :func:`preflight`, so a run that validates does
not fail on these after minutes of loading and training.
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError, DataError, EvalError

# A LoRA adapter of a small model takes megabytes, but checkpoints hold optimizer state and a
# full fine-tune of SmolLM2-135M writes ~0.5 GB per copy: below 1 GiB free a run is likely to die
# half-way through a save. Deliberately small, so it only catches disks that are (nearly) full.
MIN_FREE_BYTES = 1 << 30


def preflight(cfg: RunConfig, *, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Check that ``cfg`` can run here, without loading model weights.

    Args:
        cfg: A validated run config.
        min_free_bytes: Free space the disk of ``out_dir`` must have (default :data:`MIN_FREE_BYTES`).

    Raises:
        ConfigError: listing every problem found, each naming its field.
        ModelError: the model cannot be resolved (checked only for ``target_modules``).

    Example:
        >>> preflight(load_config("examples/quickstart.yaml"))
    """
    problems = check_run_folder(cfg.run_dir, min_free_bytes) + check_data_files(cfg)
    problems += check_target_modules(cfg) + check_distill(cfg)
    if not any(p.startswith("data.") for p in problems):  # labels need the data files
        problems += check_labels(cfg)
    if problems:
        raise ConfigError(problems)


def check_run_folder(run_dir: Path, min_free_bytes: int = MIN_FREE_BYTES) -> list[str]:
    """The run folder exists as a folder, or its nearest existing parent is a writable folder with space."""
    run_dir = Path(run_dir).absolute()
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "the run folder" if existing == run_dir else f"the run folder {run_dir} cannot be created:"
        return [f"out_dir: {what} {existing} is a file, not a folder"]
    try:
        # A real probe, not os.access: root passes access checks even on read-only mounts.
        probe = tempfile.mkdtemp(prefix=".tuneforge-probe-", dir=existing)
    except OSError as exc:
        return [f"out_dir: cannot create the run folder {run_dir}: {existing} is not writable ({exc.strerror or exc})"]
    Path(probe).rmdir()
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        return [
            f"out_dir: only {free / 2**20:.0f} MiB free on the disk of {existing}; a run needs at least "
            f"{min_free_bytes / 2**20:.0f} MiB for checkpoints and weights (free space or choose another out_dir)"
        ]
    return []


def check_data_files(cfg: RunConfig) -> list[str]:
    """Every data source exists (it is read only later, after the model is loaded)."""
    return [
        f"data.{role}[{i}].path: data file not found: {src.path}"
        for role in ("train", "validation", "test")
        for i, src in enumerate(getattr(cfg.data, role))
        if not Path(src.path).exists()
    ]


def check_distill(cfg: RunConfig) -> list[str]:
    """A local distillation teacher and the prompt file exist (found without loading the teacher)."""
    if cfg.distill is None:
        return []
    from tuneforge.errors import ModelError
    from tuneforge.models.target import resolve_target

    problems = []
    if isinstance(cfg.distill.teacher, str):
        try:
            resolve_target(cfg.distill.teacher)
        except ModelError as exc:
            problems.append(f"distill.teacher: {exc}")
    if cfg.distill.prompts and not Path(cfg.distill.prompts).is_file():
        problems.append(f"distill.prompts: prompt file not found: {cfg.distill.prompts}")
    return problems


def module_names(cfg: RunConfig) -> list[str]:
    """Names of every module of the config's model, built on the meta device (no weights read)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.models import resolve

    path = resolve(cfg.model)
    config = AutoConfig.from_pretrained(path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
    return [name for name, _ in model.named_modules() if name]


def check_target_modules(cfg: RunConfig, names: list[str] | None = None) -> list[str]:
    """Each listed ``method.target_modules`` entry names at least one module of the model.

    PEFT fails only when *no* entry matches; an entry that matches nothing next to
    ones that do (a typo such as ``v_prj``) is silently left untrained.
    """
    targets = getattr(cfg.method, "target_modules", None)
    if not isinstance(targets, list):  # 'all-linear', or a method without target modules
        return []
    names = module_names(cfg) if names is None else names
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
    problems = []
    for target in targets:
        # PEFT's rule for a list of names: the full name, or its last dotted parts.
        if any(n == target or n.endswith("." + target) for n in names):
            continue
        close = difflib.get_close_matches(target, leaves, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        problems.append(
            f"method.target_modules: '{target}' matches no module of {cfg.model.name_or_path}{hint} "
            f"(module names: {', '.join(leaves)})"
        )
    return problems


def check_labels(cfg: RunConfig) -> list[str]:
    """``eval.labels`` fit the reference answers of the evaluation data (test files, else training files)."""
    if not (cfg.eval.enabled and cfg.eval.labels):
        return []
    from tuneforge.data.load import load_examples
    from tuneforge.eval.checks import check_references
    from tuneforge.eval.metrics import normalize_text

    from tuneforge.data.preferences import reference_examples

    sources = cfg.data.test or cfg.data.train
    role = "test" if cfg.data.test else "train"
    try:
        # A pair's reference answer is the chosen one, a KTO row's its desirable answer, a GRPO prompt's its reference.
        examples = [
            ex for src in sources
            for ex in reference_examples(load_examples(src, on_bad_rows=cfg.data.on_bad_rows,
                                                       system_prompt=cfg.data.system_prompt, objective=cfg.training.objective))
            if "messages" in ex
        ]
    except DataError as exc:
        return [f"data.{role}: {exc}"]
    references = [_reference(ex) for ex in examples]
    pairs = [(ex, ref) for ex, ref in zip(examples, references) if ref is not None]
    if not pairs:
        return []
    labels = {normalize_text(label, cfg.eval.normalize) for label in cfg.eval.labels}
    matching = sum(normalize_text(ref, cfg.eval.normalize) in labels for _, ref in pairs)
    source = ", ".join(src.path for src in sources)
    try:
        check_references([ex for ex, _ in pairs], [ref for _, ref in pairs], cfg.eval, metrics=[], source=source)
    except EvalError as exc:
        lead = f"eval.labels match none of the {len(pairs)} reference answers; " if matching == 0 else "eval.labels: "
        return [lead + str(exc)]
    return []


def _reference(example: dict) -> Any:
    from tuneforge.data.template import reference

    try:
        return reference(example)
    except DataError:  # no assistant turn: the data report counts it, nothing to compare
        return None
