"""Turn one model's outputs into per-example metric statistics that the paired bootstrap can resample.

A :class:`MetricValues` holds, for one metric and one model, a row of
sufficient statistics per example and the function that aggregates any
(resampled) set of rows into the corpus value: a mean for per-example
metrics, ``sum(nll) / sum(tokens)`` for loss, summed n-gram counts for BLEU
and chrF, confusion counts for macro-F1. Resampling rows and re-aggregating
therefore recomputes every metric exactly as it is defined on the full set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np

from tuneforge.config.schema import EvalConfig, MetricName
from tuneforge.eval import metrics as m

METRIC_NAMES: tuple[str, ...] = get_args(MetricName)
LOSS_METRICS = ("loss", "perplexity")
LABEL_METRICS = ("accuracy", "macro_f1", "label_validity")
"""Over the label parsed from each generated answer; ``label_validity`` is the share of answers that name
one of the labels at all (1 - the share of answers outside the label set)."""
LIKELIHOOD_METRICS = ("label_likelihood_accuracy", "label_likelihood_macro_f1")
"""Over the label the model gives the highest log-probability (no generation: see :mod:`tuneforge.eval.likelihood`)."""
JSON_FIELD_METRICS = ("json_field_precision", "json_field_recall", "json_field_f1")
"""Field-level micro precision/recall/F1 over JSON answers (slot extraction)."""
JSON_METRICS = ("json_validity", "json_field_accuracy", *JSON_FIELD_METRICS)
LOWER_IS_BETTER = frozenset(LOSS_METRICS)
UNPARSEABLE = -1
"""Label index of an answer that names no label: wrong, and no class's false positive (see metrics.macro_f1)."""


@dataclass(frozen=True)
class MetricValues:
    """One metric of one model: per-example statistics and how to aggregate them."""

    name: str
    stats: np.ndarray
    """One row per example (shape ``(n,)`` or ``(n, k)``)."""
    aggregate: Callable[[np.ndarray], float]
    """Rows (all of them, or a bootstrap resample) -> corpus value."""
    per_example: np.ndarray
    """A readable per-example score for predictions.jsonl (NaN where undefined)."""

    @property
    def value(self) -> float:
        return self.aggregate(self.stats)

    @property
    def higher_is_better(self) -> bool:
        return self.name not in LOWER_IS_BETTER


@dataclass(frozen=True)
class Scored:
    """Every requested metric of one model on one example set."""

    metrics: dict[str, MetricValues]
    labels: list[str | None] | None = None
    """The label parsed from each answer (``None`` = unparseable), when the task has labels."""

    @property
    def unparseable(self) -> int:
        return sum(label is None for label in self.labels) if self.labels is not None else 0

    def values(self) -> dict[str, float]:
        return {name: mv.value for name, mv in self.metrics.items()}


def _mean(name: str, scores: np.ndarray) -> MetricValues:
    scores = np.asarray(scores, dtype=float)
    return MetricValues(name, scores, lambda rows: float(rows.mean()), scores)


def _loss_ratio(rows: np.ndarray) -> float:
    # Token-weighted, so a long answer counts as much as its tokens (the usual eval loss).
    tokens = rows[:, 1].sum()
    return float(rows[:, 0].sum() / tokens) if tokens else math.nan


