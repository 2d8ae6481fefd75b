"""Sequence packing and batch collation.

Packing puts several tokenized examples in one row so no compute is spent on
padding. Examples in a row must not attend to each other: each example's
``position_ids`` restart at 0 and the batch carries no ``attention_mask``,
from which transformers (``masking_utils.find_packed_sequence_indices``)
builds a block-diagonal causal mask. The first token of every example gets
label -100 so no example is trained to predict across a boundary.

Batches are sized either by rows (``per_device_batch_size``) or by a token
budget (:func:`token_batches`): packed rows make "8 rows" mean anything from
8 to 8 x max_length tokens, and activation memory grows with tokens, not rows.
"""

from __future__ import annotations

import bisect
import random
from array import array
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from tuneforge.data.store import lengths_of
from tuneforge.data.template import IGNORE_INDEX


class Row(Sequence):
    """A row of examples as indices into the training examples, resolved when the batch is collated.

    It reads like the list of examples it stands for (``len``, indexing, iteration, ``==``), but holds
    only the indices and the row's token count: the examples stay where they are (a list, or the
    memory-mapped :class:`~tuneforge.data.store.TokenRows`) until a batch needs them.
    """

    __slots__ = ("source", "indices", "length")

    def __init__(self, source: Sequence[dict], indices: Sequence[int], length: int):
        self.source, self.indices, self.length = source, indices, length

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self.source[i] for i in self.indices[k]]
        return self.source[self.indices[k]]

    def __iter__(self) -> Iterator[dict]:
        return (self.source[i] for i in self.indices)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row) and other.source is self.source:
            return list(self.indices) == list(other.indices)
        return isinstance(other, (Row, list)) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # compared by content, like the list it stands for

    def __repr__(self) -> str:
        return f"Row({list(self.indices)}, {self.length} tokens)"


def pack_examples(
    examples: Sequence[dict], max_length: int, *, seed: int = 0, longer_alone: bool = False
) -> list[Row]:
    """Group tokenized examples into rows of at most ``max_length`` tokens (best fit decreasing, seeded order).

    Best fit decreasing places the longest examples first, each into the row it
    leaves the least space in, which wastes less of a row than first fit over a
    random order (measured in the README) and runs in O(n log max_length): rows are
    kept in buckets by free space, with the distinct free sizes in a sorted list.
    The seed breaks ties between equal lengths and then shuffles the rows, so
    their order stays random (the token-budget batching and the sampler rely on
    that, not on packing, for variety). Only the examples' lengths are read
    (:func:`~tuneforge.data.store.lengths_of`): rows hold indices, not examples.

    Args:
        examples: ``{"input_ids", "labels"}`` dicts (a list or a :class:`~tuneforge.data.store.TokenRows`).
        max_length: Token capacity of a row.
        seed: Order of equal-length examples and of the rows.
        longer_alone: An example longer than ``max_length`` gets a row of its own (when rows are
            sized by a token budget shorter than ``training.max_seq_length``); off: it is an error.

    Returns:
        :class:`Row` s, each standing for the examples whose lengths sum to at most ``max_length`` (or one longer example).

    Raises:
        ValueError: an example is longer than ``max_length`` and ``longer_alone`` is off.
    """
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    lengths = [int(n) for n in lengths_of(examples)]
    order.sort(key=lambda i: -lengths[i])  # stable: equal lengths keep the seeded order
    rows: list[list[int]] = []
    by_free: dict[int, list[int]] = {}  # free space -> rows with exactly that much room
    sizes: list[int] = []  # the keys of by_free, ascending
    for i in order:
        n = lengths[i]
        if n > max_length:
            if not longer_alone:
                raise ValueError(f"example of {n} tokens does not fit a packed row of {max_length}")
            rows.append([i])
            continue
        k = bisect.bisect_left(sizes, n)
        if k < len(sizes):  # the fullest row that still has room
            space = sizes[k]
            r = by_free[space].pop()
            if not by_free[space]:
                del by_free[space], sizes[k]
            rows[r].append(i)
        else:
            space, r = max_length, len(rows)
            rows.append([i])
        left = space - n
        if left > 0:
            if left not in by_free:
                by_free[left] = []
                bisect.insort(sizes, left)
            by_free[left].append(r)
    rng.shuffle(rows)
    return [Row(examples, array("l", row), sum(lengths[i] for i in row)) for row in rows]


def single_rows(examples: Sequence[dict]) -> list[Row]:
    """One :class:`Row` per example (unpacked rows grouped by a token budget), so batches hold indices too."""
    return [Row(examples, array("l", (i,)), int(n)) for i, n in enumerate(lengths_of(examples))]


def padding_waste(rows: list[Any], max_length: int) -> float:
    """Share of a packed row's capacity left empty, over all rows (0 = every row full)."""
    used = sum(row_length(row) for row in rows)
    capacity = sum(max(max_length, row_length(row)) for row in rows)
    return 1 - used / capacity if capacity else 0.0


@dataclass(frozen=True)
class TokenBatch:
    """Rows that form one batch by themselves (the data loader then takes one ``TokenBatch`` at a time)."""

    rows: list[Any]


def row_length(row: Any) -> int:
    """Tokens in a row: a :class:`Row`, a list of examples or a single example."""
    if isinstance(row, Row):
        return row.length
    return sum(len(ex["input_ids"]) for ex in row_examples(row))


