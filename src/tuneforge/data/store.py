"""Prepared splits in memory-mapped Arrow files, read one example at a time.

A Python list of ``{"input_ids": [...], "labels": [...]}`` dicts costs ~36 bytes per token id
(an 8-byte pointer + a 28-byte int object, twice per token), so the trainer's copy of a large
dataset grew without bound (bench/data_memory.py: 2.07 GB peak RSS at 200,000 rows). An Arrow
IPC file holds 4 bytes per id; memory-mapped, only the pages of the examples actually read
become resident, and the kernel can drop them again.

:class:`TokenRows` and :class:`ExampleRows` are read-only sequences over such a file: ``len``,
indexing (an ``int`` gives the same dict the list held, a slice a list of them) and iteration.
Packing reads only :attr:`TokenRows.lengths`; an example is materialised when a batch is collated.

One file per split holds the canonical example (JSON) and its tokens: the prepared-data cache
(:mod:`tuneforge.data.cache`) stores exactly these files, and a run without the cache writes them
to a private temporary folder that is removed as soon as they are mapped (POSIX keeps a mapped
file's pages until it is unmapped).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from tuneforge.data.template import IGNORE_INDEX

WRITE_BATCH_ROWS = 8192
MEMORY_MAP_MIN_ROWS = 1024
"""Splits with fewer rows stay Python lists: they cost little, and the lists are what callers expect to print or edit."""


def write_split(path: Path, examples: Sequence[dict], tokens: Sequence[dict] | None, *,
                batch_rows: int = WRITE_BATCH_ROWS) -> None:
    """Write one split as an Arrow IPC file (0600, created, never overwritten), a batch at a time.

    Args:
        examples: The canonical examples (stored as JSON text).
        tokens: Their ``{"input_ids", "labels"[, "weight"]}`` dicts, same order (lists or ``array("i")``); None: examples only.
        batch_rows: Rows per record batch: writing holds one batch of converted rows at a time.
    """
    import pyarrow as pa

    fields = [pa.field("example", pa.large_string())]
    weighted = bool(tokens) and "weight" in tokens[0]  # data.balance: loss_weights gives each row a weight
    if tokens is not None:
        fields += [pa.field("input_ids", pa.list_(pa.int32())), pa.field("labels", pa.list_(pa.int32())),
                   pa.field("targets", pa.int32())]
        if weighted:
            fields.append(pa.field("weight", pa.float64()))
    schema = pa.schema(fields)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f, pa.ipc.new_file(f, schema) as writer:
        for start in range(0, max(len(examples), 1), batch_rows):
            end = start + batch_rows
            columns = [[json.dumps(e, ensure_ascii=False) for e in examples[start:end]]]
            if tokens is not None:
                part = tokens[start:end]
                columns += [[t["input_ids"] for t in part], [t["labels"] for t in part], [targets(t) for t in part]]
                if weighted:
                    columns.append([t["weight"] for t in part])
            writer.write_batch(pa.record_batch(columns, schema=schema))


def targets(row: dict) -> int:
    """Tokens of an example the loss is computed on: labelled, less the first (see :class:`~tuneforge.data.pack.Collator`).

    Stored beside the tokens so that planning a run (the memory estimate) does not read every label.
    """
    import numpy as np

    return int(np.count_nonzero(np.asarray(row["labels"][1:], dtype=np.int64) != IGNORE_INDEX))


def open_split(path: Path) -> Any:
    """The ``pyarrow.Table`` of a split file, memory-mapped (nothing is read until used)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


class _MappedRows(Sequence):
    """A read-only sequence of ``size`` items, each read by ``_read(i)`` when asked for."""

    size = 0

    def _read(self, index: int) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._read(i) for i in range(*index.indices(self.size))]
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"example {index} of {self.size}")
        return self._read(index)

    def __iter__(self) -> Iterator[Any]:
        return (self._read(i) for i in range(self.size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size} examples, memory-mapped)"


class TokenRows(_MappedRows):
    """The tokenized examples of a split file: ``rows[i]`` is ``{"input_ids": [...], "labels": [...]}``
    (plus ``"weight"`` under ``data.balance: loss_weights``), as in the list it replaces.

    Attributes:
        lengths: Tokens per example (a numpy int32 array read from the list offsets, not the tokens).
        targets: Tokens per example the loss is computed on (:func:`targets`, stored when written).
    """

    def __init__(self, table: Any):
        import pyarrow.compute as pc

        self._ids = table.column("input_ids")
        self._labels = table.column("labels")
        self._weights = table.column("weight") if "weight" in table.column_names else None
        self.lengths = pc.list_value_length(self._ids).to_numpy()
        self.targets = table.column("targets").to_numpy()
        self.size = len(self.lengths)

    def _read(self, index: int) -> dict:
        row = {"input_ids": self._ids[index].values.to_pylist(), "labels": self._labels[index].values.to_pylist()}
        if self._weights is not None:
            row["weight"] = self._weights[index].as_py()
        return row


class ExampleRows(_MappedRows):
    """The canonical examples of a split file, each parsed from its JSON when read."""

    def __init__(self, table: Any):
        self._text = table.column("example")
        self.size = len(self._text)

    def _read(self, index: int) -> dict:
        return json.loads(self._text[index].as_py())


def lengths_of(examples: Sequence[dict]) -> Sequence[int]:
    """Tokens per example: read from the offsets of a :class:`TokenRows`, counted in a list."""
    lengths = getattr(examples, "lengths", None)
    return lengths if lengths is not None else [len(ex["input_ids"]) for ex in examples]


def as_lists(row: dict) -> dict:
    """A token dict with fresh lists (a row repeated by a mixing weight must not share mutable lists)."""
    return {k: list(v) if k in ("input_ids", "labels") else v for k, v in row.items()}


def map_splits(data: Any, folder: Path | None = None) -> Any:
    """Move the large training and validation splits of ``data`` (a ``PreparedData``) to memory-mapped files.

    Args:
        data: Prepared data whose ``train``/``validation`` may hold ``array("i")`` tokens.
        folder: The cache entry that already holds the split files; None: write them to a private
            temporary folder, removed once they are mapped.

    Returns:
        ``data``, its large splits now :class:`TokenRows`/:class:`ExampleRows`, the others lists of lists.
    """
    own = folder is None
    if own:
        folder = Path(tempfile.mkdtemp(prefix="tuneforge-tokens-"))  # 0700
    try:
        for part in ("train", "validation"):
            examples, tokens = getattr(data, f"{part}_examples"), getattr(data, part)
            if len(examples) < MEMORY_MAP_MIN_ROWS:
                setattr(data, part, [as_lists(t) for t in tokens])
                continue
            path = folder / f"{part}.arrow"
            if own:
                write_split(path, examples, tokens)
            table = open_split(path)
            setattr(data, part, TokenRows(table))
            setattr(data, f"{part}_examples", ExampleRows(table))
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    return data
