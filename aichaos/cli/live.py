"""The live view of a run: what is measured, second by second, while it goes.

Three layers, so that ``aichaos watch`` and ``aichaos run`` share them:

- ``second_figures`` and ``figures_text``: one second's figures (request rate, p50/p95/p99, error
  rate and errors by kind, the LLM figures when streams were measured), pure functions of a bucket;
- ``RunProgress`` / ``progress_of``: where a run stands (phase, countdown, active faults, the last
  complete second, whether the SLO holds in the trailing window, the verdict forming), a pure
  function of the experiment, the journal so far, the samples and the time;
- ``LiveView``: draws it, in one of three modes (``choose_mode``): ``live``, a Rich display that
  redraws in place on a terminal; ``plain``, timestamped lines, one per steady-state window, for
  logs and CI (stdout not a terminal, or ``CI=true``: nothing interactive there); ``off``.

A run reports to the view through two hooks of ``aichaos.run.run_experiment``: ``report`` (its
messages, printed above the display, or timestamped in plain mode) and ``progress`` (called about ten
times a second while the load runs; the view redraws at most twice a second). A failure to draw is
logged and never fails the run.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from aichaos import clock
from aichaos.experiment.model import Experiment
from aichaos.metrics.analysis import (
    Metrics,
    Window,
    WindowStatus,
    metrics_of,
    queries_of,
    slo_holds,
    time_to_detect,
    time_to_recover,
)
from aichaos.metrics.histogram import percentile
from aichaos.metrics.samples import Bucket, SampleStore
from aichaos.metrics.scrape import ScrapeStore

if TYPE_CHECKING:
    from aichaos.report.journal import Journal

log = logging.getLogger(__name__)

Mode = Literal["live", "plain", "off"]
MODES: tuple[str, ...] = ("auto", "live", "plain", "off")


# ---------------------------------------------------------------- one second
@dataclass(frozen=True)
class SecondFigures:
    second: int
    requests: int
    error_rate: float
    errors: dict[str, int]
    p50_ms: float | None  # None: fewer successful requests than a percentile needs
    p95_ms: float | None
    p99_ms: float | None
    llm: dict[str, float | None] = field(default_factory=dict)  # ttft_p95_ms, tpot_p50_ms, tokens_per_s


def second_figures(bucket: Bucket | None, second: int, min_samples: int = 1) -> SecondFigures:
    """The figures of the requests that started in ``second`` (``bucket`` None: there were none)."""
    if bucket is None:
        return SecondFigures(second, 0, 0.0, {}, None, None, None)
    ok = sum(bucket.hist.values())
    enough = ok >= max(1, min_samples)
    pct = {q: percentile(bucket.hist, q) if enough else None for q in (50, 95, 99)}
    llm: dict[str, float | None] = {}
    stats = getattr(bucket, "llm", None)  # the streams' measurements (aichaos.metrics.llm), when any
    if stats is not None:
        for name, q in (("ttft", 95), ("tpot", 50)):
            hist = getattr(stats, name, {})
            llm[f"{name}_p{q}_ms"] = percentile(hist, q) if sum(hist.values()) >= max(1, min_samples) else None
        llm["tokens_per_s"] = float(getattr(stats, "output_tokens", 0))
    return SecondFigures(second, bucket.count, bucket.error_count / bucket.count if bucket.count else 0.0,
                         dict(bucket.errors), pct[50], pct[95], pct[99], llm)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def figures_text(figures: SecondFigures) -> str:
    """``40 req/s · p50 5.1 · p95 105.2 · p99 110.0 ms · errors 2.50% (timeout 1)``"""
    text = (f"{figures.requests} req/s · p50 {_ms(figures.p50_ms)} · p95 {_ms(figures.p95_ms)} · "
            f"p99 {_ms(figures.p99_ms)} ms · errors {figures.error_rate:.2%}")
    if figures.errors:
        text += " (" + ", ".join(f"{k} {n}" for k, n in sorted(figures.errors.items(), key=lambda kv: -kv[1])) + ")"
    if figures.llm:
        text += (f" · TTFT p95 {_ms(figures.llm.get('ttft_p95_ms'))} ms · TPOT p50 "
                 f"{_ms(figures.llm.get('tpot_p50_ms'))} ms · {figures.llm.get('tokens_per_s') or 0:.0f} tok/s")
    return text


# ---------------------------------------------------------------- where the run stands
@dataclass(frozen=True)
class RunProgress:
    now: float
    phase: str  # "" before the first phase (the load ramps up)
    phase_index: int  # 0-based; -1 before the first phase
    phases: int
    elapsed_s: float  # in the phase
    duration_s: float
    run_elapsed_s: float  # from t0
    run_duration_s: float
    active_faults: list[str]
    last: SecondFigures | None  # the last complete second
    window: Window | None  # the trailing steady-state window of complete seconds
    verdict: list[str]  # the verdict forming, one line per part
    stop: str | None = None

    @property
    def remaining_s(self) -> float:
        return max(0.0, self.duration_s - self.elapsed_s)


def active_faults(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """The faults applied and not yet reverted, from a journal's events."""
    active: list[str] = []
    for event in events:
        if event["kind"] == "fault_applied":
            active.append(event["detail"])
        elif event["kind"] == "fault_reverted" and event["detail"] in active:
            active.remove(event["detail"])
    return active


