"""HTTP- and stream-aware faults in the run loop, on the fake runtime: each is one HTTP toxic, reverted
on a clean end and on an interrupt; refused with a Toxiproxy before the stack starts (exit 2); refused
on an edge that is not HTTP when the file is loaded."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from aichaos import clock
from aichaos.errors import AichaosError
from aichaos.experiment.loader import load_experiment
from aichaos.faults.registry import RunCheck, kind_of
from aichaos.run import RunOptions, run_experiment
from aichaos.runtime.fake import FakeClock, FakeKind, FakeProxyBackend, FakeRuntime, FakeWorld, steady
from tests.conftest import STACK
from tests.unit.test_run_loop import EXPERIMENT

FAULTS = {
    "http_error": ("{type: http_error, edge: frontend->backend, status: 429, fraction: 0.2, path: /work}",
                   {"status": 429, "retry_after": 1, "path": "/work", "method": ""}, 0.2),
    "first_byte_delay": ("{type: first_byte_delay, edge: frontend->backend, delay_ms: 300}",
                         {"delay": 300, "path": "", "method": ""}, 1.0),
    "stream_stall": ("{type: stream_stall, edge: frontend->backend, after_events: 10, stall_ms: 2000}",
                     {"after_events": 10, "stall": 2000, "path": "", "method": ""}, 1.0),
    "stream_throttle": ("{type: stream_throttle, edge: frontend->backend, events_per_s: 5, method: POST}",
                        {"rate": 5, "path": "", "method": "POST"}, 1.0),
    "stream_truncate": ("{type: stream_truncate, edge: frontend->backend, after_events: 4, mode: end}",
                        {"after_events": 4, "mode": "end", "path": "", "method": ""}, 1.0),
    "stream_corrupt": ("{type: stream_corrupt, edge: frontend->backend, after_events: 3, mode: error, status: 429}",
                       {"after_events": 3, "mode": "error", "status": 429, "path": "", "method": ""}, 1.0),
}
LATENCY = "{type: latency, edge: frontend->backend, latency_ms: 100}"


def run(tmp_path: Path, world: FakeWorld, fault: str, **options):
    (tmp_path / "stack.yaml").write_text(STACK)
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT.replace(LATENCY, fault))
    loaded = load_experiment(tmp_path / "experiment.yaml")
    lines: list[str] = []
    with clock.using(FakeClock()):
        journal = run_experiment(loaded, RunOptions(runs_dir=tmp_path / "runs", runtime_kind=FakeKind(world),
                                                    **options), report=lines.append, load_factory=world.load)
    return journal, lines


@pytest.mark.parametrize("name", FAULTS)
def test_each_http_fault_is_one_http_toxic_added_in_its_phase_and_removed_after(tmp_path, name):
    spec, attributes, toxicity = FAULTS[name]
    world = FakeWorld(scenario=steady(count=40, latency_ms=5.0))
    seen: list[dict] = []
    world.on_second = lambda second: seen.extend(t for ts in world.toxics.values() for t in ts.values())
    journal, _ = run(tmp_path, world, spec)
    assert journal.exit_code == 0, journal.errors
    assert seen and seen[0]["type"] == name and seen[0]["attributes"] == attributes
    assert seen[0]["toxicity"] == toxicity
    events = world.events
    assert events.index("remove_toxic frontend__backend aichaos_fault_0") > \
        events.index("add_toxic frontend__backend aichaos_fault_0")
    assert not any(world.toxics.values())
    fault = journal.faults[0]
    assert fault["reverted_at"] is not None and fault["type"] == name


@pytest.mark.parametrize("name", FAULTS)
def test_an_interrupt_in_the_fault_phase_removes_each_http_fault(tmp_path, name):
    world = FakeWorld()
    calls: list[int] = []

    def interrupt(second: int) -> None:
        calls.append(second)
        if any(e.startswith("add_toxic") for e in world.events):
            world.on_second = None
            os.kill(os.getpid(), signal.SIGINT)

    world.on_second = interrupt
    journal, _ = run(tmp_path, world, FAULTS[name][0])
    assert journal.status == "interrupted" and journal.exit_code == 130
    assert "remove_toxic frontend__backend aichaos_fault_0" in world.events
    assert not any(world.toxics.values())
    state = tmp_path / "runs" / journal.run_id / "state.json"
    assert not state.exists() or '"toxic"' not in state.read_text()  # nothing left for cleanup


def test_a_toxiproxy_is_refused_before_the_stack_starts(tmp_path, monkeypatch):
    def real_toxiproxy(self: FakeRuntime, url: str | None) -> FakeProxyBackend:
        self.world.op("proxy start")
        return FakeProxyBackend("toxiproxy-server", "http://fake-proxy.invalid", "2.12.0", world=self.world)

    monkeypatch.setattr(FakeRuntime, "start_fault_proxy", real_toxiproxy)
    world = FakeWorld()
    journal, _ = run(tmp_path, world, FAULTS["stream_stall"][0])
    assert journal.exit_code == 2
    assert any("needs the builtin fault proxy" in e and "toxiproxy-server" in e for e in journal.errors)
    assert not any(e.startswith("start ") for e in world.events)  # no service was started
    assert "proxy close" in world.events


@pytest.mark.parametrize(("kind", "version", "refused"), [
    ("toxiproxy-server", "2.12.0", True), ("toxiproxy-image", "2.9.0", True), ("url", "git-abc", True),
    ("url", "2.12.0-aichaos.0.9.0", False), ("builtin", "2.12.0-aichaos.0.9.0", False),
    ("builtin-container", "2.12.0-aichaos.0.9.0", False), (None, "", False),
])
def test_check_run_refuses_only_a_fault_proxy_that_is_not_the_builtin(tmp_path, kind, version, refused):
    (tmp_path / "stack.yaml").write_text(STACK)
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT.replace(LATENCY, FAULTS["http_error"][0]))
    fault = load_experiment(tmp_path / "experiment.yaml").experiment.phases[1].faults[0]
    check = RunCheck(frozenset(), "local", False, proxy=kind, proxy_version=version)
    if refused:
        with pytest.raises(AichaosError, match="builtin fault proxy"):
            kind_of(fault).check_run(fault, check)
    else:
        kind_of(fault).check_run(fault, check)


def test_an_http_fault_on_an_edge_that_is_not_http_is_refused_at_load(tmp_path):
    (tmp_path / "stack.yaml").write_text(STACK.replace("scheme: http", "scheme: redis"))
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT.replace(LATENCY, FAULTS["http_error"][0]))
    with pytest.raises(AichaosError, match="scheme: http"):
        load_experiment(tmp_path / "experiment.yaml")


def test_stream_corrupts_error_event_carries_its_status_as_openai_names_it():
    import json

    from aichaos.proxy.http import ERROR_EVENT, error_event

    rate_limit = json.loads(error_event(429)[len(b"data: "):])["error"]
    assert rate_limit["code"] == 429 and rate_limit["type"] == "rate_limit_error"
    assert json.loads(ERROR_EVENT[len(b"data: "):])["error"]["code"] == 500
    assert error_event(503).endswith(b"\n\n")
