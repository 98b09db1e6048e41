"""The stack's own metrics: each service's Prometheus ``/metrics`` scraped once a second into the
run's time line, next to the load's per-second buckets, so that SLOs, stop conditions and reports can
use queue depth, batch size, device memory, breaker state, feature staleness…

Selectors name what an SLO reads: a metric name, optionally with labels
(``model_requests_total{status="503"}``), or the ratio of two counters
(``gateway_upstream_calls_total / gateway_requests_total``: retry amplification). A name matches
every series of that metric whose labels include the selector's; counters are summed across the
matches, gauges take the largest.

Each service is scraped late in every second (at about .9) and the values are labelled with that
second. Faults are applied and reverted on whole seconds, so a scrape never straddles a boundary
with a fault's first effects: the scrape labelled ``s - 1`` is the state just before second ``s``.
Over a window of seconds ``[start, end)``:
- a gauge's value is the range of the scrapes labelled ``start … end-1`` (the SLO holds when the
  largest is under an upper bound and the smallest over a lower one: "every scrape in the window");
- a counter's value is its per-second rate from the scrape labelled ``start-1`` (just before the
  window) to the one labelled ``end-1`` (just before its end), so every increment falls in exactly
  one window (a counter that went down was reset: its new value counts as the increase);
- a ratio is the increase of the first counter over that of the second, on the same scrapes.

A window with no successful scrape of a series has no value: its SLO does not hold ("n/a"), the
way a latency SLO does not hold when no request succeeded. Histogram buckets are not kept (their
``_count`` and ``_sum`` are, as counters).
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*'
_SELECTOR = re.compile(rf"^\s*({_NAME})\s*(?:\{{((?:{_LABEL},?)*)\}})?\s*$")


@dataclass(frozen=True)
class Selector:
    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return name == self.name and all(labels.get(k) == v for k, v in self.labels)


@dataclass(frozen=True)
class Query:
    """A selector, or the ratio of two counter selectors."""

    text: str
    numerator: Selector
    denominator: Selector | None = None


def _selector(text: str, whole: str) -> Selector:
    match = _SELECTOR.match(text)
    if match is None:
        raise ValueError(f"{whole!r} is not a metric selector: expected name or name{{label=\"value\"}}")
    labels = tuple(sorted((k, v.replace('\\"', '"').replace("\\\\", "\\"))
                          for k, v in re.findall(_LABEL, match.group(2) or "")))
    return Selector(match.group(1), labels)


def parse_selector(text: str) -> Query:
    """``name``, ``name{label="value",…}`` or ``counter_a / counter_b``; ValueError when malformed."""
    parts = text.split(" / ") if " / " in text else [text]
    if len(parts) > 2:
        raise ValueError(f"{text!r}: a ratio has one '/' between two selectors")
    selectors = [_selector(part, text) for part in parts]
    return Query(text, selectors[0], selectors[1] if len(selectors) == 2 else None)


# ---------------------------------------------------------------- one scrape
def parse_exposition(text: str) -> tuple[dict[str, float], dict[str, str]]:
    """Prometheus text → ({series: value}, {series: "counter" | "gauge"}); buckets are left out."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    kinds: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket") and family.type in ("histogram", "gaugehistogram"):
                continue
            key = series_key(sample.name, sample.labels)
            values[key] = float(sample.value)
            counter = family.type == "counter" or (family.type in ("histogram", "summary")
                                                   and sample.name.endswith(("_count", "_sum")))
            kinds[key] = "counter" if counter else "gauge"
    return values, kinds


