"""The predictions table: filter ``eval/predictions.jsonl`` (wrong→right, right→wrong, unparseable, label, text) and page it.

The file is parsed once per change (cached by size and mtime), then every request
filters the parsed rows and returns one page, so a run with 10,000 predictions
answers each page in milliseconds rather than sending the whole file to the browser.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import SecurityError
from tuneforge.ui.tail import parse_records
from tuneforge.security.crypto import is_encrypted

FILTERS = ("all", "wrong_to_right", "right_to_wrong", "unparseable")


@dataclass(frozen=True)
class PredictionsPage:
    rows: list[dict[str, Any]]
    total: int
    """Rows matching the filter (all pages)."""
    page: int
    pages: int
    labels: list[str]
    """Every label seen in the references or answers, for the label filter."""


def prompt_text(row: dict[str, Any]) -> str:
    """The input of one prediction as text: the chat prompt's messages, or the raw ``text``."""
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        return "\n\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt if isinstance(m, dict))
    return str(row.get("text", prompt or ""))


def _correct(row: dict[str, Any], side: str, metric: str | None) -> bool | None:
    value = (row.get(f"{side}_scores") or {}).get(metric) if metric else None
    return None if value is None else value > 0.5


def matches(row: dict[str, Any], kind: str, metric: str | None, label: str | None, query: str | None) -> bool:
    """Whether one prediction passes the filters.

    Args:
        row: One line of ``predictions.jsonl``.
        kind: One of :data:`FILTERS`; wrong→right and right→wrong compare ``metric`` (0/1 per example).
        metric: The per-example metric that decides right and wrong (``changed.metric`` of ``metrics.json``).
        label: Keep rows whose reference or either answer's label is this one.
        query: Case-insensitive text searched in the input, reference and both answers.
    """
    if kind in ("wrong_to_right", "right_to_wrong"):
        base, tuned = _correct(row, "base", metric), _correct(row, "tuned", metric)
        if base is None or tuned is None or base == tuned or tuned != (kind == "wrong_to_right"):
            return False
    elif kind == "unparseable":
        if not any(f"{side}_label" in row and row[f"{side}_label"] is None for side in ("base", "tuned")):
            return False
    if label and label not in (row.get("reference"), row.get("base_label"), row.get("tuned_label")):
        return False
    if query:
        haystack = " ".join(
            [prompt_text(row), str(row.get("reference", "")), str(row.get("base_output", "")),
             str(row.get("tuned_output", ""))]
        )
        if query.lower() not in haystack.lower():
            return False
    return True


def filter_page(
    rows: list[dict[str, Any]], *, kind: str = "all", metric: str | None = None, label: str | None = None,
    query: str | None = None, page: int = 1, per_page: int = 50,
) -> PredictionsPage:
    """One page of the rows that pass :func:`matches` (pages count from 1; past the end gives the last page)."""
    kept = [r for r in rows if matches(r, kind, metric, label, query)]
    pages = max(1, -(-len(kept) // per_page))
    page = min(max(1, page), pages)
    labels = sorted({str(v) for r in rows for k in ("base_label", "tuned_label") if (v := r.get(k)) is not None})
    return PredictionsPage(kept[(page - 1) * per_page: page * per_page], len(kept), page, pages, labels)


class PredictionsCache:
    """Parsed ``predictions.jsonl`` files, re-read only when a file's size or mtime changes."""

    def __init__(self, read: Callable[[Path], bytes] = Path.read_bytes) -> None:
        # The dashboard passes runs.read_run_file here, so predictions are read where decryption hooks in.
        self._read = read
        self._lock = threading.Lock()
        self._files: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}

    def load(self, path: Path) -> list[dict[str, Any]]:
        """The rows of ``path`` (lines that are not JSON objects are skipped); ``[]`` when it is missing."""
        try:
            st = path.stat()
        except OSError:
            return []
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._files.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        if is_encrypted(path):  # an encrypted run: the dashboard holds no key, so it shows no rows
            return []
        try:
            rows = parse_records(self._read(path))
        except (OSError, SecurityError):
            return []
        with self._lock:
            self._files[path] = (stamp, rows)
        return rows


UNPARSEABLE = "(unparseable)"


def confusion(rows: list[dict[str, Any]], side: str) -> tuple[list[str], dict[str, dict[str, int]]]:
    """The confusion matrix of one side's labels: ``(labels, {reference: {answered label: count}})``.

    Only for label tasks (rows with ``{side}_label``); an answer with no label counts as
    :data:`UNPARSEABLE`, a column of its own. ``([], {})`` when the task has no labels.

    Example:
        >>> confusion([{"reference": "a", "tuned_label": "b"}], "tuned")
        (['a', 'b'], {'a': {'b': 1}})
    """
    matrix: dict[str, dict[str, int]] = {}
    labels: set[str] = set()
    for row in rows:
        if f"{side}_label" not in row or row.get("reference") is None:
            continue
        reference, answer = str(row["reference"]), row[f"{side}_label"]
        answer = UNPARSEABLE if answer is None else str(answer)
        labels.update({reference} | ({answer} - {UNPARSEABLE}))
        matrix.setdefault(reference, {}).setdefault(answer, 0)
        matrix[reference][answer] += 1
    return sorted(labels), matrix
