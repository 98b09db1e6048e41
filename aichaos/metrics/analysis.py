"""Steady state, time to detect, time to recover and degradation, exactly as DESIGN.md defines them.

All functions are pure: they take per-second buckets (keyed by epoch second) and return values.

- A window of ``w`` seconds starting at second ``s`` covers the requests started in ``[s, s+w)``;
  windows step by 1 s. It is *unknown* with fewer than ``min_requests`` requests, *steady* when
  every SLO holds in it, else *violated*.
- Time to detect: from the fault's start to the end of the first violated window that ends after it.
- Time to recover: from the revert to the start of the first steady window after it such that every
  window starting in the following ``w`` seconds is steady too ("stays steady for a further window").

Both have 1 s resolution: an event counts from the start of the second it happened in (faults are
applied and reverted on whole-second phase boundaries, a few ms late for the API call, and those
few ms must not read as a second of detection or recovery).
- Degradation: the fault phase's metrics against the baseline's, as ratio and delta.

Latency percentiles are of the requests that succeeded, and only of at least ``min_samples`` of them
(``steady_state.min_requests``, 20 by default): below that a percentile is *insufficient data*
(None), never a value, whether 0 or 1 request survived, since the p95 of fewer than 20 requests is
their maximum and the p99 of one request is that request. Failed requests are judged by the error
rate instead, and every SLO judges it: one that names no error rate gets ``DEFAULT_ERROR_RATE``
(``Slo.judged_bounds``), so a fault that fails most requests fast can never read as healthy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aichaos.experiment.model import Bound, Experiment, Slo
from aichaos.metrics.histogram import percentile
from aichaos.metrics.llm import LLM_METRICS, llm_metrics
from aichaos.metrics.samples import Bucket, merge_buckets, top_errors
from aichaos.metrics.scrape import Query, ScrapeStore, parse_selector, window_value

# scraped metrics are keyed "service/selector"; each comes with its parsed query
Queries = Mapping[str, tuple[str, Query]]


def queries_of(experiment: Experiment) -> dict[str, tuple[str, Query]]:
    """Every scraped metric that the experiment's SLOs and stop conditions read."""
    out: dict[str, tuple[str, Query]] = {}
    sources: list[Mapping[str, Mapping[str, Any]]] = [experiment.steady_state.slo.metrics]
    sources += [c.metrics for c in experiment.stop_when]
    if experiment.gates.degradation is not None:
        sources.append(experiment.gates.degradation.metrics)
    for metrics in sources:
        for service, series in metrics.items():
            for selector in series:
                out[f"{service}/{selector}"] = (service, parse_selector(selector))
    return out


class WindowStatus(StrEnum):
    STEADY = "steady"
    VIOLATED = "violated"
    UNKNOWN = "unknown"


DEFAULT_MIN_SAMPLES = 20


