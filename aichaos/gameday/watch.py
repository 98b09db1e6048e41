"""What ``aichaos watch`` measures and shows, second by second, on a game-day stack: the background
load's request rate, p50/p95/p99 and errors by kind (``aichaos.cli.live.second_figures``, shared with
the live view of ``aichaos run``), the scraped metrics the stack declares, and the active faults.

``Watcher`` gathers: each second that is complete (the load reports a second a moment after it ends,
and the scrape labelled ``s`` is taken at ``s + 0.9``), it yields a :class:`WatchedSecond` and appends
the second's bucket and scrapes to the stack's ``measurements.jsonl``, from which the game-day journal
is written (``aichaos.gameday.record``). ``watch_line`` and ``watch_table`` draw; both are pure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from aichaos.cli.live import SecondFigures, figures_text, second_figures
from aichaos.gameday.record import measurement_line
from aichaos.metrics.samples import SampleStore, merge_examples, top_errors
from aichaos.metrics.scrape import Query, ScrapeStore, parse_selector, split_key, window_value

DEFAULT_SERIES = 6  # scraped series shown per service when none are named
_RUNTIME_SERIES = ("python_", "process_", "go_")  # the client library's own, not the service's


@dataclass(frozen=True)
class WatchedSecond:
    second: int
    figures: SecondFigures | None  # None: no load is driven
    metrics: dict[str, float | None]  # "service/selector" -> a gauge's value, a counter's rate per second
    faults: list[dict[str, Any]]  # the active faults, as the keeper lists them
    # the second's distinct errors: signature -> [kind, count, example] (aichaos.metrics.samples)
    examples: dict[str, list[Any]] = field(default_factory=dict)


def metric_value(store: ScrapeStore, service: str, query: Query, second: int) -> float | None:
    """A gauge's value in ``second`` (its highest), or a counter's rate per second over it."""
    value = window_value(store, service, query, second, second + 1)
    return None if value is None else value[1]


def default_queries(store: ScrapeStore, services: Sequence[str], limit: int = DEFAULT_SERIES
                    ) -> dict[str, tuple[str, Query]]:
    """The series to show when none are named: each service's own (not the client library's), at most
    ``limit`` of them, gauges first."""
    out: dict[str, tuple[str, Query]] = {}
    for service in services:
        kinds = store.kinds.get(service, {})
        own = [k for k in kinds if not split_key(k)[0].startswith(_RUNTIME_SERIES)]
        own.sort(key=lambda k: (kinds[k] != "gauge", k))
        for key in own[:limit]:
            try:
                out[f"{service}/{key}"] = (service, parse_selector(key))
            except ValueError:
                continue
    return out


@dataclass
class Watcher:
    """Gathers the watched seconds of a game-day stack."""

    store: SampleStore | None  # the background load's samples; None without a load
    scrapes: ScrapeStore
    scraped_services: list[str]
    faults: Callable[[], dict[str, Any]]  # the keeper's status: its active faults and their history
    measurements: Path | None = None  # the stack's measurements.jsonl
    queries: dict[str, tuple[str, Query]] = field(default_factory=dict)  # named series; empty: the defaults
    lag: int = 1
    next_second: int | None = None

    def tick(self, now: float) -> list[WatchedSecond]:
        """The seconds completed since the last tick (the first tick starts from the second before now)."""
        complete = int(now) - self.lag  # seconds before this one are complete
        if self.next_second is None:
            self.next_second = complete - 1
        out = []
        for second in range(self.next_second, complete):
            out.append(self._second(second))
        self.next_second = max(self.next_second, complete)
        return out

    def _second(self, second: int) -> WatchedSecond:
        snapshot = self.scrapes.snapshot()
        queries = self.queries or default_queries(snapshot, self.scraped_services)
        metrics = {key: metric_value(snapshot, service, query, second) for key, (service, query) in queries.items()}
        bucket = self.store.snapshot(second, second + 1).get(second) if self.store is not None else None
        figures = second_figures(bucket, second) if self.store is not None else None
        if self.measurements is not None:
            lines = [measurement_line(bucket=bucket)] if bucket is not None else []
            for service, values in snapshot.series.get(second, {}).items():
                lines.append(measurement_line(scrape={"second": second, "service": service, "values": values,
                                                      "kinds": snapshot.kinds.get(service, {})}))
            if lines:
                with open(self.measurements, "a", encoding="utf-8") as out:
                    out.write("".join(lines))
        return WatchedSecond(second, figures, metrics, faults_in(self.faults(), second),
                             dict(bucket.examples) if bucket is not None else {})


def faults_in(status: Mapping[str, Any], second: int) -> list[dict[str, Any]]:
    """The faults that were active at some moment of ``second``, from the keeper's status (its active
    faults, with the time each is reverted, and the history of those applied before)."""
    active = {f["id"]: f for f in status.get("faults", [])}
    out = []
    for fault in status.get("history", []):
        reverted = fault.get("reverted_at")
        if fault["applied_at"] < second + 1 and (reverted is None or reverted >= second):
            out.append({**fault, "until": active.get(fault["id"], {}).get("until")})
    return out


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _faults_text(faults: Sequence[Mapping[str, Any]], now: float) -> str:
    parts = []
    for fault in faults:
        text = f"{fault['id']} {fault['description']}"
        if fault.get("until"):
            text += f" ({max(0.0, fault['until'] - now):.0f}s left)"
        parts.append(text)
    return "; ".join(parts)


def watch_line(watched: WatchedSecond) -> str:
    """One timestamped line per second, for logs and CI:
    ``12:00:01 40 req/s · p50 5.1 · … | frontend/echo_in_flight 3 | faults: f1 latency …``"""
    parts = [time.strftime("%H:%M:%S", time.localtime(watched.second))]
    parts.append(figures_text(watched.figures) if watched.figures is not None else "no load")
    line = " ".join(parts)
    if watched.metrics:
        line += " | " + " · ".join(f"{k} {_value(v)}" for k, v in watched.metrics.items())
    faults = _faults_text(watched.faults, watched.second + 1)
    line += f" | faults: {faults}" if faults else " | no faults"
    for e in top_errors(watched.examples, 1):
        line += f" | error: {e['kind']}: {e['example'][:120]}"
    return line


def watch_table(title: str, seconds: Sequence[WatchedSecond], rows: int = 15) -> Group:
    """The live view: the last ``rows`` seconds (requests, percentiles, errors by kind, the scraped
    metrics) under the active faults."""
    last = seconds[-1] if seconds else None
    keys = list(last.metrics) if last else []
    table = Table(title=title, title_justify="left", expand=False)
    for header in ("time", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", *keys):
        table.add_column(header, justify="right" if header != "errors" else "left", overflow="fold")
    for w in seconds[-rows:]:
        f = w.figures
        errors = ", ".join(f"{k} {n}" for k, n in sorted(f.errors.items())) if f and f.errors else ""
        cells: list[str | Text] = [time.strftime("%H:%M:%S", time.localtime(w.second))]
        if f is None:
            cells += ["-", "-", "-", "-", "no load"]
        else:
            cells += [str(f.requests), _ms(f.p50_ms), _ms(f.p95_ms), _ms(f.p99_ms),
                      Text(f"{f.error_rate:.1%} {errors}".strip(), style="bold red" if f.errors else "")]
        cells += [_value(w.metrics.get(k)) for k in keys]
        table.add_row(*cells)
    faults = _faults_text(last.faults, time.time()) if last else ""
    head = Text("faults: " + (faults or "none"), style="bold red" if faults else "green")
    seen: dict[str, list[Any]] = {}
    for w in seconds[-rows:]:
        merge_examples(seen, w.examples)
    latest = [Text(f"{e['count']} x {e['kind']}: {e['example'][:160]}", style="red") for e in top_errors(seen, 3)]
    if latest:
        return Group(head, table, Text("latest distinct errors:"), *latest)
    return Group(head, table)
