"""Window, detection and recovery arithmetic on hand-made series."""

from __future__ import annotations

import pytest

from aichaos.experiment.model import Bound, Slo
from aichaos.metrics.analysis import (
    WindowStatus,
    degradation,
    limit_of,
    metrics_of,
    time_to_detect,
    time_to_recover,
    windows,
)
from aichaos.metrics.histogram import bucket_of, merge, percentile
from aichaos.metrics.samples import Bucket

T = 1_000_000  # an epoch second to build series on


def series(spec: list[tuple[int, float, int]]) -> dict[int, Bucket]:
    """(count, latency ms, errors) per second, starting at T."""
    out = {}
    for i, (count, ms, errors) in enumerate(spec):
        ok = count - errors
        out[T + i] = Bucket(T + i, count, {"5xx": errors} if errors else {}, {bucket_of(ms): ok} if ok else {})
    return out


SLO = Slo(p95_ms=Bound(max=100), error_rate=Bound(max=0.05))


def test_histogram_percentiles_are_close():
    hist: dict[int, int] = {}
    for v in range(1, 1001):
        b = bucket_of(float(v))
        hist[b] = hist.get(b, 0) + 1
    assert percentile(hist, 50) == pytest.approx(500, rel=0.01)
    assert percentile(hist, 95) == pytest.approx(950, rel=0.01)
    assert percentile(hist, 99) == pytest.approx(990, rel=0.01)
    assert percentile({}, 50) is None


def test_window_percentile_is_from_merged_histograms_not_averaged():
    # one second of 90 fast requests, one of 10 slow ones: the merged p95 is slow,
    # the average of per-second p95s would be (10 + 500) / 2
    b = series([(90, 10, 0), (10, 500, 0)])
    m = metrics_of(b, T, T + 2)
    assert m.p95_ms == pytest.approx(500, rel=0.01)
    assert m.count == 100 and m.rps == 50


def test_latency_comes_from_successes_and_errors_count_in_rate():
    b = series([(100, 20, 25)])
    m = metrics_of(b, T, T + 1)
    assert m.error_rate == 0.25
    assert m.p50_ms == pytest.approx(20, rel=0.01)
    assert m.errors == {"5xx": 25}


def test_windows_unknown_when_too_few_requests():
    b = series([(50, 10, 0), (1, 10, 0), (0, 0, 0), (1, 10, 0), (50, 10, 0)])
    wins = windows(b, T, T + 5, 1, 5, SLO, None)
    assert [w.status for w in wins] == [WindowStatus.STEADY, WindowStatus.UNKNOWN, WindowStatus.UNKNOWN,
                                        WindowStatus.UNKNOWN, WindowStatus.STEADY]


def test_detect_and_recover_at_known_seconds():
    # 5 s healthy, fault from T+5 to T+10 (slow), healthy again from T+12
    spec = [(50, 10, 0)] * 5 + [(50, 300, 0)] * 7 + [(50, 10, 0)] * 10
    b = series(spec)
    wins = windows(b, T, T + len(spec), 2, 5, SLO, None)
    # first violated 2 s window ending after T+5 is [T+4, T+6): detected at its end
    assert time_to_detect(wins, T + 5.003, T + 10.002) == 1.0
    # slow until T+12: first steady window starts at T+12, and [T+12..T+14] stay steady
    assert time_to_recover(wins, T + 10.002, 2) == 2.0


def test_recovery_needs_a_further_steady_window():
    # steady for one window right after the revert, then violated again, then steady for good
    spec = [(50, 10, 0)] * 3 + [(50, 10, 0)] * 2 + [(50, 300, 0)] + [(50, 10, 0)] * 8
    b = series(spec)
    wins = windows(b, T, T + len(spec), 2, 5, SLO, None)
    assert time_to_recover(wins, T + 3, 2) == 3.0  # T+5 is slow; T+6.. steady through T+8's window


def test_not_recovered_when_run_ends_first():
    spec = [(50, 10, 0)] * 3 + [(50, 300, 0)] * 5
    wins = windows(series(spec), T, T + 8, 2, 5, SLO, None)
    assert time_to_recover(wins, T + 3, 2) is None
    assert time_to_detect(wins, T + 3, T + 8) is not None


def test_unknown_windows_do_not_count_as_recovered():
    # after the revert no requests at all: a quiet service is not a healthy one
    spec = [(50, 10, 0)] * 3 + [(0, 0, 0)] * 6
    wins = windows(series(spec), T, T + 9, 2, 5, SLO, None)
    assert time_to_recover(wins, T + 3, 2) is None


def test_errors_violate_the_slo():
    spec = [(50, 10, 0)] * 3 + [(50, 10, 10)] * 3 + [(50, 10, 0)] * 6
    wins = windows(series(spec), T, T + 12, 1, 5, SLO, None)
    violated = [w.start - T for w in wins if w.status is WindowStatus.VIOLATED]
    assert violated == [3, 4, 5]
    assert any("error_rate" in b for w in wins for b in w.broken)


def test_relative_slo_is_the_looser_of_ratio_and_delta():
    bound = Bound(baseline_ratio=1.5, baseline_delta=20)
    assert limit_of(bound, 10.0) == (30.0, None)  # 10 + 20 beats 1.5 × 10
    assert limit_of(bound, 100.0) == (150.0, None)  # 1.5 × 100 beats 100 + 20
    assert limit_of(Bound(max=120, baseline_ratio=1.5), 100.0) == (120.0, None)  # absolute still caps


def test_relative_slo_in_windows():
    slo = Slo(p95_ms=Bound(baseline_ratio=1.5))
    spec = [(50, 10, 0)] * 3 + [(50, 14, 0)] + [(50, 16, 0)]
    b = series(spec)
    baseline = metrics_of(b, T, T + 3)
    wins = windows(b, T, T + 5, 1, 5, slo, baseline)
    assert [w.status for w in wins][3:] == [WindowStatus.STEADY, WindowStatus.VIOLATED]


def test_degradation_ratio_and_delta():
    b = series([(50, 10, 0)] * 2 + [(50, 40, 5)] * 2)
    change = degradation(metrics_of(b, T, T + 2), metrics_of(b, T + 2, T + 4))
    assert change["p50_ms"].ratio == pytest.approx(4.0, rel=0.02)
    assert change["p50_ms"].delta == pytest.approx(30.0, rel=0.02)
    assert change["error_rate"].delta == pytest.approx(0.1)
    assert change["rps"].ratio == 1.0


def test_bucket_round_trip_and_merge():
    a = Bucket(T, 3, {"timeout": 1}, {5: 2})
    c = Bucket.from_json(a.to_json())
    assert c == a
    assert merge([{1: 2}, {1: 3, 2: 1}]) == {1: 5, 2: 1}
