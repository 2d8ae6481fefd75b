"""Base versus tuned on the same examples: paired bootstrap confidence intervals and the examples that changed.

Paired bootstrap: draw ``n`` example indices with replacement, aggregate the
metric for both models on *the same* draw, and take the difference; repeat
``samples`` times. The 2.5th and 97.5th percentiles of the differences are the
95% interval. Because each model's rows are re-aggregated by the metric's own
function (see :mod:`tuneforge.eval.scoring`), corpus metrics such as BLEU and
chrF are recomputed on every resample from summed n-gram statistics, as in
``sacrebleu.significance``, rather than approximated by sentence scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tuneforge.eval.scoring import MetricValues

CONFIDENCE = 0.95


def bootstrap_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """A ``(samples, n)`` matrix of example indices drawn with replacement by a seeded ``numpy`` Generator.

    The same matrix serves every metric and both models, which is what makes the bootstrap paired.
    """
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedInterval:
    """A metric for both models, their difference and 95% percentile intervals."""

    base: float
    tuned: float
    diff: float
    diff_ci: tuple[float, float]
    base_ci: tuple[float, float]
    tuned_ci: tuple[float, float]


def paired_bootstrap(base: MetricValues, tuned: MetricValues, indices: np.ndarray) -> PairedInterval:
    """Paired bootstrap of ``tuned - base`` for one metric.

    Args:
        base: The baseline's per-example statistics.
        tuned: The tuned model's statistics for the same examples, in the same order.
        indices: From :func:`bootstrap_indices`.

    Example:
        >>> ci = paired_bootstrap(base_em, tuned_em, bootstrap_indices(300, 1000, seed=42))
        >>> ci.diff, ci.diff_ci
        (0.12, (0.07, 0.17))
    """
    if len(base.stats) != len(tuned.stats):
        raise ValueError(f"{base.name}: base has {len(base.stats)} examples, tuned {len(tuned.stats)}")
    b = np.array([base.aggregate(base.stats[idx]) for idx in indices])
    t = np.array([tuned.aggregate(tuned.stats[idx]) for idx in indices])
    return PairedInterval(
        base=base.value, tuned=tuned.value, diff=tuned.value - base.value,
        diff_ci=_interval(t - b), base_ci=_interval(b), tuned_ci=_interval(t),
    )


def single_bootstrap(values: MetricValues, indices: np.ndarray) -> tuple[float, float]:
    """95% interval of one model's metric (used when there is no baseline)."""
    return _interval(np.array([values.aggregate(values.stats[idx]) for idx in indices]))


@dataclass(frozen=True)
class ChangedExamples:
    """Examples whose correctness differs between base and tuned, by one per-example 0/1 metric."""

    metric: str
    wrong_to_right: list[int]
    right_to_wrong: list[int]


def changed_examples(metric: str, base_correct: Sequence[float], tuned_correct: Sequence[float]) -> ChangedExamples:
    """Indices of examples the tuned model fixed (wrong -> right) and broke (right -> wrong).

    Example:
        >>> changed_examples("exact_match", [0, 1, 1, 0], [1, 1, 0, 0])
        ChangedExamples(metric='exact_match', wrong_to_right=[0], right_to_wrong=[2])
    """
    base = np.asarray(base_correct) > 0.5
    tuned = np.asarray(tuned_correct) > 0.5
    return ChangedExamples(
        metric=metric,
        wrong_to_right=np.flatnonzero(~base & tuned).tolist(),
        right_to_wrong=np.flatnonzero(base & ~tuned).tolist(),
    )
