"""Per-second samples: every request lands in the bucket of the second it started in (an LLM
request's stream measurements too: ``aichaos.metrics.llm``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from aichaos.metrics.histogram import merge
from aichaos.metrics.llm import LlmStats, merge_llm

# the last three are LLM answers that failed after their headers (aichaos.load.openai)
ERROR_KINDS = ("timeout", "connection", "5xx", "4xx", "other", "truncated", "stream_error", "malformed")


@dataclass
class Bucket:
    second: int  # epoch second of the requests' start
    count: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    hist: dict[int, int] = field(default_factory=dict)  # latency of successful requests
    llm: LlmStats | None = None  # the LLM requests among them, measured (None: there were none)
    # distinct errors: signature -> [kind, count, example] (at most a few a second; see the load process)
    examples: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def add(self, other: Bucket) -> None:
        self.count += other.count
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        for b, n in other.hist.items():
            self.hist[b] = self.hist.get(b, 0) + n
        if other.llm is not None:
            if self.llm is None:
                self.llm = LlmStats()
            self.llm.add(other.llm)
        merge_examples(self.examples, other.examples)

    def to_json(self) -> dict[str, Any]:
        out = {"second": self.second, "count": self.count, "errors": self.errors,
               "hist": {str(k): v for k, v in sorted(self.hist.items())}}
        if self.llm is not None:
            out["llm"] = self.llm.to_json()
        if self.examples:
            out["examples"] = self.examples
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Bucket:
        return cls(second=int(data["second"]), count=int(data["count"]),
                   errors={str(k): int(v) for k, v in data.get("errors", {}).items()},
                   hist={int(k): int(v) for k, v in data.get("hist", {}).items()},
                   llm=LlmStats.from_json(data["llm"]) if data.get("llm") is not None else None,
                   examples={str(k): [str(v[0]), int(v[1]), str(v[2])]
                             for k, v in (data.get("examples") or {}).items()})


def merge_examples(into: dict[str, list[Any]], other: dict[str, list[Any]]) -> None:
    """Add ``other``'s distinct errors to ``into``: counts by signature, the first example kept."""
    for signature, (kind, n, example) in other.items():
        entry = into.get(signature)
        if entry is None:
            into[signature] = [kind, n, example]
        else:
            entry[1] += n


def top_errors(examples: dict[str, list[Any]], n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` most frequent distinct errors: kind, count and an example of each."""
    ranked = sorted(examples.values(), key=lambda e: (-e[1], e[0], e[2]))[:n]
    return [{"kind": kind, "count": count, "example": example} for kind, count, example in ranked]


def merge_buckets(buckets: list[Bucket], second: int = 0) -> Bucket:
    out = Bucket(second=second)
    out.count = sum(b.count for b in buckets)
    for b in buckets:
        for kind, n in b.errors.items():
            out.errors[kind] = out.errors.get(kind, 0) + n
    out.hist = merge(b.hist for b in buckets)
    out.llm = merge_llm(b.llm for b in buckets)
    for b in buckets:
        merge_examples(out.examples, b.examples)
    return out


class SampleStore:
    """Thread-safe accumulation of the load generator's partial buckets, keyed by second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[int, Bucket] = {}
        self._users: dict[int, int] = {}

    def set_users(self, second: int, users: int) -> None:
        """How many users the load process had running in ``second``."""
        with self._lock:
            self._users[second] = users

    def users(self) -> dict[int, int]:
        with self._lock:
            return dict(self._users)

    def add(self, bucket: Bucket) -> None:
        with self._lock:
            mine = self._buckets.get(bucket.second)
            if mine is None:
                self._buckets[bucket.second] = bucket
            else:
                mine.add(bucket)

    def snapshot(self, start: int | None = None, end: int | None = None) -> dict[int, Bucket]:
        """Copies of the buckets, all of them or those of seconds [start, end)."""
        with self._lock:
            if start is None or end is None:
                items = list(self._buckets.items())
            else:
                items = [(s, self._buckets[s]) for s in range(start, end) if s in self._buckets]
            return {s: Bucket(b.second, b.count, dict(b.errors), dict(b.hist), None if b.llm is None else b.llm.copy(),
                              {k: list(v) for k, v in b.examples.items()})
                    for s, b in items}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(b.count for b in self._buckets.values())
