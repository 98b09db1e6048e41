"""Durations as users write them: ``30s``, ``2m``, ``500ms``, ``1h``, ``1m30s`` or a bare number of seconds.

Units go from the largest to the smallest, each at most once (``1h30m``, not ``30m1h`` or ``1h2h``),
and no duration is longer than ``MAX_DURATION`` (a day): a longer one is a typo, and would be
planned second by second before the run starts.
"""

from __future__ import annotations

import math
import re

from aichaos.experiment.yamlpos import describe_value

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_ORDER = ["h", "m", "s", "ms"]
MAX_DURATION = 24 * 3600.0  # the messages below say "24h"


def parse_duration(value: object) -> float:
    """Return seconds. Raises ValueError with a readable message.

    >>> parse_duration("1m30s")
    90.0
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 2m or 500ms, got a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            raise ValueError("a duration must be a number of seconds, not NaN")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        if value > MAX_DURATION:  # compared before float(): a 400-digit int would overflow it
            raise ValueError(f"a duration is at most 24h ({MAX_DURATION:g}s)")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 30s, 2m or 500ms, got {describe_value(value)}")
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError("expected a duration like 30s, 2m or 500ms, got an empty string")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return parse_duration(number)  # "inf", "nan", "-5" get the same checks as numbers
    pos, total, last = 0, 0.0, -1
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        unit = _ORDER.index(match.group(2))
        if unit <= last:
            raise ValueError(f"{_brief(value)} is not a duration: its units must go from the largest to the smallest, "
                             "each once (like 1h30m or 1m30s)")
        last = unit
        total += float(match.group(1)) * _UNITS[match.group(2)]  # a 400-digit number is inf, refused below
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{_brief(value)} is not a duration; write it like 30s, 2m, 1m30s or 500ms")
    return parse_duration(total)


def _brief(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "…"


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"
