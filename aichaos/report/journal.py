"""The journal: the versioned JSON record of one run, and the analysis that fills its verdict.

Statuses (closed set): ``completed`` (all phases ran), ``aborted`` (a stop condition fired),
``interrupted`` (SIGINT/SIGTERM), ``error`` (the environment failed: the stack, the proxy, a fault
that could not be injected or reverted). Verdicts: ``pass``, ``fail``, ``error``, ``interrupted``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aichaos import __version__
from aichaos.errors import ExitCode
from aichaos.experiment.loader import LoadedExperiment
from aichaos.experiment.model import Experiment
from aichaos.metrics.analysis import (
    Change,
    Metrics,
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
from aichaos.metrics.scrape import ScrapeStore

JOURNAL_VERSION = 2  # 2: scraped service metrics, offered rate, users and error budget per phase


@dataclass
class PhaseRecord:
    name: str
    start: float
    end: float
    metrics: Metrics | None = None
    offered_rps: float | None = None  # the paced rate the plan asked for; None for a closed loop
    users: float | None = None  # mean users the load process reported running
    error_budget_spent: float | None = None
    # what the load should have sent: the paced rate, or for a closed loop the baseline's rate per
    # user times this phase's users; achieved well under it means the load slowed with the service
    expected_rps: float | None = None

    @property
    def load_ratio(self) -> float | None:
        if self.metrics is None or not self.expected_rps:
            return None
        return self.metrics.rps / self.expected_rps

    def to_json(self, t0: float) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "end": self.end, "start_offset_s": self.start - t0,
                "end_offset_s": self.end - t0, "metrics": self.metrics.to_json() if self.metrics else None,
                "offered_rps": None if self.offered_rps is None else round(self.offered_rps, 3),
                "users": None if self.users is None else round(self.users, 2),
                "error_budget_spent": None if self.error_budget_spent is None else round(self.error_budget_spent, 4),
                "expected_rps": None if self.expected_rps is None else round(self.expected_rps, 3),
                "load_ratio": None if self.load_ratio is None else round(self.load_ratio, 4)}


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


@dataclass
class FaultResult:
    phase: str
    faults: list[str]
    start: float
    revert: float
    time_to_detect_s: float | None
    time_to_recover_s: float | None
    degradation: dict[str, Change]

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "faults": self.faults, "start": self.start, "revert": self.revert,
                "time_to_detect_s": self.time_to_detect_s, "time_to_recover_s": self.time_to_recover_s,
                "degradation": {k: v.to_json() for k, v in self.degradation.items()}}


@dataclass
class Journal:
    run_id: str
    run_dir: Path
    experiment_file: str
    stack_file: str
    experiment: dict[str, Any]
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    t0: float | None = None
    analysis_start: int = 0  # t0 plus the warm-up: the first second the analysis reads
    status: str = "running"
    verdict: str = ""
    exit_code: int = ExitCode.OK
    environment: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)
    proxies: dict[str, Any] = field(default_factory=dict)
    stack_ready_s: float | None = None
    phases: list[PhaseRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[int, Bucket] = field(default_factory=dict)
    users: dict[int, int] = field(default_factory=dict)  # users running, by second
    offered: dict[int, float] = field(default_factory=dict)  # paced rate the plan asked for, by second
    scrapes: ScrapeStore = field(default_factory=ScrapeStore)
    error_budget_spent: float | None = None
    baseline: Metrics | None = None
    windows: list[Window] = field(default_factory=list)
    fault_results: list[FaultResult] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    stop: str | None = None
    errors: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    load_totals: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, run_id: str, run_dir: Path, loaded: LoadedExperiment) -> Journal:
        return cls(run_id=run_id, run_dir=run_dir, experiment_file=str(loaded.path),
                   stack_file=str(loaded.stack_path),
                   experiment=loaded.experiment.model_dump(mode="json", by_alias=True))

    def event(self, kind: str, phase: str, detail: str, at: float) -> None:
        self.events.append({"time": at, "kind": kind, "phase": phase, "detail": detail})

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def finish(self) -> None:
        self.ended_at = time.time()
        if self.status == "interrupted":
            self.verdict, self.exit_code = "interrupted", ExitCode.INTERRUPTED
        elif self.status == "error" or self.status == "running":
            self.verdict = "error"
            self.exit_code = self.exit_code or ExitCode.ENVIRONMENT
        elif self.stop or self.failed_gates:
            self.verdict, self.exit_code = "fail", ExitCode.GATE_FAILED
        else:
            self.verdict, self.exit_code = "pass", ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        t0 = self.t0 or self.started_at
        return {
            "journal_version": JOURNAL_VERSION,
            "aichaos_version": __version__,
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "experiment_file": self.experiment_file,
            "stack_file": self.stack_file,
            "experiment": self.experiment,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "t0": self.t0,
            "analysis_start": self.analysis_start,
            "status": self.status,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "environment": self.environment,
            "services": self.services,
            "proxies": self.proxies,
            "stack_ready_s": self.stack_ready_s,
            "phases": [p.to_json(t0) for p in self.phases],
            "events": self.events,
            "faults": self.faults,
            "baseline": self.baseline.to_json() if self.baseline else None,
            "fault_results": [r.to_json() for r in self.fault_results],
            "gates": [g.to_json() for g in self.gates],
            "stop": self.stop,
            "errors": self.errors,
            "leftovers": self.leftovers,
            "load_totals": self.load_totals,
            "error_budget_spent": None if self.error_budget_spent is None else round(self.error_budget_spent, 4),
            "windows": [w.to_json() for w in self.windows],
            "samples": [b.to_json() for _, b in sorted(self.samples.items())],
            "users": [{"second": s, "users": u} for s, u in sorted(self.users.items())],
            "offered_rps": [{"second": s, "rate": r} for s, r in sorted(self.offered.items())],
            "scrapes": self.scrapes.to_json(),
        }

    @property
    def path(self) -> Path:
        return self.run_dir / "journal.json"

    def write(self) -> Path:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(self.path)
        return self.path


def _fmt_s(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}s"


def analyse(journal: Journal, experiment: Experiment) -> None:
    """Fill metrics, windows, fault results and gates from the journal's samples and timeline."""
    if journal.t0 is None or not journal.phases:
        return
    buckets = journal.samples
    steady = experiment.steady_state
    width = int(steady.window)
    t0 = journal.t0
    first = journal.phases[0]
    analysis_start = int(t0 + steady.warmup)
    journal.analysis_start = analysis_start
    baseline_end = int(first.end)
    queries = queries_of(experiment)
    scrapes = journal.scrapes
    journal.baseline = metrics_of(buckets, analysis_start, baseline_end, scrapes, queries)
    for phase in journal.phases:
        start = analysis_start if phase is first else int(phase.start)
        end = int(phase.end)
        phase.metrics = metrics_of(buckets, start, end, scrapes, queries)
        phase.error_budget_spent = error_budget_spent(phase.metrics, steady.slo)
        offered = [journal.offered[s] for s in range(start, end) if s in journal.offered]
        phase.offered_rps = sum(offered) / len(offered) if offered and len(offered) == end - start else None
        users = [journal.users[s] for s in range(start, end) if s in journal.users]
        phase.users = sum(users) / len(users) if users else None
    per_user = journal.baseline.rps / first.users if first.users else None
    for phase in journal.phases:
        if phase.offered_rps is not None:
            phase.expected_rps = phase.offered_rps
        elif per_user is not None and phase.users is not None:
            phase.expected_rps = per_user * phase.users
    run_end = int(journal.phases[-1].end)
    journal.error_budget_spent = error_budget_spent(metrics_of(buckets, analysis_start, run_end), steady.slo)
    journal.windows = windows(buckets, analysis_start, run_end, width, steady.min_requests, steady.slo,
                              journal.baseline, scrapes, queries)

    for phase in journal.phases:
        faults = [f for f in journal.faults if f["phase"] == phase.name]
        if not faults or phase.metrics is None:
            continue
        start = min(f["applied_at"] for f in faults)
        revert = max((f["reverted_at"] or phase.end) for f in faults)
        journal.fault_results.append(FaultResult(
            phase=phase.name, faults=[f["description"] for f in faults], start=start, revert=revert,
            time_to_detect_s=time_to_detect(journal.windows, start, revert),
            time_to_recover_s=time_to_recover(journal.windows, revert, width),
            degradation=degradation(journal.baseline, phase.metrics)))
    journal.gates = evaluate_gates(journal, experiment)


