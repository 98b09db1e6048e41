"""Every AI fault's experiment, shortened, on the torch sample stack: the fault's metric moves the
right way in the fault phase and comes back after the revert, and nothing is left behind.

The full-length experiments live in experiments/; these runs only shorten the phases (and the
steady-state window to fit them), so what is tested is what a user runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from aichaos.metrics.scrape import ScrapeStore, mean_value, parse_selector, window_value
from tests.conftest import ROOT
from tests.integration.test_run import assert_nothing_left, journal, run

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]

SHORT = ["--runtime", "local", "--set", "steady_state.warmup=2s", "--set", "steady_state.window=3s",
         "--set", "phases.0.duration=6s", "--set", "phases.1.duration=8s", "--set", "phases.2.duration=8s"]
DEGRADED = 'gateway_requests_total{outcome="degraded"} / gateway_requests_total'


class Run:
    def __init__(self, j: dict) -> None:
        self.j = j
        self.store = ScrapeStore.from_json(j["scrapes"])
        self.phases = {p["name"]: p for p in j["phases"]}

    def span(self, phase: str, tail: int | None = None) -> tuple[int, int]:
        p = self.phases[phase]
        start, end = int(p["start"]), int(p["end"])
        if phase == "baseline":
            start = self.j["analysis_start"]
        return (end - tail, end) if tail else (start, end)

    def metric(self, service: str, selector: str, phase: str, tail: int | None = None) -> float:
        value = mean_value(self.store, service, parse_selector(selector), *self.span(phase, tail))
        assert value is not None, f"no value of {service}/{selector} in {phase}"
        return value

    def peak(self, service: str, selector: str, phase: str, width: int = 2) -> float:
        """The highest value over the phase's windows of ``width`` seconds."""
        start, end = self.span(phase)
        values = [window_value(self.store, service, parse_selector(selector), s, s + width)
                  for s in range(start, end - width + 1)]
        found = [v[1] for v in values if v is not None]
        assert found, f"no value of {service}/{selector} in {phase}"
        return max(found)

    def requests(self, phase: str) -> dict:
        return self.phases[phase]["metrics"]


def check_slowdown(r: Run) -> None:
    mean = "model_inference_seconds_sum / model_inference_seconds_count"
    base = r.metric("model-server", mean, "baseline")
    assert r.metric("model-server", mean, "fault") > 4 * base
    assert r.metric("model-server", mean, "recovery", tail=4) < 2 * base


def check_errors(r: Run) -> None:
    assert r.metric("gateway", DEGRADED, "baseline") <= 0.01
    assert r.metric("gateway", DEGRADED, "fault") >= 0.03
    assert r.metric("model-server", 'model_requests_total{status="500"}', "fault") > 1
    assert r.metric("gateway", DEGRADED, "recovery", tail=4) <= 0.01


def check_hang(r: Run) -> None:
    assert r.metric("gateway", DEGRADED, "fault") >= 0.3
    assert r.peak("gateway", "gateway_breaker_state", "baseline") == 0
    assert r.peak("gateway", "gateway_breaker_state", "fault") == 2  # hung calls time out: the breaker opens
    assert r.metric("gateway", DEGRADED, "recovery", tail=3) <= 0.05


def check_oom(r: Run) -> None:
    oom = 'model_requests_total{status="507"}'
    assert r.metric("model-server", oom, "baseline") == 0
    assert r.metric("model-server", oom, "fault") > 0
    assert r.metric("model-server", oom, "recovery") == 0


def check_swap(r: Run) -> None:
    disagreement = "aichaos_probe_disagreement"
    assert r.metric("model-server", disagreement, "baseline") == 0
    assert r.metric("model-server", disagreement, "fault", tail=5) > 0.05
    assert r.metric("model-server", disagreement, "recovery", tail=4) == 0
    assert r.requests("fault")["error_rate"] == 0  # nothing but the answers moved