class ProgressTracker:
    """Computes ``RunProgress`` as the run goes; windows of complete seconds are computed once."""

    def __init__(self, experiment: Experiment, lag: int = 1) -> None:
        self.experiment = experiment
        self.lag = lag  # the load reports a second a moment after it ends
        self.queries = queries_of(experiment)
        self._windows: dict[int, Window] = {}
        self._baseline: Metrics | None = None

    def _baseline_metrics(self, buckets: Mapping[int, Bucket], start: int, baseline_end: int, end: int,
                          scrapes: ScrapeStore | None) -> Metrics:
        steady = self.experiment.steady_state
        if self._baseline is not None:
            return self._baseline
        metrics = metrics_of(buckets, start, min(baseline_end, end), scrapes, self.queries, steady.min_requests)
        if end >= baseline_end:
            self._baseline = metrics  # complete: it no longer changes
        return metrics

    def window(self, buckets: Mapping[int, Bucket], start: int, baseline: Metrics,
               scrapes: ScrapeStore | None) -> Window:
        cached = self._windows.get(start)
        if cached is not None:
            return cached
        steady = self.experiment.steady_state
        width = int(steady.window)
        m = metrics_of(buckets, start, start + width, scrapes, self.queries, steady.min_requests)
        if m.count < steady.min_requests:
            win = Window(start, start + width, WindowStatus.UNKNOWN, m)
        else:
            ok, broken = slo_holds(m, steady.slo, baseline)
            win = Window(start, start + width, WindowStatus.STEADY if ok else WindowStatus.VIOLATED, m, tuple(broken))
        if self._baseline is not None:  # judged against the whole baseline: final
            self._windows[start] = win
        return win

    def progress(self, journal_t0: float, events: Sequence[Mapping[str, Any]], stop: str | None,
                 buckets: Mapping[int, Bucket], now: float, scrapes: ScrapeStore | None = None) -> RunProgress:
        experiment = self.experiment
        steady = experiment.steady_state
        width = int(steady.window)
        starts, t = [], journal_t0
        for phase in experiment.phases:
            starts.append(t)
            t += phase.duration
        run_end = t
        index = max((i for i, s in enumerate(starts) if s <= now), default=-1)
        if index >= 0:
            phase = experiment.phases[index]
            name, elapsed, duration = phase.name, now - starts[index], phase.duration
        else:
            name, elapsed, duration = "", 0.0, 0.0
        complete = int(now) - self.lag  # seconds before this one are complete
        analysis_start = int(journal_t0 + steady.warmup)
        baseline_end = int(starts[0] + experiment.phases[0].duration)
        baseline = self._baseline_metrics(buckets, analysis_start, baseline_end, complete, scrapes)
        wins = [self.window(buckets, s, baseline, scrapes) for s in range(analysis_start, complete - width + 1)]
        last = second_figures(buckets.get(complete - 1), complete - 1, steady.min_requests) \
            if complete - 1 >= int(journal_t0) else None
        verdict = self._verdict(wins, events, starts, baseline_end, complete)
        return RunProgress(now=now, phase=name, phase_index=index, phases=len(experiment.phases),
                           elapsed_s=elapsed, duration_s=duration, run_elapsed_s=max(0.0, now - journal_t0),
                           run_duration_s=run_end - journal_t0, active_faults=active_faults(events),
                           last=last, window=wins[-1] if wins else None, verdict=verdict, stop=stop)

    def _verdict(self, wins: list[Window], events: Sequence[Mapping[str, Any]], starts: list[float],
                 baseline_end: int, complete: int) -> list[str]:
        experiment = self.experiment
        out = []
        base = [w for w in wins if w.end <= baseline_end]
        if base:
            steady = sum(1 for w in base if w.status is WindowStatus.STEADY)
            out.append(f"baseline: {steady} of {len(base)} windows steady")
        gates = experiment.gates
        for index, phase in enumerate(experiment.phases):
            applied = [e for e in events if e["kind"] == "fault_applied" and e["phase"] == phase.name]
            if not applied:
                continue
            start = min(e["time"] for e in applied)
            end = starts[index] + phase.duration
            ttd = time_to_detect(wins, start, end)
            part = f"{phase.name}: " + ("no violation yet" if ttd is None else f"detected after {ttd:.0f}s")
            if gates.detect_time is not None and ttd is not None and ttd > gates.detect_time.max:
                part += f" (gate <= {gates.detect_time.max:g}s: FAILS)"
            if complete >= end:
                ttr = time_to_recover(wins, end, int(experiment.steady_state.window))
                degraded = any(w.status is WindowStatus.VIOLATED and w.end > int(start) for w in wins)
                if not degraded:
                    part += ", not degraded"
                elif ttr is not None:
                    part += f", recovered after {ttr:.0f}s"
                else:
                    waiting = max(0, complete - math.floor(end))
                    part += f", recovery not shown yet ({waiting}s since the revert"
                    if gates.recovery_time is not None:
                        limit = gates.recovery_time.max
                        part += f"; gate <= {limit:g}s" + (": FAILS" if waiting > limit else "")
                    part += ")"
            out.append(part)
        return out


