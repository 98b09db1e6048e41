"""From a run's samples and timeline to its verdict: stop conditions, fault results, gates.

Pure functions over the per-second buckets, the scrapes and the windows of ``analysis``; the journal
(``aichaos.report.journal``) only records what they return, and the formats only present it.

- ``stop_condition``: while the run goes, whether a stop condition holds over the trailing seconds.
- ``analyse_run``: after it, every phase's metrics, the windows, each fault phase's time to detect,
  time to recover and degradation, and the gates.
- ``gate_results``: the gates over those windows and fault results.
- ``verdict_of``: the verdict and exit code from the run's status, stop and gates.

Verdicts (closed set): ``pass``, ``fail``, ``error``, ``interrupted``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aichaos.errors import ExitCode
from aichaos.experiment.model import Experiment
from aichaos.metrics.analysis import (
    Change,
    Metrics,
    Queries,
    Window,
    WindowStatus,
    degradation,
    error_budget_spent,
    metrics_of,
    queries_of,
    time_to_detect,
    time_to_recover,
    windows,
)
from aichaos.metrics.samples import Bucket
from aichaos.metrics.scrape import ScrapeStore, mean_value

Verdict = Literal["pass", "fail", "error", "interrupted"]


class PhaseTimes(Protocol):
    """When a phase ran (epoch seconds); the journal's phase records are such."""

    name: str
    start: float
    end: float


@dataclass
class GateResult:
    name: str
    passed: bool
    value: str
    limit: str
    phase: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "phase": self.phase, "passed": self.passed, "value": self.value,
                "limit": self.limit, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(name=data["name"], passed=bool(data["passed"]), value=data["value"], limit=data["limit"],
                   phase=data.get("phase", ""), detail=data.get("detail", ""))


@dataclass
class FaultResult:
    phase: str
    faults: list[str]
    start: float
    revert: float
    time_to_detect_s: float | None
    time_to_recover_s: float | None
    degradation: dict[str, Change]
    # False when no window was violated from the fault's start to the run's end: there was nothing
    # to recover from, and time to recover is "not degraded" rather than 0 s
    degraded: bool | None = None  # None: a journal from before this was recorded
    revert_s: float | None = None  # how long the revert itself took (a restart, a readiness wait)

    def to_json(self) -> dict[str, Any]:
        out = {"phase": self.phase, "faults": self.faults, "start": self.start, "revert": self.revert,
               "time_to_detect_s": self.time_to_detect_s, "time_to_recover_s": self.time_to_recover_s,
               "degradation": {k: v.to_json() for k, v in self.degradation.items()}}
        if self.degraded is not None:
            out["degraded"] = self.degraded
        if self.revert_s is not None:
            out["revert_s"] = self.revert_s
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultResult:
        return cls(phase=data["phase"], faults=list(data["faults"]), start=data["start"], revert=data["revert"],
                   time_to_detect_s=data["time_to_detect_s"], time_to_recover_s=data["time_to_recover_s"],
                   degradation={k: Change.from_json(v) for k, v in data["degradation"].items()},
                   degraded=data.get("degraded"), revert_s=data.get("revert_s"))


# ---------------------------------------------------------------- while the run goes
def stop_condition(experiment: Experiment, buckets: Mapping[int, Bucket], end: int,
                   scrapes: ScrapeStore | None = None, queries: Queries | None = None) -> str | None:
    """The first stop condition that holds over the trailing complete seconds before ``end``, or None.

    A request metric needs ``min_requests`` in the span; a scraped one holds when every scrape in
    the span is past the threshold (a gauge's lowest value is above it, or its highest below it).
    """
    for condition in experiment.stop_when:
        for metric, threshold in condition.conditions().items():
            width = max(1, round(threshold.for_))
            m = metrics_of(buckets, end - width, end, scrapes, queries, experiment.steady_state.min_requests)
            if "/" not in metric and m.count < experiment.steady_state.min_requests:
                continue
            if threshold.above is not None:
                value = m.lowest(metric)
                if value is not None and value > threshold.above:
                    return f"{metric} = {value:.4g} above {threshold.above:g} for {width}s"
            if threshold.below is not None:
                value = m.get(metric)
                if value is not None and value < threshold.below:
                    return f"{metric} = {value:.4g} below {threshold.below:g} for {width}s"
    return None


