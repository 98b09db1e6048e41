"""Minimal Prometheus text exposition: counters, gauges and histograms, thread-safe."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[tuple[str, str], float] = {}
        self._hist: dict[tuple[str, str], tuple[Sequence[float], list[int], list[float]]] = {}

    def describe(self, name: str, kind: str, text: str, labelled: bool = False) -> None:
        """Declare a metric; an unlabelled counter starts at 0, so that it is exported before it counts."""
        self._help[name] = (kind, text)
        if kind == "counter" and not labelled:
            with self._lock:
                self._values.setdefault((name, ""), 0.0)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, _labels(labels))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, _labels(labels))] = value

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get((name, _labels(labels)), 0.0)

    def observe(self, name: str, value: float, buckets: Sequence[float], **labels: str) -> None:
        key = (name, _labels(labels))
        with self._lock:
            entry = self._hist.get(key)
            if entry is None:
                entry = self._hist[key] = (buckets, [0] * len(buckets), [0.0, 0.0])
            bounds, counts, totals = entry
            for i, bound in enumerate(bounds):
                if value <= bound:
                    counts[i] += 1
            totals[0] += 1
            totals[1] += value

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            names = sorted({k[0] for k in self._values} | {k[0] for k in self._hist})
            for name in names:
                kind, text = self._help.get(name, ("untyped", ""))
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                for (n, labels), value in sorted(self._values.items()):
                    if n == name:
                        lines.append(f"{name}{labels} {value:.17g}")
                for (n, labels), (bounds, counts, totals) in sorted(self._hist.items()):
                    if n != name:
                        continue
                    inner = labels[1:-1] + "," if labels else ""
                    for bound, count in zip(bounds, counts, strict=True):
                        le = "+Inf" if math.isinf(bound) else f"{bound:g}"
                        lines.append(f'{name}_bucket{{{inner}le="{le}"}} {count}')
                    if not bounds or not math.isinf(bounds[-1]):
                        lines.append(f'{name}_bucket{{{inner}le="+Inf"}} {int(totals[0])}')
                    lines.append(f"{name}_count{labels} {int(totals[0])}")
                    lines.append(f"{name}_sum{labels} {totals[1]:.17g}")
        return "\n".join(lines) + "\n"


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
