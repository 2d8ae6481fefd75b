"""The run manifest: what produced these weights (versions, data hashes, seed) and what it cost."""

from __future__ import annotations

import platform
import resource
import sys
import time
from importlib import metadata
from typing import Any

_PACKAGES = ["tuneforge", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers", "safetensors"]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def peak_gpu_mb() -> float | None:
    """Peak GPU memory this process's tensors held (torch's allocator), in MiB; None when it never used CUDA."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return round(torch.cuda.max_memory_allocated() / (1024 * 1024), 1)


def build_manifest(cfg: Any, sources: dict[str, str], *, parent: dict[str, Any] | None = None, **numbers: Any) -> dict[str, Any]:
    """Assemble manifest.json: versions, data SHA-256 per source, seed, and the run's numbers.

    A run that started from another run records it as ``parent`` (run, stage, weights SHA-256, and
    that run's own parent; :func:`tuneforge.models.from_run.parent_record`, taken when the run started):
    the lineage of a multi-stage run, readable from its last stage.
    """
    return {
        "name": cfg.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"platform": platform.platform(), "machine": platform.machine(), "python": sys.version.split()[0]},
        "versions": package_versions(),
        "model": cfg.model.name_or_path,
        "method": cfg.method.name,
        "seed": cfg.training.seed,
        "data_sha256": sources,
        **({"parent": parent} if parent else {}),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in numbers.items()},
    }