def baseline_problem(experiment: Experiment, buckets: Mapping[int, Bucket], start: int, end: int,
                     scrapes: ScrapeStore | None = None) -> str | None:
    """Why the baseline in the complete seconds [start, end) is not steady, or None when it is.

    Steady state before the method (Chaos Toolkit's hypothesis check): the baseline must have a
    steady window (when it is long enough to hold one) and an error rate within the SLO's bound,
    the default one included. Said with the baseline's figures."""
    steady = experiment.steady_state
    queries = queries_of(experiment)
    base = metrics_of(buckets, start, end, scrapes, queries, steady.min_requests)
    wins = windows(buckets, start, end, int(steady.window), steady.min_requests, steady.slo, base, scrapes, queries)
    problems = []
    if wins and not any(w.status is WindowStatus.STEADY for w in wins):
        violated = [w for w in wins if w.status is WindowStatus.VIOLATED]
        what = f"none of its {len(wins)} windows was steady"
        if violated:
            what += f" (first broken: {', '.join(violated[0].broken)})"
        else:
            what += f" (each had fewer than {steady.min_requests} requests)"
        problems.append(what)
    bound = steady.slo.judged_bounds()["error_rate"].max
    if bound is not None and base.count >= steady.min_requests and base.error_rate > bound:
        errors = ", ".join(f"{kind} {n}" for kind, n in sorted(base.errors.items(), key=lambda kv: -kv[1]))
        problems.append(f"its error rate was {base.error_rate:.2%}, over the bound of {bound:.2%} ({errors})")
    if not problems:
        return None
    p95 = "insufficient data" if base.p95_ms is None else f"{base.p95_ms:.1f} ms"
    return (f"the baseline was not steady: {'; '.join(problems)}; {base.count} requests at {base.rps:.1f}/s, "
            f"p95 {p95}")


# ---------------------------------------------------------------- after it
@dataclass(frozen=True)
class PhaseAnalysis:
    metrics: Metrics
    error_budget_spent: float | None
    offered_rps: float | None  # the paced rate the plan asked for; None for a closed loop
    users: float | None  # mean users the load process reported running
    # what the load should have sent: the paced rate, or for a closed loop the baseline's rate per
    # user times this phase's users; achieved well under it means the load slowed with the service
    expected_rps: float | None
    service_metrics: dict[str, float | None]  # each scraped metric's summary (see ``service_summary``)

    @property
    def load_ratio(self) -> float | None:
        if not self.expected_rps:
            return None
        return self.metrics.rps / self.expected_rps


@dataclass(frozen=True)
class RunAnalysis:
    analysis_start: int  # t0 plus the warm-up: the first second the analysis reads
    baseline: Metrics
    phases: list[PhaseAnalysis]
    error_budget_spent: float | None
    windows: list[Window]
    fault_results: list[FaultResult]
    gates: list[GateResult] = field(default_factory=list)


def phase_span(phases: Sequence[PhaseTimes], index: int, analysis_start: int) -> tuple[int, int]:
    """The seconds [start, end) the analysis reads for a phase: the first starts after the warm-up."""
    phase = phases[index]
    return (analysis_start if index == 0 else int(phase.start)), int(phase.end)


def service_summary(scrapes: ScrapeStore, queries: Queries, start: int, end: int) -> dict[str, float | None]:
    """Each scraped metric over [start, end) as a report shows it: a gauge's mean, a counter's rate
    per second, a ratio of increases; None without scrapes to say."""
    return {key: mean_value(scrapes, service, query, start, end) for key, (service, query) in queries.items()}


