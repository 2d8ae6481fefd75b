"""A run's training examples as the model saw them, and the histogram of their token lengths.

A run stores its held-out splits but not its training split (it can be large), so the
examples are rebuilt on demand by the code training ran: :func:`tuneforge.data.prepare`
with the run's stored data config and seed, and its tokenizer (no model is loaded). That
gives the same chat-template text and the same answer-only labels, as long as the data
files are unchanged: their SHA-256 is compared with the one ``data_report.json`` recorded,
and the page says when one differs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.template import IGNORE_INDEX
from tuneforge.errors import TuneforgeError
from tuneforge.rundir import RunDir
from tuneforge.ui.runs import read_json, read_yaml

PAGE_SIZE = 10


@dataclass(frozen=True)
class Bin:
    """Examples with ``lo <= tokens <= hi``."""

    lo: int
    hi: int
    count: int


def length_histogram(pairs: Iterable[Sequence[int]], bins: int = 24) -> list[Bin]:
    """Equal-width integer bins over ``[(length, count), ...]``, from the shortest to the longest length.

    Example:
        >>> length_histogram([(3, 2), (5, 1)], bins=2)
        [Bin(lo=3, hi=3, count=2), Bin(lo=4, hi=5, count=1)]
    """
    counts = [(int(n), int(c)) for n, c in pairs if int(c) > 0]
    if not counts:
        return []
    lo, hi = min(n for n, _ in counts), max(n for n, _ in counts)
    width = max(1, -(-(hi - lo + 1) // bins))  # ceil: every length falls in one of at most `bins` bins
    edges = list(range(lo, hi + 1, width))
    totals = [0] * len(edges)
    for n, c in counts:
        totals[(n - lo) // width] += c
    return [Bin(start, min(start + width - 1, hi), total) for start, total in zip(edges, totals)]


def segments(input_ids: Sequence[int], labels: Sequence[int], tokenizer: Any) -> list[tuple[str, bool]]:
    """The example's text in runs of tokens that are all trained on (label kept) or all not (-100).

    Each run is decoded with special tokens kept, so the template's markers show as the model sees them.
    """
    out: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(input_ids) + 1):
        if i == len(input_ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            text = tokenizer.decode(list(input_ids[start:i]), skip_special_tokens=False)
            out.append((text, labels[start] != IGNORE_INDEX))
            start = i
    return out


@dataclass
class TrainingView:
    """A run's training split rebuilt, or why it could not be."""

    rows: list[dict] = field(default_factory=list)
    """``{"input_ids", "labels"}`` in training order."""
    origin: str = ""
    changed: list[str] = field(default_factory=list)
    """Data files whose SHA-256 differs from the run's record (the examples may differ from those trained on)."""
    problem: str | None = None
    tokenizer: Any = None

    def page(self, number: int) -> list[tuple[int, list[tuple[str, bool]], int, int]]:
        """``(index, segments, tokens, trained tokens)`` of the examples on page ``number`` (from 1)."""
        first = (number - 1) * PAGE_SIZE
        return [
            (i, segments(row["input_ids"], row["labels"], self.tokenizer), len(row["input_ids"]),
             sum(label != IGNORE_INDEX for label in row["labels"]))
            for i, row in enumerate(self.rows[first:first + PAGE_SIZE], first)
        ]

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.rows) // PAGE_SIZE))


def rebuild(runs_dir: Path, folder: Path) -> TrainingView:
    """Run the run's own data preparation again, with its stored config and its saved tokenizer."""
    from tuneforge.config import load_config
    from tuneforge.data import prepare
    from tuneforge.models.load import load_tokenizer, resolve

    run = RunDir(folder)
    raw = read_yaml(runs_dir, run.config)
    if not isinstance(raw, dict):
        return TrainingView(problem=f"{run.config.name} is missing or unreadable: the training examples cannot be rebuilt")
    if isinstance(raw.get("security"), dict) and raw["security"].get("encrypt"):
        # Its data rows are encrypted in the run; rebuilding them from the source files would serve
        # them over HTTP in plaintext (and the source may be an encrypted file the dashboard cannot read).
        return TrainingView(problem="the run is encrypted at rest: its training examples are not shown here")
    try:
        cfg = load_config(data=raw)
        if cfg.training.objective != "sft":
            return TrainingView(problem=f"objective {cfg.training.objective}: this view shows SFT examples (prompt + answer) only")
        # The run's own copy of the tokenizer (saved beside the weights) when there is one: it is what trained.
        saved = run.weights if (run.weights / "tokenizer_config.json").is_file() else None
        tokenizer = load_tokenizer(saved or resolve(cfg.model))
        prepared = prepare(cfg.data, tokenizer, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed)
    except TuneforgeError as exc:
        return TrainingView(problem=f"the training examples cannot be rebuilt: {exc}")
    recorded = {s["path"]: s.get("sha256") for s in (read_json(runs_dir, run.data_report) or {}).get("sources", [])
                if isinstance(s, dict) and "path" in s}
    changed = [path for path, digest in prepared.sources.items() if recorded.get(path) not in (None, "", digest)]
    origin = (f"rebuilt now from the run's data config ({', '.join(prepared.sources)}), seed {cfg.training.seed}, "
              f"with the tokenizer in {saved or resolve(cfg.model)}: the code training ran (data.prepare, "
              "chat template, answer-only labels)")
    return TrainingView(prepared.train, origin, changed, tokenizer=tokenizer)


class TrainingCache:
    """Rebuilt splits of the last few runs looked at, until the run's config or data report changes."""

    def __init__(self, size: int = 4):
        self.size, self._views, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, runs_dir: Path, folder: Path) -> TrainingView:
        run = RunDir(folder)
        stamp = tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in (run.config, run.data_report))
        key = (str(folder), stamp)
        with self._lock:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
        view = rebuild(runs_dir, folder)
        with self._lock:
            self._views[key] = view
            while len(self._views) > self.size:
                self._views.popitem(last=False)
        return view