def check_memory(r: Run) -> None:
    free = "model_device_memory_free_bytes"
    base = r.metric("model-server", free, "baseline")
    assert r.metric("model-server", free, "fault", tail=5) < base - 1.0 * 2**30  # 1.5 GiB taken
    assert r.metric("model-server", free, "recovery", tail=3) > base - 0.5 * 2**30
    [fault] = r.j["faults"]
    assert fault["detail"]["device"] in ("host", "cuda:0") and fault["detail"]["mb"] == 1536


def check_stall(r: Run) -> None:
    staleness = "gateway_feature_staleness_seconds"
    assert r.metric("gateway", staleness, "baseline") < 3
    assert max(r.metric("gateway", staleness, "fault", tail=2), 0) > 5
    assert r.metric("gateway", staleness, "recovery", tail=3) < 3


def check_surge(r: Run) -> None:
    assert r.requests("fault")["p50_ms"] > 2 * r.requests("baseline")["p50_ms"]
    last = [w for w in r.j["windows"] if w["end"] <= int(r.phases["recovery"]["end"])][-1]
    assert last["p95_ms"] < 2 * r.requests("baseline")["p95_ms"] + 50


def check_spike(r: Run) -> None:
    base, fault = r.requests("baseline"), r.requests("fault")
    assert fault["rps"] == pytest.approx(3 * base["rps"], rel=0.25)
    assert r.phases["fault"]["offered_rps"] == 3 * r.phases["baseline"]["offered_rps"]
    size = "model_batch_size_sum / model_batch_size_count"
    assert r.metric("model-server", size, "fault") > r.metric("model-server", size, "baseline")
    assert r.requests("recovery")["rps"] == pytest.approx(base["rps"], rel=0.25)


def check_storm(r: Run) -> None:
    amplification = "gateway_upstream_calls_total / gateway_requests_total"
    assert r.metric("gateway", amplification, "baseline") == pytest.approx(1.0, abs=0.02)
    # retries amplify the calls until the breaker opens and sheds them (amplification then drops below 1)
    assert r.peak("gateway", amplification, "fault") > 1.1
    assert r.peak("gateway", "gateway_breaker_state", "fault") == 2
    assert r.metric("gateway", amplification, "recovery", tail=4) == pytest.approx(1.0, abs=0.05)


def check_cold_start(r: Run) -> None:
    [fault] = r.j["faults"]
    assert fault["detail"]["ready_after_s"] > 0 and "ready after" in fault["description"]
    assert r.metric("gateway", DEGRADED, "fault") > 0.05
    assert r.metric("gateway", DEGRADED, "recovery", tail=4) <= 0.01
    pids = {s["pid"] for s in r.j["services"].values()}
    assert len(pids) == len(r.j["services"])


def check_dependency_down(r: Run) -> None:
    errors = "gateway_feature_errors_total"
    assert r.metric("gateway", errors, "baseline") == 0
    assert r.metric("gateway", errors, "fault") > 1
    assert r.metric("gateway", errors, "recovery", tail=4) == 0


CASES: dict[str, Callable[[Run], None]] = {
    "inference-slowdown": check_slowdown,
    "inference-errors": check_errors,
    "inference-hang": check_hang,
    "oom-next-batch": check_oom,
    "model-swap": check_swap,
    "device-memory-pressure": check_memory,
    "pipeline-stall": check_stall,
    "input-surge": check_surge,
    "traffic-spike": check_spike,
    "retry-storm": check_storm,
    "cold-start": check_cold_start,
    "dependency-down": check_dependency_down,
}


@pytest.mark.parametrize("name", list(CASES))
def test_ai_fault_moves_its_metric_and_comes_back(tmp_path: Path, name: str) -> None:
    run_dir = tmp_path / "run"
    result = run(["run", str(ROOT / "experiments" / f"{name}.yaml"), "--run-dir", str(run_dir), *SHORT],
                 timeout=240)
    assert result.returncode in (0, 1), result.stderr + result.stdout  # a verdict, not an environment failure
    j = journal(run_dir)
    assert j["status"] == "completed", j["errors"]
    CASES[name](Run(j))
    assert_nothing_left(j)