def analyse_run(experiment: Experiment, t0: float, phases: Sequence[PhaseTimes], faults: Sequence[Mapping[str, Any]],
                buckets: Mapping[int, Bucket], users: Mapping[int, int], offered: Mapping[int, float],
                scrapes: ScrapeStore, stop: str | None) -> RunAnalysis:
    """Everything the verdict rests on, from the samples and the timeline of a run that reached t0.

    ``faults`` are the applied faults' records (``phase``, ``description``, ``applied_at``,
    ``reverted_at``); ``users`` and ``offered`` are by second.
    """
    if not phases:
        raise ValueError("a run with no phase has nothing to analyse")
    steady = experiment.steady_state
    width = int(steady.window)
    analysis_start = int(t0 + steady.warmup)
    queries = queries_of(experiment)
    minimum = steady.min_requests
    baseline = metrics_of(buckets, analysis_start, int(phases[0].end), scrapes, queries, minimum)
    measured: list[tuple[Metrics, float | None, float | None, dict[str, float | None]]] = []
    for index in range(len(phases)):
        start, end = phase_span(phases, index, analysis_start)
        seconds_offered = [offered[s] for s in range(start, end) if s in offered]
        seconds_users = [users[s] for s in range(start, end) if s in users]
        measured.append((
            metrics_of(buckets, start, end, scrapes, queries, minimum),
            sum(seconds_offered) / len(seconds_offered)
            if seconds_offered and len(seconds_offered) == end - start else None,
            sum(seconds_users) / len(seconds_users) if seconds_users else None,
            service_summary(scrapes, queries, start, end)))
    first_users = measured[0][2]
    per_user = baseline.rps / first_users if first_users else None
    analysed = []
    for metrics, offered_rps, phase_users, service in measured:
        expected = offered_rps
        if expected is None and per_user is not None and phase_users is not None:
            expected = per_user * phase_users
        analysed.append(PhaseAnalysis(metrics, error_budget_spent(metrics, steady.slo), offered_rps, phase_users,
                                      expected, service))
    run_end = int(phases[-1].end)
    wins = windows(buckets, analysis_start, run_end, width, steady.min_requests, steady.slo, baseline,
                   scrapes, queries)
    results = fault_results(phases, [p.metrics for p in analysed], faults, wins, baseline, width)
    return RunAnalysis(
        analysis_start=analysis_start, baseline=baseline, phases=analysed,
        error_budget_spent=error_budget_spent(metrics_of(buckets, analysis_start, run_end, min_samples=minimum),
                                              steady.slo),
        windows=wins, fault_results=results,
        gates=gate_results(experiment, phases[0], wins, results, stop,
                           {p.name: a.metrics for p, a in zip(phases, analysed, strict=True)}, baseline))


def fault_results(phases: Sequence[PhaseTimes], metrics: Sequence[Metrics], faults: Sequence[Mapping[str, Any]],
                  wins: list[Window], baseline: Metrics, width: int) -> list[FaultResult]:
    """Time to detect, time to recover and degradation of every phase that applied faults.

    Detection counts from the first fault's start. Recovery counts from the end of the fault phase,
    the moment the revert begins, whatever the revert then does (a restart and its readiness wait,
    an unpause): errors while a killed service comes back are part of the recovery, not hidden
    before it. A fault phase after which no window was ever violated is "not degraded"."""
    out = []
    for phase, phase_metrics in zip(phases, metrics, strict=True):
        applied = [f for f in faults if f["phase"] == phase.name]
        if not applied:
            continue
        start = min(f["applied_at"] for f in applied)
        revert = phase.end
        reverted = [f["reverted_at"] for f in applied if f.get("reverted_at") is not None]
        revert_s = round(max(reverted) - revert, 3) if reverted and len(reverted) == len(applied) else None
        degraded = any(w.status is WindowStatus.VIOLATED and w.end > int(start) for w in wins)
        out.append(FaultResult(
            phase=phase.name, faults=[f["description"] for f in applied], start=start, revert=revert,
            time_to_detect_s=time_to_detect(wins, start, revert),
            time_to_recover_s=time_to_recover(wins, revert, width) if degraded else None,
            degradation=degradation(baseline, phase_metrics), degraded=degraded,
            revert_s=None if revert_s is None else max(0.0, revert_s)))
    return out


def _fmt_s(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}s"


def _no_value(metric: str, change: Change, fault: Metrics | None, baseline: Metrics | None) -> str:
    """Why a degradation has no value: which side had too few successful requests, or no data."""
    reasons = []
    for side, value, metrics in (("baseline", change.baseline, baseline), ("fault phase", change.fault, fault)):
        if value is not None:
            continue
        if metrics is not None and metric.endswith("_ms") and metrics.insufficient:
            reasons.append(f"insufficient data in the {side}: {metrics.latency_samples} successful of "
                           f"{metrics.count} requests, a percentile needs {metrics.min_samples}")
        else:
            reasons.append(f"no data in the {side}")
    return "; ".join(reasons) or "no data to compare"


