"""Preference accuracy on held-out pairs: does the model give the chosen answer more probability than the rejected one?

For each pair the summed log-probability of each answer's tokens (teacher-forced, the
same tokens :func:`~tuneforge.eval.loss.answer_nll` scores) is computed under the base
and the tuned model. Reported, with the paired bootstrap of :mod:`tuneforge.eval.compare`:

- ``preference_accuracy``: share of pairs with ``log p(chosen) > log p(rejected)``, base vs tuned;
- ``reward_accuracy``: share of pairs whose DPO implicit reward margin
  ``beta * ((log p_t(c) - log p_b(c)) - (log p_t(r) - log p_b(r)))`` is above 0 (tuned only:
  the base's margin is 0 by definition);
- ``reward_margin``: the mean of that margin.

For KTO's judged answers (one answer labelled desirable or not, no pair), the implied reward
``beta * (log p_t(a) - log p_b(a))`` should be above 0 for desirable answers and below for
undesirable ones: ``judged_reward_accuracy`` is the share where its sign agrees with the label.

A reward model (``training.objective: reward``) is scored by :func:`compare_rewards` instead:
``pairwise_accuracy``, the share of pairs with ``r(chosen) > r(rejected)``, the untrained head
vs the trained model (chance is 0.5), and the mean margin ``r(chosen) - r(rejected)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tuneforge.eval.compare import bootstrap_indices, paired_bootstrap, single_bootstrap
from tuneforge.eval.result import EvalResult, MetricComparison
from tuneforge.eval.scoring import MetricValues


def pair_logps(model: Any, tokenizer: Any, pairs: Sequence[dict], *, limit: int | None = None) -> np.ndarray:
    """``(n, 2)`` summed log-probabilities of the chosen and the rejected answer of each pair."""
    from tuneforge.data.pairs import side
    from tuneforge.eval.loss import answer_nll

    columns = [answer_nll(model, tokenizer, [side(p, which) for p in pairs], limit=limit)[0][:, 0] for which in ("chosen", "rejected")]
    return -np.stack(columns, axis=1)


def judged_logps(model: Any, tokenizer: Any, rows: Sequence[dict], *, limit: int | None = None) -> np.ndarray:
    """``(n,)`` summed log-probabilities of each judged row's completion."""
    from tuneforge.data.pairs import side
    from tuneforge.eval.loss import answer_nll

    return -answer_nll(model, tokenizer, [side(r, "completion") for r in rows], limit=limit)[0][:, 0]


def compare_judged(base: np.ndarray, tuned: np.ndarray, labels: Sequence[bool], *, beta: float, samples: int,
                   seed: int, tuned_name: str) -> EvalResult:
    """The implied reward of judged answers (tuned vs base log-ratio) against their labels, with 95% bootstrap CIs.

    Example:
        >>> compare_judged(np.array([-5., -4.]), np.array([-3., -6.]), [True, False], beta=0.1, samples=100, seed=0,
        ...                tuned_name="kto").metrics["judged_reward_accuracy"].tuned
        1.0
    """
    n = len(base)
    indices = bootstrap_indices(n, samples, seed)
    reward = beta * (tuned - base)
    sign = np.where(np.asarray(labels, dtype=bool), 1.0, -1.0)
    metrics = {}
    for values in (_mean("judged_reward_accuracy", reward * sign > 0), _mean("judged_reward_margin", reward * sign)):
        metrics[values.name] = MetricComparison(values.name, values.value, single_bootstrap(values, indices), True, n=n)
    return EvalResult(
        metrics=metrics, examples=n, tuned_name=tuned_name, baseline_name="base",
        settings={"kind": "judged answers", "bootstrap_samples": samples, "seed": seed, "beta": beta},
    )


def _mean(name: str, values: np.ndarray) -> MetricValues:
    values = np.asarray(values, dtype=float)
    return MetricValues(name, values, lambda rows: float(rows.mean()), values)


def compare_pairs(
    base: np.ndarray, tuned: np.ndarray, *, beta: float, samples: int, seed: int, tuned_name: str
) -> EvalResult:
    """Base vs tuned preference metrics with 95% bootstrap intervals, from :func:`pair_logps` of each.

    Example:
        >>> result = compare_pairs(np.array([[-5., -4.]]), np.array([[-3., -6.]]), beta=0.1, samples=100, seed=0,
        ...                        tuned_name="dpo")
        >>> result.metrics["preference_accuracy"].tuned
        1.0
    """
    n = len(base)
    indices = bootstrap_indices(n, samples, seed)
    acc_base = _mean("preference_accuracy", base[:, 0] > base[:, 1])
    acc_tuned = _mean("preference_accuracy", tuned[:, 0] > tuned[:, 1])
    p = paired_bootstrap(acc_base, acc_tuned, indices)
    margin = beta * ((tuned[:, 0] - base[:, 0]) - (tuned[:, 1] - base[:, 1]))
    metrics = {
        "preference_accuracy": MetricComparison(
            "preference_accuracy", p.tuned, p.tuned_ci, True, p.base, p.base_ci, p.diff, p.diff_ci, n=n
        ),
    }
    for values in (_mean("reward_accuracy", margin > 0), _mean("reward_margin", margin)):
        metrics[values.name] = MetricComparison(values.name, values.value, single_bootstrap(values, indices), True, n=n)
    return EvalResult(
        metrics=metrics, examples=n, tuned_name=tuned_name, baseline_name="base",
        settings={"kind": "preference pairs", "bootstrap_samples": samples, "seed": seed, "beta": beta},
    )


def compare_rewards(base: np.ndarray | None, tuned: np.ndarray, *, samples: int, seed: int, tuned_name: str) -> EvalResult:
    """Pairwise accuracy of a reward model with 95% bootstrap intervals, vs the untrained head when given.

    Args:
        base: ``(n, 2)`` rewards of the chosen and the rejected answer under the untrained head, or None.
        tuned: The same under the trained reward model.

    Example:
        >>> result = compare_rewards(None, np.array([[2., -1.], [0., 1.]]), samples=100, seed=0, tuned_name="rm")
        >>> result.metrics["pairwise_accuracy"].tuned
        0.5
    """
    n = len(tuned)
    indices = bootstrap_indices(n, samples, seed)
    accuracy = _mean("pairwise_accuracy", tuned[:, 0] > tuned[:, 1])
    margin = _mean("reward_margin", tuned[:, 0] - tuned[:, 1])
    if base is None:
        pairwise = MetricComparison("pairwise_accuracy", accuracy.value, single_bootstrap(accuracy, indices), True, n=n)
    else:
        p = paired_bootstrap(_mean("pairwise_accuracy", base[:, 0] > base[:, 1]), accuracy, indices)
        pairwise = MetricComparison("pairwise_accuracy", p.tuned, p.tuned_ci, True, p.base, p.base_ci, p.diff, p.diff_ci, n=n)
    return EvalResult(
        metrics={
            "pairwise_accuracy": pairwise,
            "reward_margin": MetricComparison("reward_margin", margin.value, single_bootstrap(margin, indices), True, n=n),
        },
        examples=n, tuned_name=tuned_name, baseline_name="untrained head" if base is not None else None,
        settings={"kind": "reward model on preference pairs", "chance": 0.5, "bootstrap_samples": samples, "seed": seed},
    )
