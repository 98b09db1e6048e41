"""A sparse log-bucketed latency histogram (±0.5% relative error), mergeable by addition.

A latency of v microseconds falls in bucket ``floor(log(v) / log(1.01))``; a bucket's value is its
geometric middle. Percentiles of a window come from the merged histogram of its seconds, never from
averaging per-second percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

_LOG_BASE = math.log(1.01)


def bucket_of(ms: float) -> int:
    us = max(1.0, ms * 1000.0)
    return int(math.log(us) / _LOG_BASE)


def value_of(bucket: int) -> float:
    """Milliseconds at the geometric middle of ``bucket``."""
    return math.exp((bucket + 0.5) * _LOG_BASE) / 1000.0


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for hist in histograms:
        for bucket, count in hist.items():
            out[bucket] = out.get(bucket, 0) + count
    return out


def percentile(hist: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (0 < q ≤ 100) in ms, nearest-rank; None for an empty histogram."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q / 100.0 * total))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return value_of(bucket)
    return value_of(max(hist))  # pragma: no cover - unreachable