def gate_results(experiment: Experiment, baseline_phase: PhaseTimes | None, wins: Sequence[Window],
                 results: Sequence[FaultResult], stop: str | None,
                 phase_metrics: Mapping[str, Metrics] | None = None,
                 baseline_metrics: Metrics | None = None) -> list[GateResult]:
    """Every gate the experiment names, evaluated; a fired stop condition is a failed gate too.

    A degradation without a value (too few successful requests for a percentile on either side, or
    no data) fails, and says why; so it does whether 0 or 1 request survived the fault."""
    phase_metrics = phase_metrics or {}
    gates = experiment.gates
    out: list[GateResult] = []
    if gates.baseline_steady and baseline_phase is not None:
        base = [w for w in wins if w.end <= int(baseline_phase.end)]
        steady = sum(1 for w in base if w.status is WindowStatus.STEADY)
        unknown = sum(1 for w in base if w.status is WindowStatus.UNKNOWN)
        detail = f"{steady} of {len(base)} baseline windows steady"
        if unknown:
            detail += f", {unknown} unknown (fewer than {experiment.steady_state.min_requests} requests)"
        out.append(GateResult("baseline_steady", steady > 0, f"{steady}/{len(base)} steady",
                              "at least one steady window", baseline_phase.name, detail))
    for result in results:
        if gates.recovery_time is not None:
            ttr = result.time_to_recover_s
            within = f"<= {gates.recovery_time.max:g}s"
            if result.degraded is False:
                out.append(GateResult("recovery_time", True, "not degraded", within, result.phase,
                                      "no window was violated from the fault on: nothing to recover from"))
            else:
                out.append(GateResult("recovery_time", ttr is not None and ttr <= gates.recovery_time.max,
                                      _fmt_s(ttr), within, result.phase,
                                      "" if ttr is not None else "steady state did not return before the run ended"))
        if gates.detect_time is not None:
            ttd = result.time_to_detect_s
            out.append(GateResult("detect_time", ttd is None or ttd <= gates.detect_time.max,
                                  _fmt_s(ttd) if ttd is not None else "no violation",
                                  f"<= {gates.detect_time.max:g}s", result.phase,
                                  "" if ttd is not None else "the SLO held through the fault"))
        if gates.degradation is not None:
            for metric, limit in gates.degradation.limits().items():
                change = result.degradation[metric]
                ok = change.ratio is not None and change.delta is not None
                parts = []
                if limit.max_ratio is not None:
                    ok = ok and change.ratio is not None and change.ratio <= limit.max_ratio
                    parts.append(f"ratio <= {limit.max_ratio:g}")
                if limit.max_delta is not None:
                    ok = ok and change.delta is not None and change.delta <= limit.max_delta
                    parts.append(f"delta <= {limit.max_delta:g}")
                value = ("insufficient data" if change.ratio is None else f"x{change.ratio:.2f}") + \
                    ("" if change.delta is None else f" ({change.delta:+.4g})")
                out.append(GateResult(f"degradation.{metric}", ok, value, ", ".join(parts), result.phase,
                                      "" if change.ratio is not None else _no_value(metric, change, phase_metrics
                                                                                    .get(result.phase),
                                                                                    baseline_metrics)))
    if stop:
        out.append(GateResult("stop_when", False, stop, "no stop condition", "", "the run was aborted"))
    return out


def verdict_of(status: str, stop: str | None, gates: Sequence[GateResult], exit_code: int) -> tuple[Verdict, int]:
    """The verdict and exit code of a run that ended with ``status`` (``completed``, ``aborted``,
    ``interrupted``, ``error``, or still ``running`` when it ended unexpectedly); ``exit_code`` is
    the one an environment failure already set, kept for ``error``."""
    if status == "interrupted":
        return "interrupted", ExitCode.INTERRUPTED
    if status in ("error", "running"):
        return "error", exit_code or ExitCode.ENVIRONMENT
    if stop or any(not g.passed for g in gates):
        return "fail", ExitCode.GATE_FAILED
    return "pass", ExitCode.OK