def series_key(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def split_key(key: str) -> tuple[str, dict[str, str]]:
    name, _, rest = key.partition("{")
    labels = dict(re.findall(_LABEL, rest[:-1])) if rest else {}
    return name, labels


# ---------------------------------------------------------------- the time line
@dataclass
class ScrapeStore:
    """Scraped values by second and service: ``series[second][service] = {series_key: value}``.
    A failed scrape leaves its second without that service (and counts in ``failures``)."""

    series: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    kinds: dict[str, dict[str, str]] = field(default_factory=dict)  # service -> series -> kind
    failures: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)
    scraped: dict[int, set[str]] = field(default_factory=dict)  # services scraped successfully, by second
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, second: int, service: str, values: dict[str, float], kinds: dict[str, str],
            scraped: bool = True) -> None:
        """Add a service's values for a second, merged with any others of that second: aichaos's
        own series (a probe's, ``scraped=False``) live beside the scraped ones."""
        with self._lock:
            self.series.setdefault(second, {}).setdefault(service, {}).update(values)
            self.kinds.setdefault(service, {}).update(kinds)
            if scraped:
                self.scraped.setdefault(second, set()).add(service)

    def fail(self, service: str, error: str) -> None:
        with self._lock:
            self.failures[service] = self.failures.get(service, 0) + 1
            self.last_error[service] = error

    def snapshot(self) -> ScrapeStore:
        with self._lock:
            return ScrapeStore({s: {k: dict(d) for k, d in v.items()} for s, v in self.series.items()},
                               {k: dict(v) for k, v in self.kinds.items()}, dict(self.failures),
                               dict(self.last_error), {s: set(v) for s, v in self.scraped.items()})

    def to_json(self) -> dict[str, Any]:
        return {"kinds": self.kinds, "failures": self.failures, "last_error": self.last_error,
                "series": [{"second": s, "services": v, "scraped": sorted(self.scraped.get(s, ()))}
                           for s, v in sorted(self.series.items())]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScrapeStore:
        """The store back from a journal's ``scrapes``, to analyse a finished run again."""
        return cls(series={int(e["second"]): e["services"] for e in data.get("series", [])},
                   kinds=data.get("kinds", {}), failures=data.get("failures", {}),
                   last_error=data.get("last_error", {}),
                   scraped={int(e["second"]): set(e.get("scraped", ())) for e in data.get("series", [])})


def _kind(store: ScrapeStore, service: str, selector: Selector) -> str:
    """counter when every series the service exported under the selector's name is one, else gauge."""
    kinds = store.kinds.get(service, {})
    same_name = [k for k in kinds if split_key(k)[0] == selector.name]
    return "counter" if same_name and all(kinds[k] == "counter" for k in same_name) else "gauge"


def _points(store: ScrapeStore, service: str, selector: Selector, start: int, end: int) -> tuple[str, list[float]]:
    """(kind, value per scraped second in [start, end)) of a selector, summed or maxed over its series.

    A counter that the service has exported (under any labels) but not the selected series of yet
    counts as 0 in every successful scrape: client libraries export a labelled counter only once it
    has been incremented, and "no 503 yet" must read as 0, not as no data.
    """
    kinds = store.kinds.get(service, {})
    keys = [k for k in kinds if selector.matches(*split_key(k))]
    kind = _kind(store, service, selector)
    points: list[float] = []
    for second in range(start, end):
        scraped = store.series.get(second, {}).get(service)
        if scraped is None:
            continue
        present = [scraped[k] for k in keys if k in scraped]
        if present:
            points.append(sum(present) if kind == "counter" else max(present))
        elif kind == "counter" and service in store.scraped.get(second, ()):
            points.append(0.0)
    return kind, points


def _increase(points: list[float]) -> float:
    total = 0.0
    for before, after in itertools.pairwise(points):
        total += after - before if after >= before else after  # a drop is a restart of the counter
    return total


def window_value(store: ScrapeStore, service: str, query: Query, start: int, end: int
                 ) -> tuple[float, float] | None:
    """(lowest, highest) value of ``query`` over seconds [start, end): equal for counters and ratios.
    None when the window holds too few scrapes to say."""
    # a counter or ratio reads from just before the window to just before its end; a gauge, within it
    counting = query.denominator is not None or _kind(store, service, query.numerator) == "counter"
    kind, points = _points(store, service, query.numerator, start - 1 if counting else start, end)
    if query.denominator is not None:
        _, below = _points(store, service, query.denominator, start - 1, end)
        if len(points) < 2 or len(below) < 2 or _increase(below) <= 0:
            return None
        ratio = _increase(points) / _increase(below)
        return ratio, ratio
    if not points:
        return None
    if kind == "counter":
        if len(points) < 2:
            return None
        rate = _increase(points) / (len(points) - 1)
        return rate, rate
    return min(points), max(points)


def mean_value(store: ScrapeStore, service: str, query: Query, start: int, end: int) -> float | None:
    """A summary of ``query`` over [start, end) for reports: a gauge's mean, a counter's rate, a ratio."""
    if query.denominator is not None or _kind(store, service, query.numerator) == "counter":
        value = window_value(store, service, query, start, end)
        return None if value is None else value[1]
    _, points = _points(store, service, query.numerator, start, end)
    return sum(points) / len(points) if points else None


# ---------------------------------------------------------------- the scraper
class Scraper:
    """Scrapes every target once a second on a thread until ``stop()``; never raises.

    Targets are scraped concurrently, so a service that hangs (a paused one) delays no other's
    scrape past the second's boundary; each value is labelled with the second it arrived in.
    """

    def __init__(self, targets: dict[str, str], store: ScrapeStore, timeout: float = 0.8) -> None:
        self.targets = targets  # service -> URL
        self.store = store
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aichaos-scraper", daemon=True)
        self._pool: Any = None

    def start(self) -> None:
        if self.targets:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=2 * len(self.targets), thread_name_prefix="aichaos-scrape")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def scrape(self, service: str, url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                text = response.read(8 * 1024 * 1024).decode("utf-8", "replace")
            values, kinds = parse_exposition(text)
        except Exception as exc:  # a service that is down or answers garbage is data, not a crash
            self.store.fail(service, f"{type(exc).__name__}: {exc}")
            return
        self.store.add(int(time.time()), service, values, kinds)

    def _loop(self) -> None:
        # late in each second: the scrape labelled s is the state just before s + 1 (see the module)
        while not self._stop.wait((0.9 - time.time() % 1.0) % 1.0 or 1.0):
            for service, url in self.targets.items():
                self._pool.submit(self.scrape, service, url)
