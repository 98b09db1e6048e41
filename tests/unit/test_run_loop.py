"""The run loop on the in-package fake runtime (aichaos.runtime.fake): teardown order on every exit
path, stop conditions, faults that fail midway, and the verdict, without a process or a socket."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from aichaos import clock
from aichaos.errors import FaultInjectionError, LoadError, ProxyError, StackStartError
from aichaos.experiment.loader import load_experiment
from aichaos.run import RunOptions, run_experiment
from aichaos.runtime.fake import FakeClock, FakeKind, FakeRequest, FakeWorld, steady
from aichaos.runtime.state import RunState
from tests.conftest import STACK

EXPERIMENT = """\
version: 1
name: loop
stack: stack.yaml
load:
  target: frontend
  users: 2
  spawn_rate: 2
  requests:
    - {name: work, method: GET, path: /work}
steady_state:
  window: 2s
  warmup: 0s
  slo: {p95_ms: {max: 50}, error_rate: {max: 0.05}}
phases:
  - {name: baseline, duration: 6s}
  - name: fault
    duration: 6s
    faults:
      - {type: latency, edge: frontend->backend, latency_ms: 100}
  - {name: recovery, duration: 8s}
"""

# what the run starts, in order, and what stops each (as the fake world logs them)
STARTS = ["network open", "proxy start", "start backend", "create_proxy frontend__backend", "start frontend",
          "load start"]
STOPS = ["load stop", "delete_proxy frontend__backend", "teardown", "proxy close", "network close"]


def run(tmp_path: Path, world: FakeWorld, experiment: str = EXPERIMENT, **options):
    (tmp_path / "stack.yaml").write_text(STACK)
    (tmp_path / "experiment.yaml").write_text(experiment)
    loaded = load_experiment(tmp_path / "experiment.yaml")
    lines: list[str] = []
    with clock.using(FakeClock()):
        journal = run_experiment(loaded, RunOptions(runs_dir=tmp_path / "runs", runtime_kind=FakeKind(world),
                                                    **options), report=lines.append, load_factory=world.load)
    return journal, lines


def after(events: list[str], first: str) -> list[str]:
    return events[events.index(first):]


def in_order(events: list[str], expected: list[str]) -> bool:
    """Each of ``expected`` occurs in ``events``, in this order."""
    position = 0
    for event in expected:
        try:
            position = events.index(event, position) + 1
        except ValueError:
            return False
    return True


def test_a_clean_run_reverts_its_fault_at_the_phase_end_and_tears_down_in_reverse_order(tmp_path):
    world = FakeWorld(scenario=steady(count=40, latency_ms=5.0))
    journal, _lines = run(tmp_path, world)
    assert journal.status == "completed" and journal.exit_code == 0, journal.errors
    assert in_order(world.events, [*STARTS, "add_toxic frontend__backend aichaos_fault_0",
                                   "remove_toxic frontend__backend aichaos_fault_0", *STOPS])
    # the fault was off before the recovery phase began: nothing of it is left for teardown
    assert after(world.events, "load stop") == STOPS
    assert not world.running and not world.toxics and not world.disabled
    assert [p.name for p in journal.phases] == ["baseline", "fault", "recovery"]
    (fault,) = journal.fault_results
    assert fault.time_to_detect_s is not None and fault.time_to_recover_s is not None
    assert fault.degradation["p95_ms"].delta == pytest.approx(100, rel=0.02)  # the injected 100 ms, within a bucket
    assert not (journal.run_dir / "state.json").exists()


def test_keep_stack_stops_the_load_but_leaves_stack_proxy_and_network(tmp_path):
    world = FakeWorld()
    journal, _lines = run(tmp_path, world, keep_stack=True)
    assert journal.status == "completed"
    assert after(world.events, "load stop") == ["load stop"]
    assert world.running == {"backend", "frontend"}
    state = RunState.read(journal.run_dir / "state.json")
    assert state.kept and state.runtime == "fake"


@pytest.mark.parametrize("failing, error, torn_down", [
    ("network open", StackStartError("no network"), ["network close"]),
    ("proxy start", ProxyError("no proxy"), ["network close"]),
    ("start", StackStartError("cannot start"), ["teardown", "proxy close", "network close"]),
    ("create_proxy", ProxyError("refused"), ["teardown", "proxy close", "network close"]),
    ("load start", LoadError("no locust"), STOPS[1:]),  # a load that never ran has nothing to stop
    ("add_toxic", ProxyError("toxic refused"), STOPS),
])
def test_a_failure_at_each_step_tears_down_exactly_what_was_started_last_first(tmp_path, failing, error, torn_down):
    world = FakeWorld()
    world.fail[failing] = error
    journal, _ = run(tmp_path, world)
    assert journal.status == "error" and journal.exit_code == 3
    assert any(error.message in e for e in journal.errors)
    failed_at = next(i for i, e in enumerate(world.events) if e.startswith(failing))
    started = STARTS[:next((i for i, e in enumerate(STARTS) if e.startswith(failing)), len(STARTS))]
    assert in_order(world.events[:failed_at], started)
    assert world.events[failed_at + 1:] == torn_down
    assert not world.running and not world.disabled
    assert not any(world.toxics.values())


def test_an_interrupt_in_the_fault_phase_reverts_the_fault_and_tears_everything_down(tmp_path):
    world = FakeWorld()
    phases: list[int] = []

    def interrupt(second: int) -> None:
        phases.append(second)
        if any(e.startswith("add_toxic") for e in world.events) and len(phases) < 10_000:
            world.on_second = None
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, raised by the run's signal gate

    world.on_second = interrupt
    journal, lines = run(tmp_path, world)
    assert journal.status == "interrupted" and journal.exit_code == 130
    assert after(world.events, "add_toxic frontend__backend aichaos_fault_0") == [
        "add_toxic frontend__backend aichaos_fault_0", "remove_toxic frontend__backend aichaos_fault_0", *STOPS]
    assert any("interrupted by SIGINT" in line for line in lines)
    assert journal.faults[0]["reverted_at"] is not None


def test_a_stop_condition_aborts_the_fault_phase_reverts_and_fails_the_verdict(tmp_path):
    def failing_under_latency(second: int, world: FakeWorld) -> list[FakeRequest]:
        slow = any(world.toxics.values())
        return [FakeRequest(5.0, "5xx" if slow and i % 10 < 8 else None) for i in range(40)]

    experiment = EXPERIMENT + "stop_when:\n  - {error_rate: {above: 0.5, for: 2s}}\n"
    world = FakeWorld(scenario=failing_under_latency)
    journal, _lines = run(tmp_path, world, experiment=experiment)
    assert journal.status == "aborted" and journal.exit_code == 1
    assert journal.stop is not None and "error_rate" in journal.stop
    assert [p.name for p in journal.phases] == ["baseline", "fault"]  # recovery never ran
    fault_phase = journal.phases[1]
    assert fault_phase.end - fault_phase.start < 6  # cut short
    assert any(g.name == "stop_when" and not g.passed for g in journal.gates)
    assert after(world.events, "remove_toxic frontend__backend aichaos_fault_0")[1:] == STOPS


def test_a_fault_that_fails_midway_leaves_nothing_injected(tmp_path):
    """dependency_down cuts every edge into a service or none: the second edge refusing re-enables the first."""
    stack = STACK + """\
  worker:
    command: [python, -m, sample_stack.echo, worker, --port, "{port}"]
    ready: {http: /health}
    depends_on:
      backend: {env: BACKEND_URL, scheme: http}
