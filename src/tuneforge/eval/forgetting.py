"""Forgetting check: perplexity on general text before (base) and after (tuned) fine-tuning.

A fine-tune that wins on its task but makes the model worse at plain language
has traded general ability for the task. The check scores a reference set of
general-text documents with both models (teacher forcing, every token) and
flags a relative perplexity rise above ``eval.forgetting.max_rise``.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.schema import ForgettingConfig
from tuneforge.errors import EvalError
from tuneforge.eval.compare import bootstrap_indices, paired_bootstrap
from tuneforge.eval.jsonl import parse_json_lines
from tuneforge.eval.loss import example_nll
from tuneforge.eval.scoring import loss_values

log = logging.getLogger("tuneforge.eval")

BUNDLED = "general_text.jsonl"


@dataclass(frozen=True)
class ForgettingResult:
    """General-text perplexity of both models and whether the rise is too large."""

    source: str
    documents: int
    tokens: int
    base_perplexity: float
    tuned_perplexity: float
    max_rise: float
    ci: tuple[float, float] | None = None
    """95% paired-bootstrap interval of tuned - base perplexity."""

    @property
    def rise(self) -> float:
        """Relative change ``tuned / base - 1`` (0.25 = 25% higher perplexity after tuning)."""
        return self.tuned_perplexity / self.base_perplexity - 1

    @property
    def flagged(self) -> bool:
        return self.rise > self.max_rise

    def to_dict(self) -> dict:
        return {**asdict(self), "rise": self.rise, "flagged": self.flagged}

    @classmethod
    def from_dict(cls, data: dict) -> "ForgettingResult":
        ci = data.get("ci")
        return cls(
            source=data["source"], documents=data["documents"], tokens=data["tokens"],
            base_perplexity=data["base_perplexity"], tuned_perplexity=data["tuned_perplexity"],
            max_rise=data["max_rise"], ci=tuple(ci) if ci else None,
        )


def reference_source(cfg: ForgettingConfig) -> Any:
    """The reference file: ``cfg.data`` or the bundled general-text set (a Traversable in the package)."""
    if cfg.data:
        return Path(cfg.data)
    return importlib.resources.files("tuneforge") / "resources" / BUNDLED


def load_reference_texts(cfg: ForgettingConfig) -> list[str]:
    """Read the reference documents: JSON lines with a ``text`` field, or a ``.txt`` file split on blank lines.

    Raises:
        EvalError: the file is missing, a line is not JSON or has no string ``text``, or no document is left.
    """
    source = reference_source(cfg)
    if not source.is_file():
        where = f"forgetting.data {source}" if cfg.data else f"the bundled reference set {source}"
        raise EvalError(f"{where} does not exist")
    content = source.read_text(encoding="utf-8")
    if str(source).endswith(".txt"):
        texts = [block.strip() for block in content.split("\n\n") if block.strip()]
    else:
        rows = parse_json_lines(content, source, require={"text": str})
        texts = [row["text"] for row in rows if row["text"].strip()]
    if not texts:
        raise EvalError(f"{source} holds no documents")
    return texts[: cfg.max_documents] if cfg.max_documents else texts


def document_nll(model: Any, tokenizer: Any, texts: list[str], *, max_seq_length: int) -> Any:
    """Per-document ``[summed NLL, tokens]`` rows of plain text (every token; long documents truncated)."""
    return example_nll(model, tokenizer, [{"text": t} for t in texts], max_seq_length=max_seq_length,
                       too_long="truncate")


def compare_perplexity(
    base_rows: Any, tuned_rows: Any, cfg: ForgettingConfig, *, source: str, samples: int, seed: int
) -> ForgettingResult:
    """Perplexity of both models from per-document NLL rows, with a paired-bootstrap interval of the difference."""
    base, tuned = loss_values(base_rows)["perplexity"], loss_values(tuned_rows)["perplexity"]
    pair = paired_bootstrap(base, tuned, bootstrap_indices(len(base.stats), samples, seed))
    return ForgettingResult(
        source=source, documents=len(base.stats), tokens=int(base.stats[:, 1].sum()),
        base_perplexity=pair.base, tuned_perplexity=pair.tuned, max_rise=cfg.max_rise, ci=pair.diff_ci,
    )
