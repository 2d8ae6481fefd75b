"""Turning one batched ``generate`` into per-request text: stop strings, limits, streaming deltas.

:class:`BatchTracker` is a ``transformers`` stopping criterion. ``generate``
calls it after every decoding step with the whole batch, and it answers per
row, so each request keeps its own ``max_tokens``, stop strings and eos while
sharing one forward pass with the others; a row that is done is padded by
``generate`` and ignored here. It also streams each row's new text as it
appears. We do not use ``TextIteratorStreamer`` because it only handles a
batch of one: streaming it would mean giving up batching for streamed requests.
The continuous batcher (:mod:`tuneforge.serve.continuous`) feeds the same
tracker one step at a time through :meth:`BatchTracker.advance`.

Text is detokenized incrementally (:func:`decode_increment`), as TGI and vLLM do:
each step decodes only a short window of the row's last tokens, not the whole row.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers import StoppingCriteria

# What a byte-level tokenizer yields for a UTF-8 character cut in half; it is completed by a later token.
_PARTIAL_CHAR = "\ufffd"


def find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Return where the earliest stop string starts in ``text``, or ``None``.

    Example:
        >>> find_stop("hello world", ("wor", "lo"))
        3
    """
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def streamable_prefix(text: str, stops: tuple[str, ...]) -> str:
    """The part of unfinished ``text`` that can be sent now.

    Holds back a trailing half character and any suffix that could still grow into a
    stop string, so a streamed answer never shows text that the stop would cut.

    Example:
        >>> streamable_prefix("the answer is\\n", ("\\n\\n",))
        'the answer is'
    """
    text = text.rstrip(_PARTIAL_CHAR)
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return text[: len(text) - hold]


def decode_increment(
    tokenizer: Any, tokens: list[int], prefix_offset: int, read_offset: int, *, final: bool = False
) -> tuple[str, int, int]:
    """New text that ``tokens[read_offset:]`` adds, decoding only ``tokens[prefix_offset:]``.

    Decoding a token on its own loses what depends on its neighbours (the leading space
    a SentencePiece word carries, a UTF-8 character split over several byte tokens), so
    the window starts a few tokens back at ``prefix_offset`` and the text of the already
    read part is subtracted. Text ending in a half character is held back (nothing
    returned, offsets unchanged) until a later token completes it, unless ``final``
    (the row has ended: the half character is all it will ever be).

    Returns:
        ``(new_text, prefix_offset, read_offset)`` with the offsets to pass next time.

    Example:
        >>> from tuneforge.models import load_tokenizer  # doctest: +SKIP
        >>> decode_increment(tok, tok.encode("héllo"), 0, 0)  # doctest: +SKIP
        ('héllo', 0, 3)
    """
    prefix = tokenizer.decode(tokens[prefix_offset:read_offset], skip_special_tokens=True)
    full = tokenizer.decode(tokens[prefix_offset:], skip_special_tokens=True)
    if final or (len(full) > len(prefix) and not full.endswith(_PARTIAL_CHAR)):
        return full[len(prefix):], read_offset, len(tokens)
    return "", prefix_offset, read_offset


class RowSink(Protocol):
    """Where a row's output goes: the request handle (see :mod:`tuneforge.serve.batcher`)."""

    def emit(self, event: Any) -> None: ...

    def is_cancelled(self) -> bool: ...

    def mark_first_token(self, at: float) -> None: ...


@dataclass(frozen=True)
class Delta:
    """New text of choice ``index``."""

    index: int
    text: str


@dataclass(frozen=True)
class Finished:
    """Choice ``index`` is complete; ``text`` is its whole output (stop string and eos excluded)."""

    index: int
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    completion_tokens: int


@dataclass
class Row:
    """One sequence of a batch: a prompt of one request, for one of its ``n`` choices."""

    sink: RowSink
    index: int
    prompt_ids: list[int]
    max_tokens: int
    stops: tuple[str, ...] = ()
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: str = ""
    finish_reason: str | None = None
    # Incremental detokenization state (see decode_increment).
    prefix_offset: int = 0
    read_offset: int = 0

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class BatchTracker(StoppingCriteria):
    """Stops each row of a batched ``generate`` on its own eos, stop string or ``max_tokens``.

    Args:
        rows: The rows of the batch, in batch order.
        tokenizer: Decodes each row's tokens.
        eos_ids: Token ids that end a turn (``<|im_end|>``...).
        lock: Serialises tokenizer use with the event loop's encoding.
    """

    def __init__(self, rows: list[Row], tokenizer: Any, eos_ids: set[int], lock: threading.Lock):
        self.rows = rows
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.lock = lock
        self.cancelled_rows = 0

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        now = time.perf_counter()
        for row, token in zip(self.rows, input_ids[:, -1].tolist()):
            if not row.done:
                self.advance(row, token, now)
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)

    def advance(self, row: Row, token: int, now: float) -> bool:
        """Take ``row``'s next token: stream its new text, or finish it. Returns whether it is done."""
        if row.sink.is_cancelled():
            self.cancelled_rows += 1
            self._finish(row, "cancelled")
            return True
        row.sink.mark_first_token(now)
        self._step(row, token)
        return row.done

    def _step(self, row: Row, token: int) -> None:
        row.tokens.append(token)
        if token in self.eos_ids:
            self._flush(row)  # a half character held back before the eos
            return self._finish(row, "stop")
        last = len(row.tokens) >= row.max_tokens
        with self.lock:
            new, row.prefix_offset, row.read_offset = decode_increment(
                self.tokenizer, row.tokens, row.prefix_offset, row.read_offset, final=last
            )
        # A stop string can straddle the old text and the new: search from where it could start.
        start = max(0, len(row.text) - max((len(s) for s in row.stops), default=0))
        row.text += new
        if new and self._cut_at_stop(row, start):
            return self._finish(row, "stop")
        if last:
            return self._finish(row, "length")
        self._send(row, streamable_prefix(row.text, row.stops))

    @staticmethod
    def _cut_at_stop(row: Row, start: int) -> bool:
        cut = find_stop(row.text[start:], row.stops)
        if cut is None:
            return False
        row.text = row.text[: start + cut]
        return True

    def _flush(self, row: Row) -> None:
        with self.lock:
            new, row.prefix_offset, row.read_offset = decode_increment(
                self.tokenizer, row.tokens, row.prefix_offset, row.read_offset, final=True
            )
        row.text += new

    def _send(self, row: Row, visible: str) -> None:
        # A later token can rewrite earlier characters (rare tokenizer clean-ups); wait for the end then.
        if len(visible) > len(row.sent) and visible.startswith(row.sent):
            row.sink.emit(Delta(row.index, visible[len(row.sent):]))
            row.sent = visible

    def _finish(self, row: Row, reason: str) -> None:
        row.finish_reason = reason
        if reason != "cancelled":
            self._send(row, row.text)
        row.sink.emit(Finished(row.index, row.text, reason, len(row.tokens)))

    def finish(self) -> None:
        """Close rows still open when ``generate`` returned (it hit the batch's length limit)."""
        for row in self.rows:
            if not row.done:
                self._flush(row)
                self._finish(row, "length")
