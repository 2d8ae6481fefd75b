"""Paired bootstrap (seeded, pairs resampled jointly, CI covers the true difference) and changed examples."""

from __future__ import annotations

import numpy as np
import pytest

from tuneforge.config.schema import EvalConfig
from tuneforge.eval.compare import bootstrap_indices, changed_examples, paired_bootstrap, single_bootstrap
from tuneforge.eval.scoring import MetricValues, score_outputs


def _mean(name: str, scores) -> MetricValues:
    scores = np.asarray(scores, dtype=float)
    return MetricValues(name, scores, lambda rows: float(rows.mean()), scores)


def test_bootstrap_is_deterministic_under_a_seed():
    rng = np.random.default_rng(0)
    base, tuned = _mean("em", rng.integers(0, 2, 200)), _mean("em", rng.integers(0, 2, 200))
    a = paired_bootstrap(base, tuned, bootstrap_indices(200, 500, seed=7))
    b = paired_bootstrap(base, tuned, bootstrap_indices(200, 500, seed=7))
    c = paired_bootstrap(base, tuned, bootstrap_indices(200, 500, seed=8))
    assert a == b
    assert a.diff_ci != c.diff_ci


def test_ci_contains_true_difference_on_constructed_case():
    # Base is right on 50% of 2,000 examples; tuned fixes exactly 400 of the wrong ones: true diff 0.2.
    base = np.zeros(2000)
    base[:1000] = 1
    tuned = base.copy()
    tuned[1000:1400] = 1
    pair = paired_bootstrap(_mean("acc", base), _mean("acc", tuned), bootstrap_indices(2000, 1000, seed=42))
    assert pair.diff == pytest.approx(0.2)
    lo, hi = pair.diff_ci
    assert lo < 0.2 < hi
    assert lo > 0.17 and hi < 0.23  # ~sqrt(0.2*0.8/2000)*1.96 = 0.0175 either side
    assert pair.base_ci[0] < 0.5 < pair.base_ci[1]


def test_pairing_narrows_the_interval():
    # Tuned = base on every example but 10: the paired CI is tight although each model's own CI is wide.
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2, 400).astype(float)
    tuned = base.copy()
    tuned[np.flatnonzero(base == 0)[:10]] = 1
    pair = paired_bootstrap(_mean("em", base), _mean("em", tuned), bootstrap_indices(400, 1000, seed=3))
    paired_width = pair.diff_ci[1] - pair.diff_ci[0]
    unpaired_width = pair.tuned_ci[1] - pair.tuned_ci[0]
    assert paired_width < unpaired_width / 3
    assert pair.diff_ci[0] > 0  # 10 fixes, no breaks: the improvement is certain under pairing


def test_no_difference_gives_zero_interval():
    scores = _mean("em", [1, 0, 1, 1, 0])
    pair = paired_bootstrap(scores, scores, bootstrap_indices(5, 200, seed=0))
    assert pair.diff == 0 and pair.diff_ci == (0.0, 0.0)


def test_corpus_metric_is_recomputed_per_resample():
    # Every reference has 4-grams, so corpus BLEU of any resample is defined and the tuned one is 100.
    refs = ["the cat sat on the mat", "a dog ran far away today", "hello world and good night"]
    preds_b = ["the cat sat", "a dog ran far", "hello world and"]
    preds_t = list(refs)
    cfg = EvalConfig()
    base = score_outputs(["bleu"], preds_b, refs, cfg).metrics["bleu"]
    tuned = score_outputs(["bleu"], preds_t, refs, cfg).metrics["bleu"]
    pair = paired_bootstrap(base, tuned, bootstrap_indices(3, 200, seed=0))
    assert pair.tuned == pytest.approx(100.0)
    assert pair.diff == pytest.approx(100.0 - base.value)
    assert pair.diff_ci[0] > 0


def test_paired_bootstrap_refuses_misaligned_sets():
    with pytest.raises(ValueError, match="3 examples"):
        paired_bootstrap(_mean("em", [1, 0, 1]), _mean("em", [1, 0]), bootstrap_indices(2, 100, seed=0))


def test_single_bootstrap_interval():
    lo, hi = single_bootstrap(_mean("em", [1.0] * 30 + [0.0] * 70), bootstrap_indices(100, 500, seed=0))
    assert lo < 0.3 < hi


def test_changed_examples():
    changed = changed_examples("exact_match", [0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 1])
    assert changed.wrong_to_right == [0, 5]
    assert changed.right_to_wrong == [2, 4]
    assert changed.metric == "exact_match"
    assert changed_examples("accuracy", [1, 1], [1, 1]).wrong_to_right == []