def loss_values(nll: np.ndarray) -> dict[str, MetricValues]:
    """Loss and perplexity from per-example ``[summed NLL, answer tokens]`` rows."""
    nll = np.asarray(nll, dtype=float).reshape(-1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_loss = np.where(nll[:, 1] > 0, nll[:, 0] / nll[:, 1], np.nan)
    return {
        "loss": MetricValues("loss", nll, _loss_ratio, per_loss),
        "perplexity": MetricValues("perplexity", nll, lambda rows: math.exp(_loss_ratio(rows)), np.exp(per_loss)),
    }


def label_index(labels: Sequence[str], steps: Sequence[str]) -> dict[str, int]:
    """Normalised label text -> position in ``labels`` (references are looked up by it)."""
    return {m.normalize_text(label, steps): i for i, label in enumerate(labels)}


def score_outputs(
    names: Sequence[str],
    predictions: Sequence[str] | None,
    references: Sequence[str] | None,
    cfg: EvalConfig,
    *,
    nll: np.ndarray | None = None,
    likely: np.ndarray | None = None,
) -> Scored:
    """Score one model's answers (and teacher-forced losses) with the requested metrics.

    Args:
        names: Metric names from :data:`METRIC_NAMES` (already resolved, see
            :func:`tuneforge.eval.checks.resolve_metrics`); ``rouge`` yields ``rouge1``, ``rouge2``, ``rougeL``.
        predictions: Generated answers, one per example (``None`` when only loss is asked).
        references: Reference answers, aligned with ``predictions``.
        cfg: Supplies ``normalize``, ``labels`` and ``json_fields``.
        nll: ``(n, 2)`` rows of summed answer NLL and answer-token count, for loss/perplexity.
        likely: Index into ``cfg.labels`` of each example's most probable label, for the
            ``label_likelihood_*`` metrics.

    Returns:
        A :class:`Scored` with one :class:`MetricValues` per reported metric.
    """
    steps = cfg.normalize
    out: dict[str, MetricValues] = {}
    parsed: list[str | None] | None = None
    index = {label: i for i, label in enumerate(cfg.labels or [])}
    for name in names:
        if name in LOSS_METRICS:
            out[name] = loss_values(nll)[name]
        elif name == "exact_match":
            out[name] = _mean(name, [m.exact_match(p, r, steps) for p, r in zip(predictions, references)])
        elif name == "token_f1":
            out[name] = _mean(name, [m.token_f1(p, r, steps) for p, r in zip(predictions, references)])
        elif name == "json_validity":
            out[name] = _mean(name, [m.json_validity(p) for p in predictions])
        elif name == "json_field_accuracy":
            out[name] = _mean(name, [
                m.json_field_accuracy(p, json.loads(r), cfg.json_fields, steps) for p, r in zip(predictions, references)
            ])
        elif name in JSON_FIELD_METRICS:
            out[name] = _json_field_metric(name, predictions, references, cfg)
        elif name == "rouge":
            out.update({t: _mean(t, s) for t, s in m.rouge_f(predictions, references).items()})
        elif name in ("bleu", "chrf"):
            out[name] = _corpus(name, predictions, references)
        elif name in LABEL_METRICS:
            if parsed is None:
                parsed = [m.parse_label(p, cfg.labels, steps) for p in predictions]
            if name == "label_validity":
                out[name] = _mean(name, [p is not None for p in parsed])
            else:
                out[name] = _label_metric(name, [UNPARSEABLE if p is None else index[p] for p in parsed], references, cfg)
        elif name in LIKELIHOOD_METRICS:
            out[name] = _label_metric(name, likely, references, cfg)
        else:  # resolve_metrics rejects unknown names before this point
            raise ValueError(f"unknown metric {name!r}")
    return Scored(out, parsed)


def _corpus(name: str, predictions: Sequence[str], references: Sequence[str]) -> MetricValues:
    metric = m.sacrebleu_metric(name)
    stats = m.corpus_statistics(name, predictions, references)
    return MetricValues(
        name, stats, lambda rows: m.corpus_score_from_statistics(name, rows, metric),
        m.sentence_scores(name, predictions, references),
    )


def _json_field_metric(name: str, predictions: Sequence[str], references: Sequence[str], cfg: EvalConfig) -> MetricValues:
    # Counts per example, summed before dividing (micro average): an example with many fields
    # weighs as much as its fields, and the bootstrap re-sums resampled rows.
    column = JSON_FIELD_METRICS.index(name)
    counts = np.array([
        m.json_field_counts(p, json.loads(r), cfg.json_fields, cfg.normalize) for p, r in zip(predictions, references)
    ], dtype=float).reshape(-1, 3)
    per_example = np.array([m.precision_recall_f1(*row)[column] for row in counts])
    return MetricValues(name, counts, lambda rows: m.precision_recall_f1(*rows.sum(axis=0))[column], per_example)


def _label_metric(name: str, predicted: Sequence[int], references: Sequence[str], cfg: EvalConfig) -> MetricValues:
    """Accuracy or macro-F1 from predicted label indices (``-1`` = unparseable), whichever way they were chosen."""
    by_text = label_index(cfg.labels, cfg.normalize)
    pred = np.asarray(predicted, dtype=int)
    ref = np.array([by_text[m.normalize_text(r, cfg.normalize)] for r in references])
    correct = (pred == ref).astype(float)
    if name.endswith("accuracy"):
        return _mean(name, correct)
    rows = np.stack([pred, ref], axis=1)
    return MetricValues(name, rows, lambda r: m.macro_f1(r[:, 0], r[:, 1]), correct)
