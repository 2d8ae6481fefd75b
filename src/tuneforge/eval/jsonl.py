"""Parse the JSON-lines files evaluation reads (training log, predictions, reference text), naming file and line on error."""

from __future__ import annotations

import json

from tuneforge.errors import EvalError


def parse_json_lines(content: str, source: object, *, require: dict[str, type] | None = None) -> list[dict]:
    """The objects of a JSON-lines text; blank lines are skipped.

    Args:
        content: The file's text.
        source: The file, for messages.
        require: Fields every object must have, with their type (e.g. ``{"step": int}``).

    Raises:
        EvalError: ``FILE line N: ...`` for a line that is not JSON, not an object, or lacks a required field.
    """
    rows = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{source} line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise EvalError(f"{source} line {number}: expected a JSON object, got {type(row).__name__}")
        for key, kind in (require or {}).items():
            if not isinstance(row.get(key), kind):
                raise EvalError(f"{source} line {number}: expected a field {key!r} of type {kind.__name__}")
        rows.append(row)
    return rows