# ---------------------------------------------------------------- drawing
def choose_mode(requested: str = "auto", stdout: TextIO | None = None, environ: Mapping[str, str] | None = None
                ) -> Mode:
    """``auto``: ``live`` on a terminal (stdout and stderr both), ``plain`` when stdout is not one or
    under ``CI=true`` (nothing interactive in CI logs), never live on a dumb terminal."""
    if requested in ("live", "plain", "off"):
        return requested  # type: ignore[return-value]
    environ = os.environ if environ is None else environ
    stdout = stdout or sys.stdout
    if environ.get("CI", "").lower() in ("true", "1", "yes") or environ.get("TERM") == "dumb":
        return "plain"
    try:
        terminal = stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return "live" if terminal else "plain"


def plain_line(progress: RunProgress, at: float | None = None) -> str:
    """One timestamped line of where the run stands, for logs."""
    stamp = time.strftime("%H:%M:%S", time.localtime(progress.now if at is None else at))
    if progress.phase_index < 0:
        where = "[ramp-up]"
    else:
        where = (f"[{progress.phase} {int(progress.elapsed_s)}/{progress.duration_s:.0f}s, "
                 f"phase {progress.phase_index + 1}/{progress.phases}]")
    parts = [where]
    if progress.last is not None:
        parts.append(figures_text(progress.last))
    if progress.window is not None:
        parts.append(_slo_text(progress.window))
    if progress.active_faults:
        parts.append("faults: " + "; ".join(progress.active_faults))
    return f"{stamp} " + " | ".join(parts)


def _slo_text(window: Window) -> str:
    if window.status is WindowStatus.STEADY:
        return "SLO holds"
    if window.status is WindowStatus.UNKNOWN:
        return f"SLO unknown ({window.metrics.count} requests in the window)"
    return "SLO violated: " + ", ".join(window.broken)


