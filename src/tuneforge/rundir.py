"""The layout of a run directory, in one place.

``runs/<name>/`` holds everything a run produced (``runs/audit.jsonl``, beside it, is the audit log)::

    config.yaml          the resolved config (every default written out)
    data_report.json     what data cleaning kept, dropped and why
    adapter/             PEFT adapter + tokenizer (LoRA/DoRA/...), loadable by PeftModel.from_pretrained
    model/               full model + tokenizer (method: full), loadable by AutoModelForCausalLM
    checkpoints/         Trainer checkpoints (resume)
    metrics.jsonl        one JSON line per logging/eval event
    tensorboard/         TensorBoard event files
    manifest.json        package versions, data SHA-256, seed, wall time, tokens/s, peak memory
    eval/                report.md, report.html, metrics.json, predictions.jsonl, *.png
    README.md            the model card: base model + hash, data + SHA-256 + licence, eval, audit entry
    merged/              `tuneforge merge` output
    export/              `tuneforge export` output
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data_report(self) -> Path:
        return self.root / "data_report.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def test_split(self) -> Path:
        """The held-out test examples (canonical messages), so `tuneforge eval RUN` reuses them."""
        return self.root / "data" / "test.jsonl"

    @property
    def validation_split(self) -> Path:
        return self.root / "data" / "validation.jsonl"

    def is_run(self) -> bool:
        return self.config.is_file() and (self.adapter.is_dir() or self.model.is_dir())

    @property
    def weights(self) -> Path:
        """The trained weights: the adapter for PEFT methods, else the full model."""
        return self.adapter if self.adapter.is_dir() else self.model
