"""Where data preparation keeps the rows it has read while it decides the splits.

:func:`tuneforge.data.prepare.prepare` must see every row before it can split, mix and cap them,
so it used to hold every canonical example (~1.7 KB as Python dicts) and its tokens until the end.
A :class:`Spool` takes each kept row as it is read and hands back its index; preparation then
works with indices, keys and counts only, and the chosen rows are read back from the spool at the
end: into a memory-mapped split file (:func:`tuneforge.data.store.write_split`) or into lists.

On disk (the default) the rows go to an Arrow IPC file in a private temporary folder, a batch at
a time, and the file is memory-mapped once every source is read. A run that encrypts its files
spools in memory instead (``folder=None``): a plaintext spool file would break the encryption
promise, so those runs hold every row as before.
"""

from __future__ import annotations

import json
import mmap
from array import array
from pathlib import Path
from typing import Any, Sequence

from tuneforge.data.store import WRITE_BATCH_ROWS, SplitWriter, map_split
from tuneforge.data.template import Encoded


TAKE_ROWS = 8192
"""Rows copied from the spool at a time when a split is written (each copy visits every batch of the spool once)."""


class Spool:
    """Kept rows in the order they were read: ``add`` returns an index; read back by index once closed.

    Args:
        folder: A private folder for the spool file (removed by the caller when done);
            None: keep the rows in memory.
    """

    def __init__(self, folder: Path | None):
        self._path = folder / "spool.arrow" if folder is not None else None
        self._examples: list[Any] = []  # all of them in memory; on disk, those waiting for the next batch
        self._tokens: list[Encoded | None] = []
        self._targets: list[int | None] = []  # on disk: loss tokens counted by the workers, or None to count here
        self._written = 0
        self._writer: SplitWriter | None = None
        self._table: Any = None
        self._mapping: Any = None

    def add(self, example: dict | str, encoded: Encoded | None, *, targets: int | None = None) -> int:
        """Keep a row (``encoded`` None: a test row, whose tokens are not kept); returns its index.

        Args:
            example: The canonical example, or its JSON text (as a worker sends it, and as the file stores it).
            targets: Its loss tokens (:func:`tuneforge.data.store.targets`) when already counted.
        """
        if self._path is None:
            self._examples.append(json.loads(example) if isinstance(example, str) else example)
            self._tokens.append(encoded)
            return len(self._examples) - 1
        self._examples.append(example)
        self._tokens.append(encoded)
        self._targets.append(targets)
        if len(self._examples) >= WRITE_BATCH_ROWS:
            self._flush()
        return self._written + len(self._examples) - 1

    def _flush(self) -> None:
        if self._writer is None:
            self._writer = SplitWriter(self._path)
        self._writer.write(self._examples, [
            None if t is None else {"input_ids": t.input_ids, "labels": t.labels, **({"targets": n} if n is not None else {})}
            for t, n in zip(self._tokens, self._targets)])
        self._written += len(self._examples)
        self._examples, self._tokens, self._targets = [], [], []

    def close(self) -> None:
        """No more rows: the spool file is completed and memory-mapped (on disk)."""
        if self._path is None or self._table is not None:
            return
        self._flush()
        self._writer.close()
        import numpy as np

        self._table, self._mapping = map_split(self._path)
        self._batches = self._table.to_batches()
        self._starts = np.cumsum([0] + [b.num_rows for b in self._batches[:-1]])

    def example(self, at: int) -> dict:
        """The canonical example of row ``at``."""
        if self._path is None:
            return self._examples[at]
        return json.loads(self._table.column("example")[at].as_py())

    def examples(self, rows: Sequence[int]) -> list[dict]:
        """The canonical examples of ``rows``, in that order (fresh dicts when read from disk)."""
        if self._path is None:
            return [self._examples[at] for at in rows]
        return [json.loads(text) for text in self._take(rows).column("example").to_pylist()]

    def tokens(self, rows: Sequence[int], weights: Sequence[float] | None = None) -> list[dict]:
        """``{"input_ids", "labels"[, "weight"]}`` of ``rows`` as fresh lists, in that order."""
        if self._path is None:
            out = [{"input_ids": list(self._tokens[at].input_ids), "labels": list(self._tokens[at].labels)} for at in rows]
        else:
            table = self._take(rows)
            out = [{"input_ids": ids, "labels": labels} for ids, labels in
                   zip(table.column("input_ids").to_pylist(), table.column("labels").to_pylist())]
        if weights is not None:
            for row, weight in zip(out, weights):
                row["weight"] = weight
        return out

    def write(self, path: Path, rows: Sequence[int], weights: Sequence[float] | None = None) -> None:
        """Write the split of ``rows`` (with their loss ``weights``) as a split file, a batch at a time (on disk only)."""
        import pyarrow as pa

        with SplitWriter(path, weighted=weights is not None) as writer:
            for start in range(0, max(len(rows), 1), TAKE_ROWS):
                table = self._take(rows[start:start + TAKE_ROWS])
                if weights is not None:
                    table = table.append_column("weight", pa.array(weights[start:start + TAKE_ROWS], pa.float64()))
                writer.write_table(table)

    def _take(self, rows: Sequence[int]) -> Any:
        """A copy of ``rows``; the pages of the spool it read are dropped from resident memory again.

        Rows in training order lie all over the spool: left resident, its pages would make
        memory grow with the spool's size after all (issue #9); dropped, at most one batch's stay.
        """
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        # Taken batch by batch: pyarrow's take on a whole (chunked) table first joins every chunk into
        # one array, a copy of the spool in memory. The system allocator hands the small copies back at
        # once (pyarrow's default pool keeps freed pages a while, which added ~1 KB a row while writing).
        pool = pa.system_memory_pool()
        wanted = np.asarray(rows, dtype=np.int64)
        batch_of = np.searchsorted(self._starts, wanted, side="right") - 1
        order = np.argsort(batch_of, kind="stable")
        pieces = []
        for b in np.unique(batch_of):
            pieces.append(pc.take(self._batches[b], pa.array(wanted[batch_of == b] - self._starts[b]), memory_pool=pool))
            # The kernel maps 64 KB around each page read (fault-around), so a few rows from every batch
            # would make the whole spool resident: drop each batch's pages before reading the next.
            self._mapping.madvise(mmap.MADV_DONTNEED)
        placed = np.empty_like(order)
        placed[order] = np.arange(len(order))  # where each wanted row sits among the pieces
        return pc.take(pa.Table.from_batches(pieces, schema=self._table.schema), pa.array(placed), memory_pool=pool)


def indices(rows: Sequence[Any]) -> array:
    """The spool indices of prepared rows (compact: 8 bytes each)."""
    return array("q", (row.at for row in rows))
