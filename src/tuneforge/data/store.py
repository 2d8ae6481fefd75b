"""Prepared splits in memory-mapped Arrow files, read one example at a time.

A Python list of ``{"input_ids": [...], "labels": [...]}`` dicts costs ~36 bytes per token id
(an 8-byte pointer + a 28-byte int object, twice per token), so the trainer's copy of a large
dataset grew without bound (bench/data_memory.py: 2.07 GB peak RSS at 200,000 rows). An Arrow
IPC file holds 4 bytes per id; memory-mapped, only the pages of the examples actually read
become resident, and the kernel can drop them again.

:class:`TokenRows` and :class:`ExampleRows` are read-only sequences over such a file: ``len``,
indexing (an ``int`` gives the same dict the list held, a slice a list of them) and iteration.
Packing reads only :attr:`TokenRows.lengths`; an example is materialised when a batch is collated.

One file per split holds the canonical example (JSON), its tokens and its count of target tokens:
:func:`tuneforge.data.prepare.prepare` writes them from its :class:`~tuneforge.data.spool.Spool`
into a private temporary folder that is removed as soon as they are mapped (POSIX keeps a mapped
file's pages until it is unmapped), and the prepared-data cache (:mod:`tuneforge.data.cache`)
stores copies of the same files. Splits under :data:`MEMORY_MAP_MIN_ROWS` rows, and every split of
a run that encrypts its files, stay Python lists.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from tuneforge.data.template import IGNORE_INDEX

WRITE_BATCH_ROWS = 8192
RELEASE_EVERY = 4096
"""Examples read from a :class:`TokenRows` between two releases of its resident pages."""
MEMORY_MAP_MIN_ROWS = 1024
"""Splits with fewer rows stay Python lists: they cost little, and the lists are what callers expect to print or edit."""


def _schema(*, tokens: bool, weighted: bool) -> Any:
    import pyarrow as pa

    fields = [pa.field("example", pa.large_string())]
    if tokens:
        fields += [pa.field("input_ids", pa.list_(pa.int32())), pa.field("labels", pa.list_(pa.int32())),
                   pa.field("targets", pa.int32())]
    if weighted:  # data.balance: loss_weights gives each row a weight
        fields.append(pa.field("weight", pa.float64()))
    return pa.schema(fields)


class SplitWriter:
    """Writes a split file (created 0600, never overwritten) a batch at a time; use it as a context manager.

    Args:
        path: The file to create.
        tokens: Store token columns (not for the test split, which keeps only its examples).
        weighted: Store a loss weight per row.
    """

    def __init__(self, path: Path, *, tokens: bool = True, weighted: bool = False):
        import pyarrow as pa

        self.schema = _schema(tokens=tokens, weighted=weighted)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._writer = pa.ipc.new_file(self._file, self.schema)

    def write(self, examples: Sequence[Any], tokens: Sequence[dict] | None = None) -> None:
        """One batch of rows: examples (dicts, or their JSON text) and their token dicts
        (lists or ``array("i")``; ``"targets"`` counted here unless given; ``"weight"`` when weighted)."""
        import pyarrow as pa

        columns: list[Any] = [[e if isinstance(e, str) else json.dumps(e, ensure_ascii=False) for e in examples]]
        names = self.schema.names
        if "input_ids" in names:
            rows = tokens if tokens is not None else [None] * len(examples)
            columns += [[None if t is None else t["input_ids"] for t in rows], [None if t is None else t["labels"] for t in rows],
                        [None if t is None else t["targets"] if "targets" in t else targets(t) for t in rows]]
        if "weight" in names:
            columns.append([t["weight"] for t in tokens])
        self._writer.write_batch(pa.record_batch(columns, schema=self.schema))

    def write_table(self, table: Any) -> None:
        """Rows already in Arrow columns named as this file's."""
        for batch in table.select(self.schema.names).cast(self.schema).to_batches():
            self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()
        self._file.close()

    def __enter__(self) -> "SplitWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_split(path: Path, examples: Sequence[Any], tokens: Sequence[dict] | None, *,
                batch_rows: int = WRITE_BATCH_ROWS) -> None:
    """Write one split as an Arrow IPC file (0600, created, never overwritten), a batch at a time.

    Args:
        examples: The canonical examples (stored as JSON text).
        tokens: Their ``{"input_ids", "labels"[, "weight"]}`` dicts, same order (lists or ``array("i")``); None: examples only.
        batch_rows: Rows per record batch: writing holds one batch of converted rows at a time.
    """
    weighted = bool(tokens) and "weight" in tokens[0]
    with SplitWriter(path, tokens=tokens is not None, weighted=weighted) as writer:
        for start in range(0, max(len(examples), 1), batch_rows):
            end = start + batch_rows
            writer.write(examples[start:end], None if tokens is None else tokens[start:end])


