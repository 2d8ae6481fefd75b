"""Safe model loading: which weight files may be read, pinned digests, and custom-code detection.

Pickle-based weight files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``)
can run arbitrary code when unpickled, so a model folder is read from its
safetensors files only, unless the user opts in with ``model.allow_pickle``
(and even then ``torch.load(weights_only=True)`` restricts what unpickles).
``model.sha256`` pins the weight files, so a model swapped under a run is
refused instead of silently served. All functions here only look at files;
loading stays in :mod:`tuneforge.models.load`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from tuneforge.errors import ModelError, SecurityError

log = logging.getLogger("tuneforge.security")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
# Files in a model folder that are pickles but not weights (Trainer state); never loaded as a model.
_NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files directly inside ``folder`` (safetensors and pickle formats), sorted by name."""
    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.name not in _NOT_WEIGHTS
    )


def check_weight_files(folder: str | Path, *, allow_pickle: bool = False) -> bool:
    """Decide how ``folder`` may be loaded; return whether to load safetensors only.

    Args:
        folder: A model or adapter folder.
        allow_pickle: The user's ``model.allow_pickle``.

    Returns:
        ``True`` when safetensors files are there (loaders must read only those);
        ``False`` when only pickle files are there and ``allow_pickle`` is set.

    Raises:
        SecurityError: only pickle files are there and ``allow_pickle`` is off (names the file).
    """
    files = weight_files(folder)
    if any(p.suffix == ".safetensors" for p in files):
        return True
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickles and not allow_pickle:
        raise SecurityError(
            f"{pickles[0]} is a pickle-based weight file, which can run code when loaded; tuneforge loads "
            "safetensors only. Convert it to safetensors, or set model.allow_pickle: true in the config if you "
            "trust its source (it is then loaded with torch.load(weights_only=True))"
        )
    if pickles:
        log.warning("loading pickle-based weights %s (model.allow_pickle: true; weights_only=True)", pickles[0])
    return not pickles


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 digest of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_pins(files: list[Path], pins: str | Mapping[str, str]) -> None:
    """Check ``files`` against ``model.sha256``: one digest (a single weight file) or ``{file name: digest}``.

    Every weight file must be pinned and match, and every pinned file must exist, so neither
    a swapped nor an added file (such as a ``.bin`` beside the safetensors) slips through.

    Raises:
        SecurityError: a digest differs, a pinned file is missing, or a file is not pinned (names the file).
    """
    by_name = {p.name: p for p in files}
    if isinstance(pins, str):
        if len(files) != 1:
            names = ", ".join(by_name) or "none"
            raise SecurityError(
                f"model.sha256 is one digest but the model has {len(files)} weight files ({names}); "
                "give a mapping 'file name: digest' instead"
            )
        pins = {files[0].name: pins}
    missing = sorted(set(pins) - set(by_name))
    if missing:
        raise SecurityError(
            f"model.sha256 pins {missing[0]}, which is not among the model's weight files ({', '.join(by_name) or 'none'})"
        )
    for name, path in by_name.items():
        if name not in pins:
            raise SecurityError(f"{path} is not pinned in model.sha256; add its digest or remove the file")
        got = file_sha256(path)
        if got != pins[name].lower():
            raise SecurityError(f"{path}: SHA-256 {got} does not match model.sha256 ({pins[name]}); refusing to load it")


def custom_code(folder: str | Path) -> list[str]:
    """The custom classes a model folder asks transformers to import (``auto_map`` entries), if any."""
    found: list[str] = []
    for name in ("config.json", "tokenizer_config.json"):
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            auto_map = json.loads(path.read_text(encoding="utf-8")).get("auto_map") or {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            continue
        for ref in auto_map.values():
            found.extend(r for r in (ref if isinstance(ref, list) else [ref]) if isinstance(r, str))
    return found


def refuse_custom_code(folder: str | Path, exc: BaseException) -> None:
    """Turn transformers' "needs trust_remote_code" failure into a clear error naming our flag.

    Raises:
        ModelError: ``folder`` ships custom code (``auto_map``) that transformers would need to run.
    """
    code = custom_code(folder) if Path(folder).is_dir() else []
    if code and "trust_remote_code" in str(exc):
        raise ModelError(
            f"{folder} needs its own Python code to load ({', '.join(code)} from its auto_map); tuneforge never "
            "runs a model's code unless you pass --trust-remote-code (or trust_remote_code=True in Python), and "
            "never because a stored run's config.yaml asks for it. Read that code first: it runs with your rights"
        ) from exc