@dataclass(frozen=True)
class Metrics:
    count: int
    seconds: int
    rps: float
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)
    scraped: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # key -> (lowest, highest)
    top_errors: list[dict[str, Any]] = field(default_factory=list)  # the most frequent distinct errors
    ok_count: int | None = None  # requests that succeeded: the latency percentiles' samples
    min_samples: int = 1  # percentiles of fewer successful requests are insufficient data (None)
    # LLM metrics and counts (aichaos.metrics.llm.llm_metrics); None when no LLM request started in the window
    llm: dict[str, Any] | None = None

    @property
    def latency_samples(self) -> int:
        return self.count - sum(self.errors.values()) if self.ok_count is None else self.ok_count

    @property
    def insufficient(self) -> bool:
        """Too few successful requests for a latency percentile."""
        return self.latency_samples < self.min_samples

    def get(self, metric: str) -> float | None:
        """The metric's value; for a scraped gauge, its highest value in the window."""
        if "/" in metric:
            span = self.scraped.get(metric)
            return None if span is None else span[1]
        value = (None if self.llm is None else self.llm.get(metric)) if metric in LLM_METRICS else getattr(self, metric)
        return None if value is None else float(value)

    def lowest(self, metric: str) -> float | None:
        """Like ``get``, but a scraped gauge's lowest value (what a lower bound is checked against)."""
        if "/" in metric:
            span = self.scraped.get(metric)
            return None if span is None else span[0]
        return self.get(metric)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count, "seconds": self.seconds, "rps": round(self.rps, 3),
            "error_rate": round(self.error_rate, 6), "p50_ms": _r(self.p50_ms), "p95_ms": _r(self.p95_ms),
            "p99_ms": _r(self.p99_ms), "errors": self.errors}
        if self.ok_count is not None:  # (journals before version 3's minimum-sample rule have neither)
            out.update(ok_count=self.ok_count, min_samples=self.min_samples)
        if self.top_errors:
            out["top_errors"] = self.top_errors
        if self.scraped:
            out["scraped"] = {k: None if v is None else {"min": _r(v[0]), "max": _r(v[1])}
                              for k, v in self.scraped.items()}
        if self.llm is not None:
            out["llm"] = {k: _r(v) if isinstance(v, float) else v for k, v in self.llm.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Metrics:
        """Metrics as a journal recorded them (rounded as ``to_json`` rounds them)."""
        return cls(count=data["count"], seconds=data["seconds"], rps=data["rps"], error_rate=data["error_rate"],
                   p50_ms=data["p50_ms"], p95_ms=data["p95_ms"], p99_ms=data["p99_ms"], errors=dict(data["errors"]),
                   scraped={k: None if v is None else (v["min"], v["max"])
                            for k, v in data.get("scraped", {}).items()},
                   ok_count=data.get("ok_count"), min_samples=data.get("min_samples", 1), llm=data.get("llm"),
                   top_errors=list(data.get("top_errors") or []))


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def metrics_of(buckets: Mapping[int, Bucket], start: int, end: int, scrapes: ScrapeStore | None = None,
               queries: Queries | None = None, min_samples: int = DEFAULT_MIN_SAMPLES) -> Metrics:
    """Metrics of the requests started in seconds [start, end), and of the scraped ``queries``;
    latency percentiles only from at least ``min_samples`` successful requests."""
    seconds = max(0, end - start)
    scraped: dict[str, tuple[float, float] | None] = {}
    if queries:
        for key, (service, query) in queries.items():
            scraped[key] = None if scrapes is None else window_value(scrapes, service, query, start, end)
    merged = merge_buckets([buckets[s] for s in range(start, end) if s in buckets])
    errors = merged.error_count
    ok = sum(merged.hist.values())
    enough = ok >= max(1, min_samples)
    return Metrics(
        count=merged.count,
        seconds=seconds,
        rps=merged.count / seconds if seconds else 0.0,
        error_rate=errors / merged.count if merged.count else 0.0,
        p50_ms=percentile(merged.hist, 50) if enough else None,
        p95_ms=percentile(merged.hist, 95) if enough else None,
        p99_ms=percentile(merged.hist, 99) if enough else None,
        errors=dict(merged.errors),
        scraped=scraped,
        ok_count=ok,
        top_errors=top_errors(merged.examples),
        min_samples=max(1, min_samples),
        llm=None if merged.llm is None else llm_metrics(merged.llm, seconds, min_samples),
    )


def limit_of(bound: Bound, baseline: float | None) -> tuple[float | None, float | None]:
    """(upper, lower) limits of a bound, with relative parts resolved against the baseline."""
    upper = bound.max
    if baseline is not None and (bound.baseline_ratio is not None or bound.baseline_delta is not None):
        candidates = []
        if bound.baseline_ratio is not None:
            candidates.append(bound.baseline_ratio * baseline)
        if bound.baseline_delta is not None:
            candidates.append(baseline + bound.baseline_delta)
        relative = max(candidates)
        upper = relative if upper is None else min(upper, relative)
    return upper, bound.min


def slo_holds(metrics: Metrics, slo: Slo, baseline: Metrics | None) -> tuple[bool, list[str]]:
    """Whether every SLO holds; the list names each one that does not."""
    broken: list[str] = []
    for metric, bound in slo.judged_bounds().items():
        value, low = metrics.get(metric), metrics.lowest(metric)
        upper, lower = limit_of(bound, baseline.get(metric) if baseline else None)
        if value is None or low is None:
            # too few successful requests for a percentile (latency cannot be shown to hold), or no
            # scrape of a service metric
            broken.append(f"{metric}=n/a")
            continue
        if upper is not None and value > upper:
            broken.append(f"{metric}={value:.4g}>{upper:.4g}")
        if lower is not None and low < lower:
            broken.append(f"{metric}={low:.4g}<{lower:.4g}")
    return not broken, broken


@dataclass(frozen=True)
class Window:
    start: int
    end: int  # exclusive
    status: WindowStatus
    metrics: Metrics
    broken: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "status": self.status.value,
                "count": self.metrics.count, "p95_ms": _r(self.metrics.p95_ms),
                "error_rate": round(self.metrics.error_rate, 6), "broken": list(self.broken)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Window:
        """A window as a journal recorded it. The journal keeps a window's request count, p95 and
        error rate only: its other metrics read back as unknown (None, no scraped values)."""
        start, end, count = data["start"], data["end"], data["count"]
        metrics = Metrics(count=count, seconds=end - start, rps=count / (end - start) if end > start else 0.0,
                          error_rate=data["error_rate"], p50_ms=None, p95_ms=data["p95_ms"], p99_ms=None)
        return cls(start, end, WindowStatus(data["status"]), metrics, tuple(data["broken"]))


def windows(buckets: Mapping[int, Bucket], start: int, end: int, width: int, min_requests: int,
            slo: Slo, baseline: Metrics | None, scrapes: ScrapeStore | None = None,
            queries: Queries | None = None) -> list[Window]:
    """Every full window starting in [start, end - width]."""
    out: list[Window] = []
    for s in range(start, end - width + 1):
        m = metrics_of(buckets, s, s + width, scrapes, queries, min_requests)
        if m.count < min_requests:
            out.append(Window(s, s + width, WindowStatus.UNKNOWN, m))
            continue
        ok, broken = slo_holds(m, slo, baseline)
        out.append(Window(s, s + width, WindowStatus.STEADY if ok else WindowStatus.VIOLATED, m, tuple(broken)))
    return out


def time_to_detect(wins: list[Window], fault_start: float, fault_end: float) -> float | None:
    """Seconds from the fault's start to the end of the first violated window ending after it."""
    start = math.floor(fault_start)
    for w in wins:
        if w.end > start and w.start < fault_end and w.status is WindowStatus.VIOLATED:
            return float(w.end - start)
    return None


def time_to_recover(wins: list[Window], revert_at: float, width: int) -> float | None:
    """Seconds from the revert to the start of the first window that is steady and stays steady.

    None ("not recovered") when the run ends before that can be shown.
    """
    by_start = {w.start: w for w in wins}
    first = math.floor(revert_at)
    last = max(by_start) if by_start else first - 1
    for s in range(first, last + 1):
        run = [by_start.get(s + k) for k in range(width + 1)]
        if all(w is not None and w.status is WindowStatus.STEADY for w in run):
            return float(s - first)
    return None


@dataclass(frozen=True)
class Change:
    """A metric in the fault phase against the baseline. ``ratio`` and ``delta`` are computed from
    the two values unless given: a journal records them from the unrounded values, and reading it
    back must not recompute them from the rounded ones."""

    metric: str
    baseline: float | None
    fault: float | None
    ratio: float | None = None
    delta: float | None = None

    def __post_init__(self) -> None:
        if self.baseline is None or self.fault is None:
            return
        if self.ratio is None:
            ratio = (1.0 if self.fault == 0 else math.inf) if self.baseline == 0 else self.fault / self.baseline
            object.__setattr__(self, "ratio", ratio)
        if self.delta is None:
            object.__setattr__(self, "delta", self.fault - self.baseline)

    def to_json(self) -> dict[str, Any]:
        ratio = self.ratio
        return {"metric": self.metric, "baseline": _r(self.baseline), "fault": _r(self.fault),
                "ratio": None if ratio is None or math.isinf(ratio) else round(ratio, 4),
                "delta": _r(self.delta)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        return cls(data["metric"], data["baseline"], data["fault"], data["ratio"], data["delta"])


def degradation(baseline: Metrics, fault: Metrics) -> dict[str, Change]:
    names = ["p50_ms", "p95_ms", "p99_ms", "error_rate", "rps", *baseline.scraped]
    if baseline.llm is not None or fault.llm is not None:
        names += LLM_METRICS
    return {m: Change(m, baseline.get(m), fault.get(m)) for m in names}


def error_budget_spent(metrics: Metrics, slo: Slo) -> float | None:
    """Errors against the errors the SLO allows for as many requests: 1.0 is the whole budget.
    None without an absolute error-rate limit (or with one of 0, which allows no budget to spend)."""
    bound = slo.error_rate  # the declared budget: a default bound judges windows, it grants no budget
    if bound is None or not bound.max or metrics.count == 0:
        return None
    return metrics.error_rate / bound.max
