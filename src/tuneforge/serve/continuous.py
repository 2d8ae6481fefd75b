"""Continuous batching: a request that arrives while others generate joins them at the next step.

The static :class:`~tuneforge.serve.batcher.Batcher` hands a whole batch to one
``generate`` call, so a request arriving a moment later waits for the longest row
of that batch. Here the worker thread runs the decoding loop itself, one token
per step for every running row, and between two steps it admits waiting
requests: their prompts are prefilled on their own, and their KV caches are
merged into the running batch's ``DynamicCache`` with left padding (the attention
mask hides the padding; position ids count real tokens only, so a row's numbers
are what it would get alone). Finished rows are dropped from the cache at once.

Why not transformers' own continuous batching (``model.generate_batch`` /
``ContinuousBatchingManager``): it generates for one model with one active
adapter, while a served batch here may be any of several PEFT adapters over one
base; it has no per-request stop strings or streamed text deltas; and its paged
attention targets CUDA. The loop below is short and reuses the engine's
tracker (stops, limits, streaming) and sampling settings unchanged.

Rows in the running batch share a batch key (model, and sampling settings), as
in static batching: one forward pass runs one adapter, and a seeded request
still runs alone so its draws do not depend on its neighbours. A request with
another key waits until the running batch drains.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import DynamicLayer

from tuneforge.errors import ModelError
from tuneforge.serve.batcher import _STOP, Batcher, BatchingConfig, Failed, GenerationHandle, batch_key, take_batch
from tuneforge.serve.decode import BatchTracker, Row

log = logging.getLogger("tuneforge.serve")

# forward(model name, input_ids, attention_mask, position_ids, cache) -> (last-position logits [B, V], cache)
Forward = Callable[[str, torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache | None], tuple[torch.Tensor, DynamicCache]]


def plain_layers(cache: DynamicCache) -> bool:
    """Whether every layer of ``cache`` is a plain full-attention layer, which rows can be merged into and cut from.

    Sliding-window and quantized layers keep their own bookkeeping that concatenation would break.
    """
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    if not plain_layers(cache):  # checked at start from the config (engine.full_attention_problem); a cache can still differ
        raise ModelError("continuous batching needs a model with full attention in every layer; "
                         "serve it with --batching static")
    return cache.layers


def pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``tensor`` with zeros prepended along ``dim`` up to ``width``."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def merge_batches(
    cache: DynamicCache, mask: torch.Tensor, new_cache: DynamicCache, new_mask: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Append the rows of ``new_cache`` to ``cache`` (in place), left-padding the shorter one.

    Args:
        cache, mask: The running batch's KV cache and its ``[B, T]`` attention mask.
        new_cache, new_mask: The admitted rows', ``[b, t]``.

    Returns:
        The merged cache and its ``[B + b, max(T, t)]`` mask.
    """
    width = max(mask.shape[1], new_mask.shape[1])
    for layer, new in zip(_layers(cache), _layers(new_cache)):
        layer.keys = torch.cat([pad_left(layer.keys, width, -2), pad_left(new.keys, width, -2)])
        layer.values = torch.cat([pad_left(layer.values, width, -2), pad_left(new.values, width, -2)])
    return cache, torch.cat([pad_left(mask, width, 1), pad_left(new_mask, width, 1)])


