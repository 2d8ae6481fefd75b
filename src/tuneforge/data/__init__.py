"""Data preparation: load, validate, clean, split, chat template + answer-only labels, and the DataReport.

The canonical example every package uses is a plain dict: ``{"messages": [...], "meta": {...}}``
for chat-like data or ``{"text": ..., "meta": {...}}`` for raw text (see :mod:`tuneforge.data.formats`).
:func:`prepare` turns a ``data`` config section into tokenized splits plus a report.
"""

from tuneforge.data.clean import Dropped, Kept, clean_example, dedupe_key, redact_pii
from tuneforge.data.formats import FORMATS, detect_format
from tuneforge.data.load import load_examples, location
from tuneforge.data.prepare import PreparedData, prepare
from tuneforge.data.report import DataReport
from tuneforge.data.split import split_indices
from tuneforge.data.template import (
    IGNORE_INDEX,
    end_of_turn_token,
    prompt_messages,
    reference,
    render_prompt,
    tokenize_example,
)

__all__ = [
    "FORMATS", "IGNORE_INDEX", "DataReport", "Dropped", "Kept", "PreparedData", "clean_example", "dedupe_key",
    "detect_format", "end_of_turn_token", "load_examples", "location", "prepare", "prompt_messages", "redact_pii",
    "reference", "render_prompt", "split_indices", "tokenize_example",
]
