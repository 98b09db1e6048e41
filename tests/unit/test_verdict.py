"""Stop conditions, gates and the verdict as pure functions over hand-made series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from aichaos.errors import ExitCode
from aichaos.experiment.model import Experiment
from aichaos.metrics.analysis import queries_of
from aichaos.metrics.histogram import bucket_of
from aichaos.metrics.samples import Bucket
from aichaos.metrics.scrape import ScrapeStore
from aichaos.metrics.verdict import GateResult, analyse_run, gate_results, stop_condition, verdict_of

T = 3_000_000


def experiment(**extra: Any) -> Experiment:
    return Experiment.model_validate({
        "version": 1, "name": "x", "stack": "s",
        "load": {"target": "gw", "users": 1, "requests": [{"name": "a", "path": "/"}]},
        "steady_state": {"window": "1s", "warmup": "0s", "min_requests": 5, "slo": {"p95_ms": {"max": 100}}},
        "phases": [{"name": "baseline", "duration": 3}, {"name": "fault", "duration": 3}], **extra})


def seconds(*spec: tuple[int, float, int]) -> dict[int, Bucket]:
    """(count, latency ms, errors) per second, starting at T."""
    out = {}
    for i, (count, ms, errors) in enumerate(spec):
        ok = count - errors
        out[T + i] = Bucket(T + i, count, {"5xx": errors} if errors else {}, {bucket_of(ms): ok} if ok else {})
    return out


def test_a_request_metric_fires_over_the_trailing_seconds_only_with_enough_requests():
    e = experiment(stop_when=[{"error_rate": {"above": 0.5, "for": "2s"}}])
    buckets = seconds((10, 5, 0), (10, 5, 9), (10, 5, 8), (2, 5, 2))
    assert stop_condition(e, buckets, T + 2) is None  # [T, T+2): 9 errors of 20
    assert stop_condition(e, buckets, T + 3) == "error_rate = 0.85 above 0.5 for 2s"
    assert stop_condition(e, seconds((2, 5, 2), (2, 5, 2)), T + 2) is None  # 4 requests < min_requests


def test_a_latency_below_threshold_and_the_first_condition_that_holds_wins():
    e = experiment(stop_when=[{"p95_ms": {"below": 1, "for": "1s"}}, {"p50_ms": {"above": 50}}])
    fired = stop_condition(e, seconds((10, 80, 0)), T + 1)
    assert fired is not None and fired.startswith("p50_ms = 79.9") and fired.endswith(" above 50 for 1s")
    fired = stop_condition(e, seconds((10, 0.5, 0)), T + 1)
    assert fired is not None and fired.startswith("p95_ms = 0.49") and fired.endswith(" below 1 for 1s")


def test_a_scraped_gauge_fires_when_every_scrape_in_the_span_is_past_it():
    e = experiment(stop_when=[{"metrics": {"svc": {"queue": {"above": 10, "for": "2s"}}}}])
    store = ScrapeStore()
    for i, value in enumerate([5, 20, 12, 30]):
        store.add(T + i, "svc", {"queue": value}, {"queue": "gauge"})
    queries = queries_of(e)
    assert stop_condition(e, {}, T + 2, store, queries) is None  # 5 then 20: not every scrape
    assert stop_condition(e, {}, T + 4, store, queries) == "svc/queue = 12 above 10 for 2s"  # no requests needed


@dataclass
class Phase:
    name: str
    start: float
    end: float


def test_analyse_run_records_the_fault_its_gates_and_a_stop_as_a_failed_gate():
    e = experiment(gates={"recovery_time": {"max": "2s"}, "degradation": {"p50_ms": {"max_ratio": 2}}})
    phases = [Phase("baseline", T, T + 3), Phase("fault", T + 3, T + 6)]
    buckets = seconds(*[(20, 10, 0)] * 3, *[(20, 150, 0)] * 3)
    faults = [{"phase": "fault", "description": "slow", "applied_at": T + 3.01, "reverted_at": T + 6.0}]
    result = analyse_run(e, T, phases, faults, buckets, {T + i: 1 for i in range(6)}, {}, ScrapeStore(),
                         stop="p95_ms = 150 above 100 for 1s")
    [fault] = result.fault_results
    assert fault.time_to_detect_s == 1.0 and fault.time_to_recover_s is None
    assert [(g.name, g.passed) for g in result.gates] == [
        ("baseline_steady", True), ("recovery_time", False), ("degradation.p50_ms", False), ("stop_when", False)]
    assert result.phases[1].metrics.p50_ms == pytest.approx(150, rel=0.01)
    assert result.phases[1].load_ratio == pytest.approx(1.0)
    assert verdict_of("aborted", "p95_ms = 150 above 100 for 1s", result.gates, 0) == ("fail", ExitCode.GATE_FAILED)


def test_gate_results_without_a_baseline_phase_or_faults_is_empty():
    assert gate_results(experiment(), None, [], [], None) == []


@pytest.mark.parametrize(("status", "stop", "passed", "code", "expected"), [
    ("completed", None, True, 0, ("pass", ExitCode.OK)),
    ("completed", None, False, 0, ("fail", ExitCode.GATE_FAILED)),
    ("aborted", "x", True, 0, ("fail", ExitCode.GATE_FAILED)),
    ("interrupted", None, False, 3, ("interrupted", ExitCode.INTERRUPTED)),
    ("error", None, True, 0, ("error", ExitCode.ENVIRONMENT)),
    ("error", None, True, 2, ("error", 2)),  # the exit code an environment failure set is kept
    ("running", None, True, 0, ("error", ExitCode.ENVIRONMENT)),
])
def test_verdict(status, stop, passed, code, expected):
    assert verdict_of(status, stop, [GateResult("g", passed, "", "")], code) == expected


def test_distinct_errors_merge_by_signature_and_rank_by_count():
    from aichaos.metrics.samples import Bucket, merge_buckets, top_errors

    a = Bucket(1, 5, {"5xx": 5}, {}, examples={"5xx 502 x": ["5xx", 5, "502 x"]})
    b = Bucket(2, 9, {"5xx": 2, "timeout": 7},
               examples={"5xx 502 x": ["5xx", 2, "502 x (later)"], "timeout t": ["timeout", 7, "ReadTimeout: t"]})
    merged = merge_buckets([a, b])
    assert merged.examples["5xx 502 x"] == ["5xx", 7, "502 x"]  # counts add up, the first example stays
    assert [e["kind"] for e in top_errors(merged.examples)] == ["5xx", "timeout"]
    assert Bucket.from_json(merged.to_json()).examples == merged.examples
