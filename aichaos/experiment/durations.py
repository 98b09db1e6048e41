"""Durations as users write them: ``30s``, ``2m``, ``500ms``, ``1h``, ``1m30s`` or a bare number of seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Return seconds. Raises ValueError with a readable message.

    >>> parse_duration("1m30s")
    90.0
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 2m or 500ms, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration must be a finite number of seconds")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 30s, 2m or 500ms, got {type(value).__name__}")
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError("expected a duration like 30s, 2m or 500ms, got an empty string")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return parse_duration(number)  # "inf", "nan", "-5" get the same checks as numbers
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{value!r} is not a duration; write it like 30s, 2m, 1m30s or 500ms")
    return total


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"
