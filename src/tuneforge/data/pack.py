"""Sequence packing and batch collation.

Packing puts several tokenized examples in one row so no compute is spent on
padding. Examples in a row must not attend to each other: each example's
``position_ids`` restart at 0 and the batch carries no ``attention_mask``,
from which transformers (``masking_utils.find_packed_sequence_indices``)
builds a block-diagonal causal mask. The first token of every example gets
label -100 so no example is trained to predict across a boundary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.data.template import IGNORE_INDEX


def pack_examples(examples: list[dict], max_length: int, *, seed: int = 0) -> list[list[dict]]:
    """Group tokenized examples into rows of at most ``max_length`` tokens (first fit, seeded order).

    First fit over a seeded shuffle keeps rows random (unlike sorting by length)
    while wasting little space. Examples longer than ``max_length`` must have
    been dropped or truncated before.

    Args:
        examples: ``{"input_ids", "labels"}`` dicts.
        max_length: Token capacity of a row.
        seed: Order of the shuffle.

    Returns:
        Rows, each a list of examples whose lengths sum to at most ``max_length``.

    Raises:
        ValueError: an example is longer than ``max_length``.
    """
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    rows: list[list[dict]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i]["input_ids"])
        if n > max_length:
            raise ValueError(f"example of {n} tokens does not fit a packed row of {max_length}")
        for r, space in enumerate(free):
            if n <= space:
                rows[r].append(examples[i])
                free[r] -= n
                break
        else:
            rows.append([examples[i]])
            free.append(max_length - n)
    return rows


@dataclass
class Collator:
    """Turn rows (packed: lists of examples; unpacked: single examples) into a padded batch.

    Packed batches carry ``position_ids`` and no ``attention_mask``; unpacked
    batches carry an ``attention_mask``. Every batch carries ``num_tokens``
    (real, non-pad tokens), which the trainer pops to measure throughput.
    """

    pad_token_id: int
    packed: bool = True
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[Any]) -> dict[str, torch.Tensor]:
        seqs = [self._row(r) for r in rows]
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
        if self.packed:
            out["position_ids"] = torch.tensor(batch_pos, dtype=torch.long)
        else:
            out["attention_mask"] = torch.tensor(batch_mask, dtype=torch.long)
        return out

    def _row(self, row: Any) -> tuple[list[int], list[int], list[int]]:
        examples = row if isinstance(row, list) else [row]
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
