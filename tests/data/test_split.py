"""Deterministic splits, weights and mixing."""

from __future__ import annotations

import random

import pytest

from tuneforge.data.split import apply_weight, holdout_size, mix, split_indices
from tuneforge.errors import DataError

KEYS = [f"row-{i}" for i in range(100)]


def _held_keys(keys, **kw):
    parts = split_indices(keys, **kw)
    return {keys[i] for i in parts.validation}, {keys[i] for i in parts.test}


def test_split_sizes_partition_and_order():
    parts = split_indices(KEYS, validation=0.1, test=0.2, seed=1)
    assert (len(parts.train), len(parts.validation), len(parts.test)) == (70, 10, 20)
    assert sorted(parts.train + parts.validation + parts.test) == list(range(100))
    assert parts.train == sorted(parts.train) and parts.test == sorted(parts.test)


def test_same_seed_same_split_any_row_order():
    first = _held_keys(KEYS, validation=0.1, test=0.1, seed=7)
    assert _held_keys(KEYS, validation=0.1, test=0.1, seed=7) == first
    shuffled = KEYS[:]
    random.Random(0).shuffle(shuffled)
    assert _held_keys(shuffled, validation=0.1, test=0.1, seed=7) == first
    assert _held_keys(KEYS, validation=0.1, test=0.1, seed=8) != first


def test_adding_rows_keeps_most_held_out_rows():
    _, test_before = _held_keys(KEYS, validation=0, test=0.1, seed=3)
    _, test_after = _held_keys(KEYS + [f"new-{i}" for i in range(10)], validation=0, test=0.1, seed=3)
    assert len(test_before & test_after) >= 7


def test_holdout_size():
    assert holdout_size(100, 0.1) == 10
    assert holdout_size(5, 0.1) == 1  # a fraction above zero always holds out a row
    assert holdout_size(5, 0) == 0


def test_no_fraction_no_holdout_and_too_few_rows():
    parts = split_indices(KEYS[:3], validation=0, test=0, seed=0)
    assert parts.train == [0, 1, 2] and parts.validation == [] and parts.test == []
    with pytest.raises(DataError, match="only 2 usable training rows: too few to hold out 1 for validation and 1 for test"):
        split_indices(KEYS[:2], validation=0.1, test=0.1, seed=0)


@pytest.mark.parametrize(("weight", "size"), [(1.0, 10), (2.0, 20), (0.5, 5), (1.5, 15), (0.05, 0)])
def test_apply_weight(weight, size):
    rows = list(range(10))
    out = apply_weight(rows, weight, random.Random(0))
    assert len(out) == size
    assert set(out) <= set(rows)
    if weight >= 1:
        assert set(out) == set(rows)


def test_half_weight_is_seeded_and_distinct():
    rows = list(range(100))
    a = apply_weight(rows, 0.5, random.Random(4))
    assert a == apply_weight(rows, 0.5, random.Random(4))
    assert len(set(a)) == 50
    assert a != apply_weight(rows, 0.5, random.Random(5))


def test_mix_is_deterministic_and_shuffled():
    groups = [([f"a{i}" for i in range(10)], 1.0), ([f"b{i}" for i in range(10)], 0.5)]
    mixed = mix(groups, seed=1)
    assert mixed == mix(groups, seed=1) and mixed != mix(groups, seed=2)
    assert len(mixed) == 15 and sum(x.startswith("b") for x in mixed) == 5
    assert mixed[:10] != groups[0][0]
