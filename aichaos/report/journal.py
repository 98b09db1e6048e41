"""The journal: the versioned JSON record of one run, its reader, and ``analyse``, which records
the verdict that ``aichaos.metrics.verdict`` computes from the run's samples and timeline.

The journal is the one record of a run: every report format is a pure function of it
(``aichaos.report.formats``), so ``aichaos report`` re-renders a past run exactly as the run did.

Statuses (closed set): ``completed`` (all phases ran), ``aborted`` (a stop condition fired),
``interrupted`` (SIGINT/SIGTERM), ``error`` (the environment failed: the stack, the proxy, a fault
that could not be injected or reverted). Verdicts: ``pass``, ``fail``, ``error``, ``interrupted``.

Versions: 2 added scraped service metrics, offered rate, users and error budget per phase; 3 adds
each phase's scraped-metric summary (``service_metrics``) and the load ratio as recorded, so that
reports read them instead of recomputing; 4 adds how each bound of the SLO fared (``slos``, from
``aichaos.metrics.hypothesis``), which JUnit shows as one test case each. ``read_journal`` reads
versions 2 to 4 (a version 2 journal gets its summaries computed from its scrapes, as the reports of
that version did; journals before 4 have no ``slos`` and render without those test cases, as their
runs wrote them).
Version 1 journals are refused: their runs printed other tables, which cannot be reproduced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aichaos import __version__
from aichaos.errors import EnvironmentFailure, ExitCode, UsageError
from aichaos.experiment.loader import LoadedExperiment
from aichaos.experiment.model import Experiment
from aichaos.metrics.analysis import Metrics, Window
from aichaos.metrics.hypothesis import SloResult, slo_results
from aichaos.metrics.samples import Bucket
from aichaos.metrics.scrape import ScrapeStore, parse_selector
from aichaos.metrics.verdict import (
    FaultResult,
    GateResult,
    analyse_run,
    gate_results,
    phase_span,
    service_summary,
    verdict_of,
)

__all__ = ["JOURNAL_VERSION", "READABLE_VERSIONS", "FaultResult", "GateResult", "Journal", "PhaseRecord",
           "analyse", "evaluate_gates", "read_journal"]

JOURNAL_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)


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
    load_ratio: float | None = None  # achieved against expected rate
    service_metrics: dict[str, float | None] = field(default_factory=dict)  # gauge: mean, counter: per s

    def to_json(self, t0: float) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "end": self.end, "start_offset_s": self.start - t0,
                "end_offset_s": self.end - t0, "metrics": self.metrics.to_json() if self.metrics else None,
                "offered_rps": None if self.offered_rps is None else round(self.offered_rps, 3),
                "users": None if self.users is None else round(self.users, 2),
                "error_budget_spent": None if self.error_budget_spent is None else round(self.error_budget_spent, 4),
                "expected_rps": None if self.expected_rps is None else round(self.expected_rps, 3),
                "load_ratio": None if self.load_ratio is None else round(self.load_ratio, 4),
                "service_metrics": self.service_metrics}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PhaseRecord:
        metrics = data["metrics"]
        return cls(name=data["name"], start=data["start"], end=data["end"],
                   metrics=None if metrics is None else Metrics.from_json(metrics),
                   offered_rps=data["offered_rps"], users=data["users"],
                   error_budget_spent=data["error_budget_spent"], expected_rps=data["expected_rps"],
                   load_ratio=data["load_ratio"], service_metrics=dict(data.get("service_metrics", {})))


@dataclass
class Journal:
    run_id: str
    run_dir: Path
    experiment_file: str
    stack_file: str
    experiment: dict[str, Any]
    aichaos_version: str = __version__  # of the aichaos that wrote it
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
    # the rules the verdict was judged by: the hypothesis, the minimum samples of a percentile, the
    # error bound and whether it was the default (absent from journals written before them)
    rules: dict[str, Any] = field(default_factory=dict)
    slos: list[SloResult] = field(default_factory=list)  # each judged bound of the SLO (version 4 on)

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
        self.verdict, self.exit_code = verdict_of(self.status, self.stop, self.gates, self.exit_code)

    def to_json(self) -> dict[str, Any]:
        t0 = self.t0 or self.started_at
        return {
            "journal_version": JOURNAL_VERSION,
            "aichaos_version": self.aichaos_version,
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
            **({"rules": self.rules} if self.rules else {}),
            **({"slos": [r.to_json() for r in self.slos]} if self.slos else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Journal:
        """The journal that ``to_json`` wrote, of any version in ``READABLE_VERSIONS``.

        ValueError, saying what is wrong, for anything else.
        """
        if not isinstance(data, Mapping) or "journal_version" not in data:
            raise ValueError("not an aichaos journal (no journal_version)")
        version = data["journal_version"]
        if version not in READABLE_VERSIONS:
            newer = isinstance(version, int) and version > JOURNAL_VERSION
            raise ValueError(f"journal version {version!r} cannot be read by aichaos {__version__}, which reads "
                             f"versions {READABLE_VERSIONS[0]} to {READABLE_VERSIONS[-1]}"
                             + (" (it was written by a newer aichaos)" if newer else ""))
        try:
            journal = cls._from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"journal version {version} is malformed: {what}") from exc
        if version == 2:
            _add_service_metrics(journal)
        return journal

    @classmethod
    def _from_json(cls, data: Mapping[str, Any]) -> Journal:
        baseline = data["baseline"]
        return cls(
            run_id=data["run_id"], run_dir=Path(data["run_dir"]), experiment_file=data["experiment_file"],
            stack_file=data["stack_file"], experiment=dict(data["experiment"]),
            aichaos_version=data["aichaos_version"], started_at=data["started_at"], ended_at=data["ended_at"],
            t0=data["t0"], analysis_start=data["analysis_start"], status=data["status"], verdict=data["verdict"],
            exit_code=data["exit_code"], environment=dict(data["environment"]), services=dict(data["services"]),
            proxies=dict(data["proxies"]), stack_ready_s=data["stack_ready_s"],
            phases=[PhaseRecord.from_json(p) for p in data["phases"]],
            events=list(data["events"]), faults=list(data["faults"]),
            samples={b.second: b for b in (Bucket.from_json(b) for b in data["samples"])},
            users={int(e["second"]): e["users"] for e in data["users"]},
            offered={int(e["second"]): e["rate"] for e in data["offered_rps"]},
            rules=dict(data.get("rules") or {}),
            slos=[SloResult.from_json(r) for r in data.get("slos") or ()],
            scrapes=ScrapeStore.from_json(data["scrapes"]),
            error_budget_spent=data["error_budget_spent"],
            baseline=None if baseline is None else Metrics.from_json(baseline),
            windows=[Window.from_json(w) for w in data["windows"]],
            fault_results=[FaultResult.from_json(r) for r in data["fault_results"]],
            gates=[GateResult.from_json(g) for g in data["gates"]],
            stop=data["stop"], errors=list(data["errors"]), leftovers=list(data["leftovers"]),
            load_totals=dict(data["load_totals"]))

    @property
    def path(self) -> Path:
        return self.run_dir / "journal.json"

    def dumps(self) -> str:
        """The journal file's text."""
        return json.dumps(self.to_json(), indent=1)

    def write(self) -> Path:
        """Write ``journal.json`` whole or not at all; EnvironmentFailure (a full disk) leaves no partial file."""
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(self.dumps())
            tmp.replace(self.path)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise EnvironmentFailure(f"cannot write the journal {self.path}: {exc.strerror or exc}") from exc
        return self.path