def keep_rows(cache: DynamicCache, mask: torch.Tensor, keep: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Only rows ``keep`` (indices) of the batch, with columns that are padding in every kept row cut off."""
    mask = mask[keep]
    first = int(mask.any(0).nonzero()[0])  # a kept row always has a real token
    for layer in _layers(cache):
        layer.keys = layer.keys[keep, :, first:]
        layer.values = layer.values[keep, :, first:]
    return cache, mask[:, first:]


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, as ``generate`` computes them for left padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@dataclass
class _Running:
    """The batch being decoded: its rows, their KV cache and mask, and each row's last token."""

    key: tuple
    model: str
    rows: list[Row]
    cache: DynamicCache
    mask: torch.Tensor
    last: torch.Tensor  # [B] the token each row feeds next


class ContinuousBatcher(Batcher):
    """A :class:`Batcher` whose worker decodes step by step and admits requests between steps.

    Args:
        forward: Runs the model (with the adapter of the given served name) on a batch.
        make_tracker: A fresh :class:`BatchTracker` with no rows (stops, limits, streaming).
        config: ``max_batch_size`` caps the running rows; ``window_ms`` is how long the first
            request of an idle server waits for company before the first prefill.
        device: Where the tensors live.

    ``stats`` counts, besides the static batcher's ``batches`` (runs started from idle),
    ``rows`` and ``max_batch_rows``: ``joined_rows`` (rows admitted into a batch that was
    already generating) and ``steps`` (decoding steps).
    """

    def __init__(self, forward: Forward, make_tracker: Callable[[], BatchTracker], config: BatchingConfig, device: str):
        super().__init__(self._unused, config)
        self.forward = forward
        self.make_tracker = make_tracker
        self.device = device
        self.stats.update(joined_rows=0, steps=0)
        self.cancelled_rows = 0

    @staticmethod
    def _unused(handles: list[GenerationHandle]) -> None:  # pragma: no cover - the loop below replaces it
        raise NotImplementedError

    def _work(self) -> None:
        pending: list[GenerationHandle] = []
        running: _Running | None = None
        tracker = self.make_tracker()
        stopping = False
        while True:
            if not stopping:  # once stopping, nothing new is taken: the running rows finish, then the thread ends
                stopping = self._collect(pending, idle=running is None)
            if stopping:
                for handle in pending:
                    handle.emit(Failed(RuntimeError("the server is shutting down")))
                pending.clear()
            pending[:] = [h for h in pending if not h.is_cancelled()]
            if pending:
                running = self._guard(running, lambda: self._admit(running, pending, tracker))
            if running is not None:
                running = self._guard(running, lambda: self._step(running, tracker))
            self.cancelled_rows = tracker.cancelled_rows
            if running is None and stopping:
                return

    def _collect(self, pending: list[GenerationHandle], idle: bool) -> bool:
        """Move queued handles to ``pending``; when idle, wait for one and then ``window_ms`` for company.

        Returns whether the batcher was asked to stop.
        """
        if idle and not pending:
            item = self._queue.get()
            if item is _STOP:
                return True
            pending.append(item)
        deadline = pending[0].submitted_at + self.config.window_ms / 1000 if idle and pending else 0.0
        while True:
            timeout = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            pending.append(item)
            if idle and sum(h.rows for h in take_batch(pending, self.config.max_batch_size)) >= self.config.max_batch_size:
                deadline = 0.0  # full: no reason to wait longer, but still take what is queued

    def _guard(self, running: _Running | None, action: Callable[[], _Running | None]) -> _Running | None:
        try:
            return action()
        except Exception as exc:  # report to the waiting clients instead of killing the worker
            rows = running.rows if running is not None else []
            log.exception("generation failed for a batch of %d rows", len(rows))
            for sink in {id(r.sink): r.sink for r in rows}.values():
                sink.emit(Failed(exc))
            return None

    def _admit(self, running: _Running | None, pending: list[GenerationHandle], tracker: BatchTracker) -> _Running | None:
        room = self.config.max_batch_size - (len(running.rows) if running else 0)
        if running is None:
            chosen = take_batch(pending, self.config.max_batch_size)  # the head always goes
        else:
            chosen, rows = [], 0
            for handle in pending:
                # First come, first served: an older request for another adapter or sampling setting
                # stops admission, so the batch drains and that request runs next instead of starving.
                if batch_key(handle.request, id(handle)) != running.key or rows + handle.rows > room:
                    break
                chosen.append(handle)
                rows += handle.rows
        if not chosen:
            return running
        pending[:] = [h for h in pending if all(h is not c for c in chosen)]
        rows = [
            Row(h, i * h.request.params.n + j, prompt, h.request.params.max_tokens, h.request.params.stop)
            for h in chosen
            for i, prompt in enumerate(h.request.prompts)
            for j in range(h.request.params.n)
        ]
        self.stats["rows"] += len(rows)
        head = chosen[0].request
        if running is None:
            self.stats["batches"] += 1
            if head.params.seed is not None:
                torch.manual_seed(head.params.seed)  # a seeded request runs alone (batch_key): this is its RNG
        else:
            self.stats["joined_rows"] += len(rows)
        # Prefill the newcomers on their own, left-padded among themselves.
        width = max(len(r.prompt_ids) for r in rows)
        pad = [width - len(r.prompt_ids) for r in rows]
        input_ids = torch.tensor([[0] * p + r.prompt_ids for p, r in zip(pad, rows)], device=self.device)
        mask = torch.tensor([[0] * p + [1] * len(r.prompt_ids) for p, r in zip(pad, rows)], device=self.device)
        try:
            logits, cache = self.forward(head.model, input_ids, mask, positions(mask), None)
            last = self._sample(logits, chosen[0])
        except Exception as exc:  # only the newcomers failed; the running batch goes on
            log.exception("prefill failed for %d rows", len(rows))
            for handle in chosen:
                handle.emit(Failed(exc))
            return running
        if running is None:
            running = _Running(batch_key(head, id(chosen[0])), head.model, rows, cache, mask, last)
        else:
            running.cache, running.mask = merge_batches(running.cache, running.mask, cache, mask)
            running.rows = running.rows + rows
            running.last = torch.cat([running.last, last])
        # Observed once per admission (static batching: once per generate call), not per step.
        self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(running.rows))
        for listener in self.listeners:
            listener(len(running.rows))
        return self._advance(running, rows, last, tracker)

    def _step(self, running: _Running, tracker: BatchTracker) -> _Running | None:
        self.stats["steps"] += 1
        running.mask = torch.cat([running.mask, running.mask.new_ones(len(running.rows), 1)], dim=1)
        logits, running.cache = self.forward(
            running.model, running.last[:, None], running.mask, positions(running.mask)[:, -1:], running.cache
        )
        running.last = self._sample(logits, running.rows[0].sink)
        return self._advance(running, running.rows, running.last, tracker)

    def _advance(self, running: _Running, rows: list[Row], tokens: torch.Tensor, tracker: BatchTracker) -> _Running | None:
        """Give ``rows`` their new tokens, then drop every finished row of the batch."""
        now = time.perf_counter()
        for row, token in zip(rows, tokens.tolist()):
            tracker.advance(row, token, now)
        keep = [i for i, row in enumerate(running.rows) if not row.done]
        if not keep:
            return None
        if len(keep) < len(running.rows):
            index = torch.tensor(keep, device=self.device)
            running.cache, running.mask = keep_rows(running.cache, running.mask, index)
            running.rows = [running.rows[i] for i in keep]
            running.last = running.last[index]
        return running

    @staticmethod
    def _sample(logits: torch.Tensor, handle) -> torch.Tensor:
        params = handle.request.params  # the batch key makes these the same across the batch
        if params.temperature == 0:
            return logits.argmax(-1)
        # The same warpers, in the same order, as generate(do_sample=True, top_k=0) in the static path.
        warp = LogitsProcessorList([TemperatureLogitsWarper(params.temperature), TopPLogitsWarper(params.top_p)])
        scores = warp(None, logits)
        return torch.multinomial(scores.softmax(-1), 1).squeeze(1)