def evaluate_gates(journal: Journal, experiment: Experiment) -> list[GateResult]:
    gates = experiment.gates
    out: list[GateResult] = []
    if gates.baseline_steady and journal.phases:
        first = journal.phases[0]
        base = [w for w in journal.windows if w.end <= int(first.end)]
        steady = sum(1 for w in base if w.status is WindowStatus.STEADY)
        unknown = sum(1 for w in base if w.status is WindowStatus.UNKNOWN)
        detail = f"{steady} of {len(base)} baseline windows steady"
        if unknown:
            detail += f", {unknown} unknown (fewer than {experiment.steady_state.min_requests} requests)"
        out.append(GateResult("baseline_steady", steady > 0, f"{steady}/{len(base)} steady",
                              "at least one steady window", first.name, detail))
    for result in journal.fault_results:
        if gates.recovery_time is not None:
            ttr = result.time_to_recover_s
            out.append(GateResult("recovery_time", ttr is not None and ttr <= gates.recovery_time.max,
                                  _fmt_s(ttr), f"<= {gates.recovery_time.max:g}s", result.phase,
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
                value = ("n/a" if change.ratio is None else f"x{change.ratio:.2f}") + \
                    ("" if change.delta is None else f" ({change.delta:+.4g})")
                out.append(GateResult(f"degradation.{metric}", ok, value, ", ".join(parts), result.phase,
                                      "" if change.ratio is not None else "no data to compare"))
    if journal.stop:
        out.append(GateResult("stop_when", False, journal.stop, "no stop condition", "", "the run was aborted"))
    return out