"""
    experiment = EXPERIMENT.replace("{type: latency, edge: frontend->backend, latency_ms: 100}",
                                    "{type: latency, edge: frontend->backend, latency_ms: 100}\n"
                                    "      - {type: dependency_down, service: backend}")
    world = FakeWorld()
    (tmp_path / "stack.yaml").write_text(stack)
    failures = iter([None, ProxyError("second edge refused")])

    def op(name: str, detail: str = "") -> None:
        world.events.append(f"{name} {detail}".strip())
        if name == "disable" and (error := next(failures)) is not None:
            raise error

    world.op = op  # type: ignore[method-assign]
    (tmp_path / "experiment.yaml").write_text(experiment)
    loaded = load_experiment(tmp_path / "experiment.yaml")
    with clock.using(FakeClock()):
        journal = run_experiment(loaded, RunOptions(runs_dir=tmp_path / "runs", runtime_kind=FakeKind(world)),
                                 report=lambda line: None, load_factory=world.load)
    assert journal.status == "error" and journal.exit_code == FaultInjectionError.exit_code
    assert any("could not inject dependency_down on backend" in e for e in journal.errors)
    assert not world.disabled  # the first edge, cut before the second refused, is enabled again
    assert not any(world.toxics.values())  # and the latency fault applied before it was reverted
    assert journal.faults and all(f["reverted_at"] is not None for f in journal.faults)


def test_gates_judge_the_measured_degradation_and_recovery(tmp_path):
    experiment = EXPERIMENT + ("gates:\n  recovery_time: {max: 3s}\n"
                               "  degradation: {p95_ms: {max_ratio: 2.0}}\n")
    world = FakeWorld(scenario=steady(count=40, latency_ms=20.0))
    journal, _ = run(tmp_path, world, experiment=experiment)
    gates = {g.name: g for g in journal.gates}
    assert gates["degradation.p95_ms"].passed is False  # 120 ms against 20 ms: x6
    assert gates["recovery_time"].passed is True
    assert journal.exit_code == 1 and journal.verdict == "fail"


# ---------------------------------------------------------------- a verdict a CI gate can trust
def outage(survivors: int):
    """Every request fails while the edge is down, but ``survivors`` of them each second."""

    def scenario(second: int, world: FakeWorld) -> list[FakeRequest]:
        if world.disabled:
            return [FakeRequest(3.5)] * survivors + [FakeRequest(1.0, "connection")] * (60 - survivors)
        return [FakeRequest(5.0)] * 60

    return scenario


@pytest.mark.parametrize("survivors", [0, 1])
def test_a_percentile_of_a_handful_of_survivors_is_insufficient_data_and_fails_the_gate(tmp_path, survivors):
    experiment = EXPERIMENT.replace("{type: latency, edge: frontend->backend, latency_ms: 100}",
                                    "{type: down, edge: frontend->backend}") + \
        "gates:\n  degradation: {p95_ms: {max_ratio: 4.0}}\n"
    journal, _ = run(tmp_path, FakeWorld(scenario=outage(survivors)), experiment=experiment)
    fault = journal.phases[1].metrics
    assert fault is not None and fault.p95_ms is None and fault.latency_samples == 6 * survivors
    (gate,) = [g for g in journal.gates if g.name == "degradation.p95_ms"]
    assert not gate.passed and gate.value == "insufficient data"
    assert f"{6 * survivors} successful of 360 requests, a percentile needs 20" in gate.detail
    assert journal.exit_code == 1 and journal.verdict == "fail"


def test_an_slo_that_names_no_error_rate_still_judges_errors(tmp_path):
    """72% of requests fail fast during the fault: the default 1% bound sees it."""

    def failing_fast(second: int, world: FakeWorld) -> list[FakeRequest]:
        broken = any(world.toxics.values())
        return [FakeRequest(2.0, "5xx" if broken and i < 72 else None) for i in range(100)]

    experiment = EXPERIMENT.replace("slo: {p95_ms: {max: 50}, error_rate: {max: 0.05}}", "slo: {p95_ms: {max: 50}}")
    experiment += "gates:\n  detect_time: {max: 3s}\n"
    journal, _ = run(tmp_path, FakeWorld(scenario=failing_fast), experiment=experiment)
    (fault,) = journal.fault_results
    assert fault.time_to_detect_s is not None and fault.time_to_detect_s <= 2
    assert journal.rules["error_rate_default"] is True and journal.rules["error_rate_max"] == 0.01
    from aichaos.report.formats import summary_text

    text = summary_text(journal)
    assert "no violation" not in text
    assert "error rate <= 1.00% (the default: the SLO names no error rate)" in text


def test_recovery_counts_from_the_end_of_the_fault_phase_and_includes_the_restart(tmp_path):
    """A killed service that takes 3 s to be ready again: errors go on until it is, and time to recover
    counts them (it was 1.0 s when it counted from the revert's end)."""
    experiment = EXPERIMENT.replace("{type: latency, edge: frontend->backend, latency_ms: 100}",
                                    "{type: kill, service: backend}") + "gates:\n  recovery_time: {max: 10s}\n"
    world = FakeWorld(scenario=steady(count=40))
    world.ready_delay["backend"] = 3.0
    journal, lines = run(tmp_path, world, experiment=experiment)
    (fault,) = journal.fault_results
    assert fault.revert == journal.phases[1].end
    assert fault.revert_s == pytest.approx(3.0, abs=0.2)
    assert journal.faults[0]["detail"]["revert_s"] == pytest.approx(3.0, abs=0.2)
    assert fault.time_to_recover_s is not None and 3.0 <= fault.time_to_recover_s <= 4.0
    assert any("reverted backend killed (SIGKILL) (took 3.0s)" in line for line in lines)


def test_a_fault_that_never_degrades_anything_is_not_degraded_rather_than_recovered_in_0s(tmp_path):
    experiment = EXPERIMENT.replace("latency_ms: 100", "latency_ms: 1") + "gates:\n  recovery_time: {max: 5s}\n"
    journal, _ = run(tmp_path, FakeWorld(scenario=steady(count=40)), experiment=experiment)
    (fault,) = journal.fault_results
    assert fault.degraded is False and fault.time_to_recover_s is None
    (gate,) = [g for g in journal.gates if g.name == "recovery_time"]
    assert gate.passed and gate.value == "not degraded" and "nothing to recover from" in gate.detail


def test_a_baseline_that_is_not_steady_stops_the_run_before_any_fault(tmp_path):
    """Readiness answers, every request gets a 4xx: the experiment cannot be conducted."""
    world = FakeWorld(scenario=lambda second, world: [FakeRequest(2.0, "4xx")] * 40)
    journal, _ = run(tmp_path, world)
    assert journal.status == "error" and journal.exit_code == 3
    assert not any(e.startswith("add_toxic") for e in world.events)  # nothing was injected
    (error,) = journal.errors
    assert "the baseline was not steady" in error and "error rate was 100.00%" in error and "4xx" in error
    assert [p.name for p in journal.phases] == ["baseline"]
    assert after(world.events, "load stop") == STOPS


def test_allow_unhealthy_baseline_injects_anyway_and_says_so(tmp_path):
    world = FakeWorld(scenario=lambda second, world: [FakeRequest(2.0, "4xx")] * 40)
    journal, lines = run(tmp_path, world, allow_unhealthy_baseline=True)
    assert journal.status == "completed" and any(e.startswith("add_toxic") for e in world.events)
    assert any("injecting the faults anyway (--allow-unhealthy-baseline)" in line for line in lines)
