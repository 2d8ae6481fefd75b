"""What may continue a run: the newest complete checkpoint, and the settings a resume may not change.

The stored ``config.yaml`` is the truth about a run: its test split, learning
rate and method produced the checkpoints. Resuming with other settings would
either crash inside ``load_state_dict`` (another method) or, worse, silently
record settings the weights never saw (another learning rate or data). So a
resume is refused when any field outside :data:`RESUMABLE_FIELDS` differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.config.schema import RunConfig

RESUMABLE_FIELDS: tuple[str, ...] = (
    "training.logging_steps",
    "training.report_to",
    "training.dataloader_num_workers",
    "eval",
    # Where the key is found (`tuneforge rekey` changes it); the key itself is checked when files are read.
    "security.key_file",
    "security.key_env",
    "security.passphrase_env",
)
"""Dotted fields (or whole sections) that may differ on resume: they change what is logged or how
the finished model is evaluated, never the weights trained so far."""


def latest_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was completely written.

    transformers' ``get_last_checkpoint`` picks the highest-numbered folder,
    which after a kill mid-save is half written. The Trainer writes
    ``trainer_state.json`` last, so its presence marks a complete checkpoint.
    """
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def config_differences(stored: RunConfig, current: RunConfig, *, allowed: tuple[str, ...] = RESUMABLE_FIELDS) -> list[str]:
    """Every dotted field whose value differs, as ``field: stored X, now Y`` (allowed fields left out).

    Example:
        >>> config_differences(stored, stored.model_copy(update={"name": "b"}))
        ["name: stored 'a', now 'b'"]
    """
    old, new = _flatten(stored.model_dump(mode="json")), _flatten(current.model_dump(mode="json"))
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key) and not any(key == a or key.startswith(a + ".") for a in allowed):
            out.append(f"{key}: stored {old.get(key)!r}, now {new.get(key)!r}")
    return out


def changed_sources(stored_report: Path, sources: dict[str, str], key: Any = None) -> list[str]:
    """Data files whose content (SHA-256) differs from what the stored data report recorded.

    ``key`` decrypts the report of an encrypted run (a wrong key or a modified report is an error).
    """
    from tuneforge.security.at_rest import read_text

    try:
        recorded = {s["path"]: s.get("sha256") for s in json.loads(read_text(stored_report, key))["sources"]}
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no report (the run failed before writing it): nothing recorded to compare with
    return sorted(p for p, digest in sources.items() if p in recorded and recorded[p] != digest)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}
