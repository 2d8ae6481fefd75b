"""Durations in config files: ``90s``, ``5m``, ``1h30m``, ``2.5h`` or a plain number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
# One or more <number><unit> parts, largest unit first (1h30m, 5m, 90s, 2.5h); spaces between parts allowed.
_DURATION = re.compile(r"\s*(?:(?P<h>\d+(?:\.\d+)?)\s*h)?\s*(?:(?P<m>\d+(?:\.\d+)?)\s*m)?\s*(?:(?P<s>\d+(?:\.\d+)?)\s*s)?\s*")


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number (seconds) or a string like ``90s``, ``5m``, ``1h30m``.

    Raises:
        ValueError: Anything else, or a duration that is not positive (pydantic names the field).

    Example:
        >>> parse_duration("1h30m")
        5400.0
    """
    if isinstance(value, bool):  # YAML `yes`: not a duration (bool is an int subclass)
        raise ValueError(f"expected a duration like '90s', '5m' or '1h30m', got the boolean {str(value).lower()}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        match = _DURATION.fullmatch(text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and match and any(match.groupdict().values()):
            seconds = sum(float(n) * _UNIT_SECONDS[unit] for unit, n in match.groupdict().items() if n)
        else:
            raise ValueError(f"{value!r} is not a duration; write it like '90s', '5m', '1h30m' or a number of seconds")
    else:
        raise ValueError(f"expected a duration like '90s', '5m' or '1h30m', got {type(value).__name__}")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be a positive, finite number of seconds (got {value!r})")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` -> ``'1h30m'``, ``90`` -> ``'1m30s'`` (whole seconds), the form :func:`parse_duration` reads."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or f"{seconds:g}s"


Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A config field holding a duration, stored as seconds (a float)."""
