"""Helpers for the data tests: write small data files into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def write_jsonl(tmp_path):
    """``write_jsonl(name, rows)`` writes rows (dicts, or raw strings written verbatim) as JSON Lines."""

    def write(name: str, rows: list) -> Path:
        path = tmp_path / name
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
        return path

    return write


@pytest.fixture
def alpaca_rows():
    """``alpaca_rows(n)``: n distinct alpaca rows."""

    def rows(n: int, start: int = 0) -> list[dict]:
        return [{"instruction": f"Question number {i}?", "input": "", "output": f"Answer {i}."} for i in range(start, start + n)]

    return rows
