"""Two runs side by side: per phase and per metric, the change from run A to run B, the gates of each,
and the regressions beyond the limits a release gate sets (``aichaos compare A B --max-regression
p95_ms=10%``). Pure functions of two journals.

Metrics: ``p50_ms``, ``p95_ms``, ``p99_ms``, ``error_rate`` and ``rps`` of every phase the two runs
share (by name), ``time_to_detect_s`` and ``time_to_recover_s`` of their fault phases, and the
scraped metrics both recorded. Worse is higher, except for ``rps`` (a slower service sends fewer
requests back through a closed loop), where it is lower.

A limit is ``[PHASE.]METRIC=N%`` (B at most N% worse than A, relative to A's value) or
``[PHASE.]METRIC=N`` (at most N worse, in the metric's units: ms, a fraction for ``error_rate``,
seconds); ``recovery_time`` and ``detect_time`` name the fault results. Without a phase, the limit
holds in every shared phase. A value B lacks where A had one (too few successful requests for a
percentile, not recovered) is a regression beyond any limit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from aichaos.metrics import hypothesis
from aichaos.report.formats import Block, Message, Table
from aichaos.report.journal import Journal

REQUEST_METRICS = ("p50_ms", "p95_ms", "p99_ms", "error_rate", "rps")
FAULT_METRICS = ("time_to_detect_s", "time_to_recover_s")
ALIASES = {"recovery_time": "time_to_recover_s", "detect_time": "time_to_detect_s"}
LOWER_IS_WORSE = frozenset({"rps"})
_LIMIT = re.compile(r"^(?:(?P<phase>[A-Za-z0-9_-]+)\.)?(?P<metric>[A-Za-z0-9_/{}=\",.:-]+?)=(?P<value>[0-9.]+)"
                    r"(?P<pct>%?)$")


def format_value(metric: str, value: float | None) -> str:
    if value is not None and metric in FAULT_METRICS:
        return f"{value:.1f} s"
    return hypothesis.format_value(metric, value)


@dataclass(frozen=True)
class Limit:
    metric: str
    value: float
    relative: bool  # N% of A's value, else N in the metric's units
    phase: str | None = None
    text: str = ""


def parse_limit(text: str) -> Limit:
    """``p95_ms=10%``, ``fault.error_rate=0.02``, ``recovery_time=5``; ValueError saying what is wrong."""
    match = _LIMIT.match(text.strip())
    if match is None:
        raise ValueError(f"--max-regression {text!r}: expected [PHASE.]METRIC=N% or [PHASE.]METRIC=N, "
                         "e.g. p95_ms=10%")
    metric = ALIASES.get(match["metric"], match["metric"])
    try:
        value = float(match["value"])
    except ValueError:
        raise ValueError(f"--max-regression {text!r}: {match['value']!r} is not a number") from None
    return Limit(metric, value, bool(match["pct"]), match["phase"], text.strip())


@dataclass(frozen=True)
class Change:
    phase: str
    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def worse_by(self) -> float | None:
        """How much worse B is than A (negative: better); None when either has no value."""
        delta = self.delta
        if delta is None:
            return None
        return -delta if self.metric in LOWER_IS_WORSE else delta

    @property
    def relative(self) -> float | None:
        worse = self.worse_by
        if worse is None or self.a is None:
            return None
        if self.a == 0:
            return 0.0 if worse == 0 else math.copysign(math.inf, worse)
        return worse / abs(self.a)


@dataclass(frozen=True)
class Comparison:
    a: Journal
    b: Journal
    changes: list[Change]

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(c.metric for c in self.changes))


def compare(a: Journal, b: Journal) -> Comparison:
    """Every metric of every phase the two runs share."""
    changes: list[Change] = []
    b_phases = {p.name: p for p in b.phases}
    for phase in a.phases:
        other = b_phases.get(phase.name)
        if other is None:
            continue
        for metric in REQUEST_METRICS:
            changes.append(Change(phase.name, metric, None if phase.metrics is None else phase.metrics.get(metric),
                                  None if other.metrics is None else other.metrics.get(metric)))
        for key in phase.service_metrics:
            if key in other.service_metrics:
                changes.append(Change(phase.name, key, phase.service_metrics[key], other.service_metrics[key]))
    b_faults = {r.phase: r for r in b.fault_results}
    for result in a.fault_results:
        other_result = b_faults.get(result.phase)
        if other_result is None:
            continue
        changes.append(Change(result.phase, "time_to_detect_s", result.time_to_detect_s,
                              other_result.time_to_detect_s))
        # "not degraded" recovers in no time; "not recovered" has no value
        changes.append(Change(result.phase, "time_to_recover_s",
                              0.0 if result.degraded is False else result.time_to_recover_s,
                              0.0 if other_result.degraded is False else other_result.time_to_recover_s))
    return Comparison(a, b, changes)


def check_limits(comparison: Comparison, limits: list[Limit]) -> list[str]:
    """Each change beyond a limit, said in words; ValueError for a limit on a metric neither run has."""
    known = set(comparison.metrics())
    out = []
    for limit in limits:
        if limit.metric not in known:
            raise ValueError(f"--max-regression {limit.text!r}: no metric {limit.metric!r} in both runs "
                             f"(there are: {', '.join(sorted(known)) or 'none'})")
        matching = [c for c in comparison.changes if c.metric == limit.metric
                    and (limit.phase is None or c.phase == limit.phase)]
        if limit.phase is not None and not matching:
            raise ValueError(f"--max-regression {limit.text!r}: no phase {limit.phase!r} with {limit.metric} in "
                             "both runs")
        for change in matching:
            worse = change.relative if limit.relative else change.worse_by
            where = f"{change.phase} {change.metric}"
            if change.a is not None and change.b is None:
                out.append(f"{where}: {format_value(change.metric, change.a)} in A, no value in B (insufficient "
                           f"data or not recovered), beyond {limit.text}")
            elif worse is not None and worse > (limit.value / 100.0 if limit.relative else limit.value) + 1e-12:
                out.append(f"{where}: {format_value(change.metric, change.a)} -> "
                           f"{format_value(change.metric, change.b)} ({_change_text(change)}), beyond {limit.text}")
    return out


def _change_text(change: Change) -> str:
    delta = change.delta
    if delta is None:
        return "-"
    if change.metric == "error_rate":
        text = f"{delta * 100:+.2f} pp"
    elif change.metric.endswith("_ms"):
        text = f"{delta:+.1f} ms"
    elif change.metric.endswith("_s"):
        text = f"{delta:+.1f} s"
    else:
        text = f"{delta:+.4g}"
    relative = change.relative
    if relative is not None and change.a:
        text += f", {(-relative if change.metric in LOWER_IS_WORSE else relative):+.1%}"
    return text


def comparison_blocks(comparison: Comparison, regressions: list[str]) -> list[Block]:
    """What ``aichaos compare`` prints: the runs, a table of changes, each run's gates, then the
    regressions beyond the limits."""
    a, b = comparison.a, comparison.b
    out: list[Block] = [Message("info", f"A: run {a.run_id} ({a.experiment.get('name', '')}), verdict "
                                        f"{a.verdict.upper()}; B: run {b.run_id} ({b.experiment.get('name', '')}), "
                                        f"verdict {b.verdict.upper()}")]
    rows = []
    for change in comparison.changes:
        worse = change.worse_by
        mark = "" if worse is None or worse == 0 else ("worse" if worse > 0 else "better")
        if change.a is not None and change.b is None:
            mark = "no value in B"
        rows.append([change.phase, change.metric, format_value(change.metric, change.a),
                     format_value(change.metric, change.b), _change_text(change), mark])
    out.append(Table("Changes from A to B", ["phase", "metric", "A", "B", "change", ""], rows,
                     {"worse": "red", "no value in B": "bold red", "better": "green"}))
    gates: dict[str, list[str]] = {}
    for run, journal in (("A", a), ("B", b)):
        for g in journal.gates:
            name = f"{g.name}[{g.phase}]" if g.phase else g.name
            gates.setdefault(name, ["-", "-"])[0 if run == "A" else 1] = \
                f"{g.value} ({'pass' if g.passed else 'FAIL'})"
    if gates:
        out.append(Table("Gates", ["gate", "A", "B"], [[name, *values] for name, values in gates.items()]))
    out += [Message("error", f"regression: {r}") for r in regressions]
    return out