def live_display(progress: RunProgress) -> Group:
    """The Rich display of ``progress``: phase with countdown and bar, faults, last second, SLO, verdict."""
    head = Table.grid(padding=(0, 1))
    head.add_column(no_wrap=True)
    head.add_column(width=40)
    head.add_column(no_wrap=True)
    if progress.phase_index < 0:
        head.add_row(Text("ramp-up", style="bold"), ProgressBar(total=1, completed=0, width=40),
                     "the first phase starts soon")
    else:
        head.add_row(Text(f"{progress.phase} ({progress.phase_index + 1}/{progress.phases})", style="bold"),
                     ProgressBar(total=max(progress.duration_s, 0.001), completed=min(progress.elapsed_s,
                                                                                      progress.duration_s), width=40),
                     f"{int(progress.elapsed_s)}/{progress.duration_s:.0f}s, {math.ceil(progress.remaining_s)}s left · "
                     f"run {int(progress.run_elapsed_s)}/{progress.run_duration_s:.0f}s")
    body = Table.grid(padding=(0, 1))
    body.add_column(style="dim", no_wrap=True)
    body.add_column()
    faults = "; ".join(progress.active_faults) or "none"
    body.add_row("faults", Text(faults, style="bold red" if progress.active_faults else ""))
    body.add_row("last second", figures_text(progress.last) if progress.last else "waiting for the first second")
    if progress.window is not None:
        style = {WindowStatus.STEADY: "green", WindowStatus.VIOLATED: "bold red"}.get(progress.window.status, "yellow")
        width = progress.window.end - progress.window.start
        body.add_row("SLO", Text(f"{_slo_text(progress.window).removeprefix('SLO ')} (the last {width}s window)",
                                 style=style))
    if progress.verdict:
        body.add_row("verdict so far", "\n".join(progress.verdict))
    if progress.stop:
        body.add_row("stopped", Text(progress.stop, style="bold red"))
    return Group(head, body)


class LiveView:
    """Draws a run's progress on stderr in ``mode``; ``message`` prints the run's messages."""

    def __init__(self, experiment: Experiment, mode: Mode, console: Console | None = None,
                 print_message: Callable[[str], None] | None = None, lag: int = 1) -> None:
        self.mode = mode
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._print_message = print_message
        self.tracker = ProgressTracker(experiment, lag=lag)
        self.interval = max(1, int(experiment.steady_state.window))  # a plain line per window
        self._live: Live | None = None
        self._next_draw = 0.0
        self._last_line_second: int | None = None
        self.failed = False

    def message(self, text: str) -> None:
        if self.mode == "plain":
            self.console.print(escape(f"{time.strftime('%H:%M:%S', time.localtime(clock.now()))} {text}"))
        elif self.mode == "live" and self._live is not None:
            self._live.console.print(escape(text))
        elif self._print_message is not None:
            self._print_message(text)
        else:
            self.console.print(escape(text))

    def progress(self, journal: Journal, store: SampleStore, now: float) -> None:
        """The run's progress hook: ``journal`` is the run's journal as it grows."""
        if self.mode == "off" or self.failed or journal.t0 is None or now < self._next_draw:
            return
        self._next_draw = now + 0.5
        try:
            lag = self.tracker.lag
            buckets = store.snapshot(int(journal.t0) - 1, int(now) - lag + 1)
            progress = self.tracker.progress(journal.t0, list(journal.events), journal.stop, buckets, now,
                                             journal.scrapes)
            self.draw(progress)
        except Exception:  # a view must never fail a run
            self.failed = True
            log.warning("the live view failed and is off for the rest of the run", exc_info=True)

    def draw(self, progress: RunProgress) -> None:
        if self.mode == "plain":
            second = int(progress.now)
            if self._last_line_second is None or second - self._last_line_second >= self.interval:
                self._last_line_second = second
                self.console.print(escape(plain_line(progress)))
        elif self.mode == "live":
            if self._live is None:
                self._live = Live(live_display(progress), console=self.console, auto_refresh=False,
                                  transient=True, redirect_stdout=False, redirect_stderr=False)
                self._live.start()
            else:
                self._live.update(live_display(progress))
            self._live.refresh()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
