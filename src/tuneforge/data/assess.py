"""The per-row work of data preparation, as a pure function that worker processes can run.

:func:`assess` cleans, keys and tokenizes one canonical example and returns an
:class:`Assessed` value; it reads no state shared between rows. What does depend
on the other rows (the set of seen keys, the report) stays in the caller,
:func:`tuneforge.data.prepare.prepare`, which takes the values in the order the
rows were read, so the result is the same whether they were assessed in this
process or in several.

Tokenizing dominates preparation (profile of 20k rows in the README: the chat
template renders and the tokenizer take ~77%, cleaning ~11%), and every row is
independent, so :func:`assess_all` spreads chunks of rows over ``num_proc``
processes and yields the values back in order.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from array import array
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Iterable, Iterator

from tuneforge.config.schema import CleanConfig
from tuneforge.data.clean import Dropped, check_length, clean_example, dedupe_key, texts
from tuneforge.data.store import targets as loss_targets
from tuneforge.data.template import Encoded, encode_example
from tuneforge.errors import DataError

CHUNK_ROWS = 512
"""Rows sent to a worker at a time: large enough that pickling is cheap per row, small enough to keep memory flat."""
PARALLEL_MIN_ROWS = 4096
"""Below this many rows, starting processes costs more than it saves (unless ``data.num_proc`` asks for them)."""


def choose_num_proc(requested: int | None, rows: int) -> int:
    """``data.num_proc`` if set; else this process's share of the CPU cores (at most 8), or 1 for a small source."""
    if requested is not None:
        return requested
    if rows < PARALLEL_MIN_ROWS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # each DDP rank on this machine prepares too
    return max(1, min(8, cores // max(1, ranks)))


@dataclass(frozen=True)
class Assessed:
    """What one row turned into, before deduplication.

    Exactly one of ``dropped`` (left out before deduplication: too long in characters, or
    empty after cleaning) and ``example_json`` is set. ``encoded`` holds the tokens, or the
    ``Dropped`` reason tokenizing gave, or the :class:`DataError` the chat template raised
    (raised by the caller only if the row is not a duplicate, as the sequential path did).

    The example travels as its JSON text (as the spool stores it) and the label counts come
    counted: the worker does that work, not the one process that gathers every row (issue #9).
    """

    where: str
    dropped: Dropped | None = None
    example_json: str | None = None
    key: str | None = None
    exact_key: str = ""
    encoded: Encoded | Dropped | DataError | None = None
    redactions: dict[str, int] = field(default_factory=dict)
    answer_tokens: int = 0
    """Labelled tokens of ``encoded`` (0 unless it is an :class:`Encoded`)."""
    targets: int = 0
    """Of those, the ones the loss is computed on: all but a labelled first token (:func:`tuneforge.data.store.targets`)."""

    @property
    def example(self) -> dict | None:
        """The cleaned canonical example (parsed from ``example_json``)."""
        return None if self.example_json is None else json.loads(self.example_json)


@dataclass(frozen=True)
class Work:
    """Everything :func:`assess` needs besides the row (sent to each worker once)."""

    clean: CleanConfig
    tokenizer: Any
    max_seq_length: int


def assess(example: dict, where: str, work: Work) -> Assessed:
    """Clean, key and tokenize one canonical example (pure: the same row always gives the same value)."""
    oversized = check_length(example, work.max_seq_length)
    if oversized is not None:  # before cleaning: its regexes would crawl over a huge row too
        return Assessed(where, dropped=oversized)
    cleaned = clean_example(example, work.clean)
    if isinstance(cleaned, Dropped):
        return Assessed(where, dropped=Dropped(cleaned.reason, snippet(example)))
    example = cleaned.example
    try:
        encoded: Encoded | Dropped | DataError = encode_example(
            example, work.tokenizer, max_seq_length=work.max_seq_length, too_long=work.clean.too_long
        )
    except DataError as exc:
        encoded = exc
    answer = targets = 0
    if isinstance(encoded, Encoded):
        answer, targets = encoded.answer_tokens, loss_targets({"labels": encoded.labels})
        # 4 bytes a token instead of a list's 8-byte pointer + 28-byte int: the kept rows wait in
        # memory until the split, and cross from the workers as one buffer each.
        encoded = Encoded(array("i", encoded.input_ids), array("i", encoded.labels), encoded.truncated)
    return Assessed(
        where, example_json=json.dumps(example, ensure_ascii=False), key=dedupe_key(example, work.clean.dedupe),
        exact_key=dedupe_key(example, "exact"), encoded=encoded, redactions=cleaned.redactions,
        answer_tokens=answer, targets=targets,
    )


def snippet(example: dict) -> str:
    """An example's texts on one line, as the report shows a dropped row."""
    return " / ".join(texts(example))


def assess_all(rows: Iterable[tuple[dict, str]], work: Work, *, num_proc: int) -> Iterator[Assessed]:
    """Assess ``(example, where)`` rows and yield the values in the same order.

    Args:
        rows: Examples with their ``file:line``.
        work: The cleaning config, tokenizer and length limit.
        num_proc: Worker processes (:func:`choose_num_proc`); 1 assesses in this process.
    """
    if num_proc <= 1:
        for example, where in rows:
            yield assess(example, where, work)
        return
    # fork: the workers inherit the tokenizer instead of unpickling it, and start in milliseconds.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(num_proc, mp_context=context, initializer=_start_worker, initargs=(work,)) as pool:
        # At most 2 chunks per worker in flight: the reader never runs far ahead of the workers.
        chunks = _chunks(rows, CHUNK_ROWS)
        pending = [pool.submit(_assess_chunk, chunk) for chunk in islice(chunks, 2 * num_proc)]
        while pending:
            done = pending.pop(0).result()
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(pool.submit(_assess_chunk, nxt))
            yield from done


def _chunks(rows: Iterable[tuple[dict, str]], size: int) -> Iterator[list[tuple[dict, str]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


# The one piece of per-process state: each worker's Work, set once when the worker starts
# (initializer) so the tokenizer is not sent again with every chunk.
_worker: dict[str, Work] = {}


def _start_worker(work: Work) -> None:
    _worker["work"] = work


def _assess_chunk(chunk: list[tuple[dict, str]]) -> list[Assessed]:
    work = _worker["work"]
    return [assess(example, where, work) for example, where in chunk]
