"""Deterministic splitting, mixing by weight and capping; pure functions of the data and a seed.

The split ranks rows by a seeded hash of their content, so the same data and
seed give the same split whatever the order of the rows. It runs after
deduplication, so no held-out row also appears in training.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Sequence, TypeVar

from tuneforge.errors import DataError

T = TypeVar("T")


@dataclass(frozen=True)
class Split:
    """Row indices of each part, each in the original order."""

    train: list[int]
    validation: list[int]
    test: list[int]


def holdout_size(n: int, fraction: float) -> int:
    """Rows held out for a fraction: at least one whenever the fraction is above zero."""
    return 0 if fraction <= 0 else max(1, round(n * fraction))


def split_indices(keys: Sequence[str], *, validation: float, test: float, seed: int) -> Split:
    """Carve validation and test rows out of ``len(keys)`` rows.

    Args:
        keys: A content key per row (e.g. :func:`~tuneforge.data.clean.dedupe_key`).
        validation: Fraction held out for validation (0 for none).
        test: Fraction held out for test (0 for none).
        seed: Changes which rows are held out.

    Raises:
        DataError: too few rows to keep at least one for training.

    Example:
        >>> split_indices(["a", "b", "c", "d"], validation=0.25, test=0.25, seed=0)
        Split(train=[...], validation=[...], test=[...])
    """
    n = len(keys)
    n_val, n_test = holdout_size(n, validation), holdout_size(n, test)
    if n - n_val - n_test < 1:
        raise DataError(
            f"only {n} usable training rows: too few to hold out {n_val} for validation and {n_test} for test "
            "and still train; add data, lower data.split.validation/test, or give data.validation/data.test files"
        )
    rank = sorted(range(n), key=lambda i: (hashlib.sha256(f"{seed}\0{keys[i]}".encode()).digest(), i))
    test_rows, val_rows = sorted(rank[:n_test]), sorted(rank[n_test : n_test + n_val])
    held = set(test_rows) | set(val_rows)
    return Split([i for i in range(n) if i not in held], val_rows, test_rows)


def apply_weight(rows: list[T], weight: float, rng: random.Random) -> list[T]:
    """Repeat rows by a mixing weight: 1.0 = each once, 2.0 = twice, 0.5 = a random half, 1.5 = once + a half.

    Example:
        >>> len(apply_weight(list(range(10)), 2.5, random.Random(0)))
        25
    """
    whole = math.floor(weight)
    extra = round((weight - whole) * len(rows))
    return rows * whole + rng.sample(rows, extra)


def mix(groups: list[tuple[list[T], float]], *, seed: int) -> list[T]:
    """Mix several sources' rows by weight and shuffle them together (seeded).

    Each source gets its own random stream, so changing one source's rows
    does not change which rows another source contributes.
    """
    mixed: list[T] = []
    for index, (rows, weight) in enumerate(groups):
        mixed += apply_weight(rows, weight, random.Random(f"{seed}:{index}"))
    random.Random(seed).shuffle(mixed)
    return mixed