def read_journal(path: Path) -> Journal:
    """The journal at ``path`` (a journal file, or a run directory holding ``journal.json``).

    UsageError (exit 2), naming the file, when it is missing, unreadable, not a journal, or of a
    version this aichaos cannot read.
    """
    if path.is_dir() and (path / "journal.json").is_file():
        path = path / "journal.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="give a run's journal.json or its run directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read {path}: {why}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not an aichaos journal (not JSON: {exc.msg} at line {exc.lineno})") from None
    try:
        return Journal.from_json(data)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _add_service_metrics(journal: Journal) -> None:
    """Version 2 journals did not record each phase's scraped-metric summary: compute it from the
    scrapes the way the reports of that version did (for the metrics the baseline measured)."""
    if journal.baseline is None:
        return
    queries = {}
    for key in journal.baseline.scraped:
        service, _, selector = key.partition("/")
        queries[key] = (service, parse_selector(selector))
    for index, phase in enumerate(journal.phases):
        start, end = phase_span(journal.phases, index, journal.analysis_start)
        phase.service_metrics = service_summary(journal.scrapes, queries, start, end)


def analyse(journal: Journal, experiment: Experiment) -> None:
    """Record in the journal the metrics, windows, fault results and gates of its samples and timeline
    (computed by ``aichaos.metrics.verdict.analyse_run``). Nothing to do for a run that never reached t0."""
    if journal.t0 is None or not journal.phases:
        return
    result = analyse_run(experiment, journal.t0, journal.phases, journal.faults, journal.samples, journal.users,
                         journal.offered, journal.scrapes, journal.stop)
    journal.analysis_start = result.analysis_start
    slo = experiment.steady_state.slo
    journal.rules = {"hypothesis": experiment.description, "min_samples": experiment.steady_state.min_requests,
                     "error_rate_max": slo.judged_bounds()["error_rate"].max,
                     "error_rate_default": slo.error_rate_is_default}
    journal.baseline = result.baseline
    for record, phase in zip(journal.phases, result.phases, strict=True):
        record.metrics = phase.metrics
        record.error_budget_spent = phase.error_budget_spent
        record.offered_rps = phase.offered_rps
        record.users = phase.users
        record.expected_rps = phase.expected_rps
        record.load_ratio = phase.load_ratio
        record.service_metrics = phase.service_metrics
    journal.error_budget_spent = result.error_budget_spent
    journal.windows = result.windows
    journal.fault_results = result.fault_results
    journal.gates = result.gates
    journal.slos = slo_results(slo, result.baseline, [(p.name, p.metrics) for p in journal.phases],
                               result.windows, int(journal.phases[0].end))


def evaluate_gates(journal: Journal, experiment: Experiment) -> list[GateResult]:
    """The experiment's gates over what the journal recorded (see ``aichaos.metrics.verdict.gate_results``)."""
    return gate_results(experiment, journal.phases[0] if journal.phases else None, journal.windows,
                        journal.fault_results, journal.stop,
                        {p.name: p.metrics for p in journal.phases if p.metrics is not None}, journal.baseline)