def row_examples(row: Any) -> Sequence[dict]:
    """The examples of a row: a :class:`Row` or list of examples, or a single example."""
    return row if isinstance(row, (Row, list)) else [row]


def token_batches(rows: list[Any], budget: int) -> list[TokenBatch]:
    """Group rows into batches whose padded size (rows x longest row) is at most ``budget`` tokens.

    Rows are taken shortest first so each batch holds rows of similar length
    (little padding); the trainer's sampler shuffles the order of the batches.
    A row longer than the budget forms a batch of its own.

    Args:
        rows: Packed rows (lists of examples) or single examples.
        budget: Token budget per batch, padding included.

    Returns:
        Batches covering every row exactly once.

    Example:
        >>> [len(b.rows) for b in token_batches([{"input_ids": [1] * 3}] * 5, budget=8)]
        [2, 2, 1]
    """
    batches: list[TokenBatch] = []
    current: list[Any] = []
    for row in sorted(rows, key=row_length):  # stable: equal lengths keep their (seeded) order
        longest = row_length(row)  # ascending order: the newest row is the longest
        if current and (len(current) + 1) * longest > budget:
            batches.append(TokenBatch(current))
            current = []
        current.append(row)
    if current:
        batches.append(TokenBatch(current))
    return batches


@dataclass
class Collator:
    """Turn rows (packed: lists of examples; unpacked: single examples) into a padded batch.

    Packed batches carry ``position_ids`` and no ``attention_mask``; unpacked
    batches carry an ``attention_mask``. Every batch carries ``num_tokens``
    (real, non-pad tokens), which the trainer pops to measure throughput.
    Examples with a ``weight`` (``data.balance: loss_weights``) add ``loss_weights``,
    one per token, which the trainer pops to weigh each token's loss.
    A :class:`TokenBatch` item (loader batch size 1) contributes its rows.
    """

    pad_token_id: int
    packed: bool = True
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[Any]) -> dict[str, torch.Tensor]:
        # Each row's examples are read once (from a memory-mapped file they are materialised here).
        rows = [list(row_examples(r)) for item in rows for r in (item.rows if isinstance(item, TokenBatch) else [item])]
        seqs = [self._row(r) for r in rows]
        weighted = any("weight" in ex for r in rows for ex in r)
        longest = max(len(ids) for ids, _, _ in seqs)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch_ids, batch_labels, batch_pos, batch_mask = [], [], [], []
        for ids, labels, pos in seqs:
            pad = longest - len(ids)
            batch_ids.append(ids + [self.pad_token_id] * pad)
            batch_labels.append(labels + [IGNORE_INDEX] * pad)
            # Padding forms its own segment (positions restart), so real tokens never attend to it.
            batch_pos.append(pos + list(range(pad)))
            batch_mask.append([1] * len(ids) + [0] * pad)
        out = {
            "input_ids": torch.tensor(batch_ids, dtype=torch.long),
            "labels": torch.tensor(batch_labels, dtype=torch.long),
            "num_tokens": torch.tensor(sum(len(ids) for ids, _, _ in seqs), dtype=torch.long),
        }
        if weighted:
            out["loss_weights"] = torch.tensor([self._weights(r, longest) for r in rows], dtype=torch.float32)
        if self.packed:
            out["position_ids"] = torch.tensor(batch_pos, dtype=torch.long)
        else:
            out["attention_mask"] = torch.tensor(batch_mask, dtype=torch.long)
        return out

    @staticmethod
    def _weights(examples: list[dict], longest: int) -> list[float]:
        weights = [float(ex.get("weight", 1.0)) for ex in examples for _ in ex["input_ids"]]
        return weights + [0.0] * (longest - len(weights))

    def _row(self, examples: list[dict]) -> tuple[list[int], list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        for ex in examples:
            ex_labels = list(ex["labels"])
            ex_labels[0] = IGNORE_INDEX  # never predict an example's first token from the previous example
            ids += list(ex["input_ids"])
            labels += ex_labels
            pos += list(range(len(ex["input_ids"])))
        return ids, labels, pos


def training_rows(
    examples: Sequence[dict], *, packed: bool, max_length: int, token_budget: int | None, pack_length: int | None = None,
    seed: int = 0,
) -> list[Any]:
    """What the trainer's data loader iterates over: rows (``per_device_batch_size`` at a time), or
    :class:`TokenBatch` es (one at a time) when batches are sized by a token budget.

    With a budget, packed rows are at most ``pack_length`` tokens (not ``max_length``) and a batch
    holds as many rows as fit the budget; an example longer than a row gets a row of its own, and one
    longer than the budget a batch of its own.

    Args:
        examples: Tokenized examples (a list or a :class:`~tuneforge.data.store.TokenRows`).
        packed: Pack several examples per row.
        max_length: Row length when sized by rows (``training.max_seq_length``).
        token_budget: Tokens per batch (``training.token_budget``), or None to size by rows.
        pack_length: Row length when sized by tokens (``training.pack_length``); default: the budget.
        seed: Packing order.
    """
    if token_budget is None:
        return pack_examples(examples, max_length, seed=seed) if packed else examples
    row = min(pack_length or token_budget, token_budget)
    rows = pack_examples(examples, row, seed=seed, longer_alone=True) if packed else single_rows(examples)
    return token_batches(rows, token_budget)