def targets(row: dict) -> int:
    """Tokens of an example the loss is computed on: labelled, less the first (see :class:`~tuneforge.data.pack.Collator`).

    Stored beside the tokens so that planning a run (the memory estimate) does not read every label.
    """
    labels = row["labels"]
    if not hasattr(labels, "count"):  # a numpy array; lists and array("i") count in C
        labels = list(labels)
    if not labels:
        return 0
    return len(labels) - labels.count(IGNORE_INDEX) - int(labels[0] != IGNORE_INDEX)


def open_split(path: Path) -> Any:
    """The ``pyarrow.Table`` of a split file, memory-mapped (nothing is read until used)."""
    return map_split(path)[0]


def map_split(path: Path) -> tuple[Any, mmap.mmap]:
    """``(table, mapping)``: the table of a split file read through a mapping its caller can release.

    Pages of a mapped file that were read count in the process's resident memory until the kernel
    needs them back; ``mapping.madvise(mmap.MADV_DONTNEED)`` drops them at once (the table stays
    valid: they are read again from the page cache or the file when next used).
    """
    import pyarrow as pa

    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mapping))).read_all(), mapping


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

    Args:
        table: The split's table (:func:`open_split`).
        mapping: The file mapping behind it (:func:`map_split`), whose pages are released every
            :data:`RELEASE_EVERY` examples read; None: left to the kernel.

    Attributes:
        lengths: Tokens per example (a numpy int32 array read from the list offsets, not the tokens).
        targets: Tokens per example the loss is computed on (:func:`targets`, stored when written).
    """

    def __init__(self, table: Any, mapping: mmap.mmap | None = None):
        import pyarrow.compute as pc

        self.table, self._mapping, self._reads = table, mapping, 0
        self._ids = table.column("input_ids")
        self._labels = table.column("labels")
        self._weights = table.column("weight") if "weight" in table.column_names else None
        self.lengths = pc.list_value_length(self._ids).to_numpy()
        self.targets = table.column("targets").to_numpy()
        self.size = len(self.lengths)

    def __getstate__(self) -> dict:
        # A DataLoader worker started by spawn (macOS, Windows) receives the dataset pickled: pyarrow sends the
        # table's data by value, and the file mapping, which cannot cross processes, stays behind (the worker
        # then holds its copy in memory). Workers started by fork (Linux) share the mapping and pickle nothing.
        return {**self.__dict__, "_mapping": None}

    def _read(self, index: int) -> dict:
        self._reads += 1
        if self._mapping is not None and self._reads % RELEASE_EVERY == 0:
            # An epoch reads every example once: without this, the file's pages would pile up in resident
            # memory (the kernel drops them only under pressure) and RSS would grow with the data again.
            self._mapping.madvise(mmap.MADV_DONTNEED)
        row = {"input_ids": self._ids[index].values.to_pylist(), "labels": self._labels[index].values.to_pylist()}
        if self._weights is not None:
            row["weight"] = self._weights[index].as_py()
        return row


class ExampleRows(_MappedRows):
    """The canonical examples of a split file, each parsed from its JSON when read."""

    def __init__(self, table: Any):
        self.table = table
        self._text = table.column("example")
        self.size = len(self._text)

    def _read(self, index: int) -> dict:
        return json.loads(self._text[index].as_py())


def lengths_of(examples: Sequence[dict]) -> Sequence[int]:
    """Tokens per example: read from the offsets of a :class:`TokenRows`, counted in a list."""
    lengths = getattr(examples, "lengths", None)
    return lengths if lengths is not None else [len(ex["input_ids"]) for ex in examples]
