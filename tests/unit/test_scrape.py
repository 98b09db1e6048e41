"""Scraped service metrics: selectors, the exposition format, window values, SLOs on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from aichaos.experiment.model import Experiment, Slo
from aichaos.metrics.analysis import (
    WindowStatus,
    degradation,
    error_budget_spent,
    metrics_of,
    queries_of,
    windows,
)
from aichaos.metrics.histogram import bucket_of
from aichaos.metrics.samples import Bucket
from aichaos.metrics.scrape import ScrapeStore, mean_value, parse_exposition, parse_selector, window_value

T = 2_000_000

EXPOSITION = """\
# HELP q Queue depth
# TYPE q gauge
q 3
# TYPE req_total counter
req_total{status="200"} 10
req_total{status="503"} 2
# TYPE lat histogram
lat_bucket{le="0.1"} 4
lat_bucket{le="+Inf"} 5
lat_count 5
lat_sum 0.7
untyped_thing 1.5
"""


def test_selectors_parse_and_bad_ones_are_refused():
    q = parse_selector('req_total{status="503"}')
    assert q.numerator.name == "req_total" and q.numerator.labels == (("status", "503"),)
    ratio = parse_selector("calls_total / req_total")
    assert ratio.numerator.name == "calls_total" and ratio.denominator is not None
    for bad in ("", "1abc", "q{status=503}", "a / b / c", "q{"):
        with pytest.raises(ValueError):
            parse_selector(bad)


def test_exposition_keeps_gauges_and_counters_and_drops_buckets():
    values, kinds = parse_exposition(EXPOSITION)
    assert values == {"q": 3, 'req_total{status="200"}': 10, 'req_total{status="503"}': 2, "lat_count": 5,
                      "lat_sum": 0.7, "untyped_thing": 1.5}
    assert kinds["q"] == "gauge" and kinds['req_total{status="200"}'] == "counter"
    assert kinds["lat_count"] == "counter" and kinds["untyped_thing"] == "gauge"


def store_of(points: dict[int, dict[str, float]], kinds: dict[str, str]) -> ScrapeStore:
    store = ScrapeStore()
    for second, values in points.items():
        store.add(T + second, "svc", values, kinds)
    return store


def test_gauge_window_is_its_range_and_counter_window_its_rate_across_a_restart():
    kinds = {"q": "gauge", 'c{k="a"}': "counter", 'c{k="b"}': "counter"}
    store = store_of({0: {"q": 1, 'c{k="a"}': 10, 'c{k="b"}': 0}, 1: {"q": 7, 'c{k="a"}': 20, 'c{k="b"}': 5},
                      2: {"q": 4, 'c{k="a"}': 3, 'c{k="b"}': 5}}, kinds)  # a restarted at 2: +3
    assert window_value(store, "svc", parse_selector("q"), T, T + 3) == (1, 7)
    # c summed over its series: 10, 25, 8 -> increases 15 then 8 (a drop is a restart) over 2 s
    assert window_value(store, "svc", parse_selector("c"), T, T + 3) == (11.5, 11.5)
    assert window_value(store, "svc", parse_selector('c{k="b"}'), T, T + 3) == (2.5, 2.5)
    assert mean_value(store, "svc", parse_selector("q"), T, T + 3) == pytest.approx(4)
    assert window_value(store, "svc", parse_selector("q"), T + 5, T + 8) is None  # nothing scraped


def test_ratio_and_an_unexported_labelled_counter_reads_zero():
    kinds = {"calls_total": "counter", 'req_total{status="200"}': "counter"}
    store = store_of({0: {"calls_total": 0, 'req_total{status="200"}': 0},
                      1: {"calls_total": 30, 'req_total{status="200"}': 10}}, kinds)
    assert window_value(store, "svc", parse_selector("calls_total / req_total"), T, T + 2) == (3.0, 3.0)
    # no 503 has happened: the family is a known counter, so the series counts as 0, not as no data
    assert window_value(store, "svc", parse_selector('req_total{status="503"}'), T, T + 2) == (0.0, 0.0)
    assert window_value(store, "svc", parse_selector("never_seen"), T, T + 2) is None


def test_windows_hold_only_while_every_scrape_is_within_the_slo():
    slo = Slo.model_validate({"p95_ms": {"max": 100}, "metrics": {"svc": {"staleness": {"max": 5}}}})
    e = Experiment.model_validate({"version": 1, "name": "x", "stack": "s", "load": {
        "target": "svc", "users": 1, "requests": [{"name": "a", "path": "/"}]},
        "steady_state": {"window": 2, "slo": slo.model_dump(by_alias=True, exclude_none=True)},
        "phases": [{"name": "a", "duration": 1}]})
    queries = queries_of(e)
    assert list(queries) == ["svc/staleness"]
    buckets = {T + i: Bucket(T + i, 10, {}, {bucket_of(20.0): 10}) for i in range(8)}
    staleness = [1, 2, 3, 9, 12, 2, 1, 1]  # the pipeline stalls at second 3 while latency stays healthy
    store = store_of({i: {"staleness": v} for i, v in enumerate(staleness)}, {"staleness": "gauge"})
    wins = windows(buckets, T, T + 8, 2, 5, e.steady_state.slo, None, store, queries)
    assert [w.status for w in wins] == [WindowStatus.STEADY, WindowStatus.STEADY, WindowStatus.VIOLATED,
                                        WindowStatus.VIOLATED, WindowStatus.VIOLATED, WindowStatus.STEADY,
                                        WindowStatus.STEADY]
    assert wins[2].broken == ("svc/staleness=9>5",)
    # a window with no scrape at all cannot show the SLO holds
    del store.series[T + 6], store.series[T + 7]
    last = windows(buckets, T + 6, T + 8, 2, 5, e.steady_state.slo, None, store, queries)[0]
    assert last.status is WindowStatus.VIOLATED and last.broken == ("svc/staleness=n/a",)


def test_error_budget_spent():
    slo = Slo.model_validate({"error_rate": {"max": 0.01}})
    m = metrics_of({T: Bucket(T, 1000, {"5xx": 5}, {bucket_of(1.0): 995})}, T, T + 1)
    assert error_budget_spent(m, slo) == pytest.approx(0.5)
    assert error_budget_spent(m, Slo.model_validate({"p95_ms": {"max": 1}})) is None


def test_a_counter_increment_belongs_to_the_window_after_the_scrape_before_it():
    # scrapes happen late in each second: an increment between the scrapes labelled T+2 and T+3
    # (a fault applied on the boundary T+3) belongs to windows starting at T+3, never to [T, T+3)
    store = store_of({0: {"c": 0}, 1: {"c": 0}, 2: {"c": 0}, 3: {"c": 5}, 4: {"c": 5}}, {"c": "counter"})
    q = parse_selector("c")
    assert window_value(store, "svc", q, T, T + 3) == (0.0, 0.0)
    assert window_value(store, "svc", q, T + 3, T + 5) == (2.5, 2.5)


def test_degradation_gate_on_a_scraped_metric_fails_a_run_whose_answers_degraded():
    from aichaos.report.journal import FaultResult, Journal, evaluate_gates

    e = Experiment.model_validate({
        "version": 1, "name": "x", "stack": "s", "load": {"target": "gw", "users": 1,
                                                         "requests": [{"name": "a", "path": "/"}]},
        "steady_state": {"slo": {"p95_ms": {"max": 100}}},
        "phases": [{"name": "a", "duration": 1}],
        "gates": {"degradation": {"metrics": {"gw": {"degraded_total / requests_total": {"max_delta": 0.05}}}}}})
    key = "gw/degraded_total / requests_total"
    assert key in queries_of(e)
    base = metrics_of({}, T, T + 1)
    ok = FaultResult("fault", [], T, T + 1, None, None, {})
    for value, passed in ((0.03, True), (0.3, False)):
        baseline = type(base)(**{**base.__dict__, "scraped": {key: (0.0, 0.0)}})
        fault = type(base)(**{**base.__dict__, "scraped": {key: (value, value)}})
        ok.degradation = degradation(baseline, fault)
        journal = Journal("r", Path("."), "f", "s", {}, fault_results=[ok])
        [gate] = evaluate_gates(journal, e.model_copy(update={"gates": e.gates.model_copy(
            update={"baseline_steady": False})}))
        assert gate.name == f"degradation.{key}" and gate.passed is passed
