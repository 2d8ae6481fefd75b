"""Label-balanced training for classification-style SFT data (``data.balance: oversample | loss_weights``).

When most answers are one label (51 % "Other" in a legal-clause set), a short run learns to
answer that label to everything. Oversampling repeats rows of the rarer labels, drawn with a
seeded generator, until each label has as many training rows as the most frequent one. Only
the training split is balanced: validation and test keep the real label distribution, which
is what the model will meet and what its metrics must describe.

``loss_weights`` keeps the rows as they are and weighs each row's loss instead, by
``N / (K * n_label)`` (``N`` labelled rows, ``K`` labels present, ``n_label`` rows of its label): every
label then carries the same total weight, and the mean weight stays 1, so the learning rate keeps its scale.

Labels are ``eval.labels`` when set, else detected: a small set of short answers that repeat
(see :func:`detect_labels`). Rows whose answer is none of the labels are kept once, as they are.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

MAX_DETECTED_LABELS = 20
MAX_LABEL_WORDS = 5


def detect_labels(answers: Sequence[str]) -> list[str] | None:
    """The label set of classification-style answers, or ``None`` when the answers do not look like labels.

    Labels: at most :data:`MAX_DETECTED_LABELS` distinct answers of at most
    :data:`MAX_LABEL_WORDS` words each, at least two of them, each given on average by two rows or more.

    Example:
        >>> detect_labels(["billing", "refund", "billing", "refund"])
        ['billing', 'refund']
    """
    distinct = sorted({a.strip() for a in answers})
    if not 2 <= len(distinct) <= MAX_DETECTED_LABELS or len(answers) < 2 * len(distinct):
        return None
    if any(not a or len(a.split()) > MAX_LABEL_WORDS for a in distinct):
        return None
    return distinct


def label_of(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer is (case and surrounding space ignored), or ``None``."""
    folded = {label.strip().casefold(): label for label in labels}
    return folded.get(answer.strip().casefold())


def oversample(rows: Sequence[T], row_labels: Sequence[str | None], *, seed: int) -> list[T]:
    """Rows with every label repeated up to the most frequent label's count, shuffled (seeded).

    Rows without a label (``None``) stay, once each.

    Example:
        >>> sorted(oversample(["a1", "a2", "a3", "b1"], ["a", "a", "a", "b"], seed=0))
        ['a1', 'a2', 'a3', 'b1', 'b1', 'b1']
    """
    rng = random.Random(seed)
    by_label: dict[str, list[T]] = {}
    for row, label in zip(rows, row_labels):
        if label is not None:
            by_label.setdefault(label, []).append(row)
    target = max((len(r) for r in by_label.values()), default=0)
    out = list(rows)
    for label in sorted(by_label):  # sorted: the draws do not depend on the order labels first appear in
        group = by_label[label]
        out += [rng.choice(group) for _ in range(target - len(group))]
    rng.shuffle(out)
    return out


def label_weights(row_labels: Sequence[str | None]) -> dict[str, float]:
    """``label -> N / (K * n_label)`` over the labels present (see the module docstring).

    Example:
        >>> label_weights(["a", "a", "a", "b"])
        {'a': 0.6667, 'b': 2.0}
    """
    counts = Counter(label for label in row_labels if label is not None)
    total, k = sum(counts.values()), len(counts)
    return {label: round(total / (k * n), 4) for label, n in sorted(counts.items())}


def label_counts(row_labels: Sequence[str | None], labels: Sequence[str]) -> dict[str, int]:
    """Rows per label in ``labels`` order, plus ``(no label)`` when some answers are none of them."""
    counts = Counter(row_labels)
    out = {label: counts.get(label, 0) for label in labels}
    if counts.get(None):
        out["(no label)"] = counts[None]
    return out
