"""Game days scripted end to end on the plain stack (local runtime): `aichaos stack up`, `fault inject`,
a real request through the frontend, `fault clear`, `stack down`, and what `aichaos cleanup` does for a
stack whose keeper was killed or is still up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_run import process_alive, processes_holding

PLAIN = ROOT / "sample_stack" / "plain.yaml"
AICHAOS = [sys.executable, "-m", "aichaos"]


def aichaos(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AICHAOS, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "CI": "true"})


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def request_ms(url: str) -> float:
    """One real request through the frontend (which calls the backend through the fault proxy)."""
    began = time.perf_counter()
    with urllib.request.urlopen(url + "/work", timeout=10) as response:
        assert response.status == 200
    return (time.perf_counter() - began) * 1000


def typical_ms(url: str, n: int = 5) -> float:
    return sorted(request_ms(url) for _ in range(n))[n // 2]


@pytest.fixture
def stack(tmp_path: Path):
    """A game-day stack of the plain stack, up; its status. Taken down at the end whatever happened."""
    status = json.loads(ok(aichaos("stack", "up", str(PLAIN), "--runtime", "local", "--json", cwd=tmp_path)))
    yield status
    aichaos("cleanup", "--run", status["stack_id"], cwd=tmp_path)


def assert_nothing_left(status: dict, state_home: Path) -> None:
    pids = [s["pid"] for s in status["services"].values()] + [status["keeper_pid"]]
    assert [p for p in pids if process_alive(p)] == []
    assert processes_holding(Path(status["folder"])) == []
    assert not (Path(status["folder"]) / "state.json").exists()
    assert list((state_home / "aichaos" / "runs").iterdir()) == []  # gone from the index of live runs


def test_a_game_day_up_inject_observe_clear_down_leaves_nothing(stack, tmp_path, state_home):
    frontend = stack["services"]["frontend"]["url"]
    assert stack["edges"]["frontend->backend"]["proxy"].startswith("127.0.0.1:")
    before = typical_ms(frontend)

    fault_id = ok(aichaos("fault", "inject", "latency", "--edge", "frontend->backend", "--set", "latency_ms=300",
                          cwd=tmp_path)).strip()
    assert fault_id == "f1"
    during = typical_ms(frontend)
    assert during - before == pytest.approx(300, abs=100), (before, during)
    listed = json.loads(ok(aichaos("fault", "list", "--json", cwd=tmp_path)))
    assert [f["id"] for f in listed] == ["f1"] and "+300 ms" in listed[0]["description"]

    cleared = aichaos("fault", "clear", "f1", cwd=tmp_path)
    assert "cleared f1" in ok(cleared) + cleared.stderr
    assert typical_ms(frontend) < before + 100

    down = aichaos("stack", "down", cwd=tmp_path)
    ok(down)
    assert "is down" in down.stderr
    assert_nothing_left(stack, state_home)

    journal = json.loads((Path(stack["folder"]) / "journal.json").read_text())
    assert [e["kind"] for e in journal["events"]] == ["up", "inject", "clear", "down"]
    assert journal["faults"][0]["reverted_at"] is not None and journal["status"] == "completed"
    report = ok(aichaos("report", stack["folder"], "--format", "md", cwd=tmp_path))
    assert "inject f1" in report and "+300 ms" in report


def test_invalid_faults_are_refused_naming_the_argument(stack, tmp_path):
    bad = aichaos("fault", "inject", "latency", "--edge", "frontend->backend", "--set", "latency_ms=-5", cwd=tmp_path)
    assert bad.returncode == 2 and "--set latency_ms=-5: latency_ms: must be at least 0" in bad.stderr
    bad = aichaos("fault", "inject", "latency", "--edge", "frontend->nope", "--set", "latency_ms=5", cwd=tmp_path)
    assert bad.returncode == 2 and "--edge" in bad.stderr and "no edge 'frontend->nope'" in bad.stderr
    bad = aichaos("fault", "inject", "latncy", cwd=tmp_path)
    assert bad.returncode == 2 and "did you mean 'latency'" in bad.stderr
    bad = aichaos("fault", "inject", "traffic_spike", "--set", "factor=2", cwd=tmp_path)
    assert bad.returncode == 2 and "load plan" in bad.stderr
    assert json.loads(ok(aichaos("fault", "list", "--json", cwd=tmp_path))) == []


def test_a_for_fault_is_reverted_after_the_command_that_injected_it_exited(stack, tmp_path):
    frontend = stack["services"]["frontend"]["url"]
    before = typical_ms(frontend)
    injected = aichaos("fault", "inject", "latency", "--edge", "frontend->backend", "--set", "latency_ms=300",
                       "--for", "2s", cwd=tmp_path)
    ok(injected)  # the command has exited: the keeper reverts it
    assert request_ms(frontend) >= before + 250
    time.sleep(2.5)
    assert typical_ms(frontend) < before + 100
    assert json.loads(ok(aichaos("fault", "list", "--json", cwd=tmp_path))) == []
    journal = json.loads((Path(stack["folder"]) / "journal.json").read_text())
    assert [e["kind"] for e in journal["events"]] == ["up", "inject", "expire"]


def test_cleanup_takes_down_a_game_day_stack_whose_keeper_was_killed(stack, tmp_path, state_home):
    ok(aichaos("fault", "inject", "latency", "--edge", "frontend->backend", "--set", "latency_ms=300", cwd=tmp_path))
    ok(aichaos("fault", "inject", "pause", "--service", "backend", "--for", "1h", cwd=tmp_path))
    os.kill(stack["keeper_pid"], signal.SIGKILL)
    time.sleep(0.2)
    assert all(process_alive(s["pid"]) for s in stack["services"].values())  # detached: still up

    status = aichaos("stack", "status", cwd=tmp_path)
    assert status.returncode == 2 and "keeper is gone" in status.stderr
    elsewhere = tmp_path / "elsewhere"  # found through the index of live runs, from any directory
    elsewhere.mkdir()
    cleaned = ok(aichaos("cleanup", cwd=elsewhere))
    assert "removed toxic aichaos_f1_0" in cleaned and "resumed paused process group" in cleaned, cleaned
    assert "killed service frontend" in cleaned and "killed proxy" in cleaned, cleaned
    assert_nothing_left(stack, state_home)


def test_cleanup_brings_a_live_game_day_stack_down_only_when_named(stack, tmp_path, state_home):
    ok(aichaos("fault", "inject", "latency", "--edge", "frontend->backend", "--set", "latency_ms=300", cwd=tmp_path))
    listed = aichaos("cleanup", cwd=tmp_path)
    assert f"game-day stack {stack['stack_id']} is up" in listed.stderr
    assert process_alive(stack["keeper_pid"])
    cleaned = ok(aichaos("cleanup", "--run", stack["stack_id"], cwd=tmp_path))
    assert "took the stack down through its keeper" in cleaned
    assert_nothing_left(stack, state_home)


def test_watch_prints_a_timestamped_line_a_second_and_records_what_it_measured(stack, tmp_path):
    """Not a terminal (and CI=true): plain lines on stdout, one per second, the fault in those it was
    active in; what was measured goes into the game-day journal."""
    load = ROOT / "tests" / "experiments" / "plain-latency.yaml"
    watch = subprocess.Popen([*AICHAOS, "watch", "--load", str(load), "--duration", "6s"], cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CI": "true"})
    time.sleep(3)
    ok(aichaos("fault", "inject", "latency", "--edge", "frontend->backend", "--set", "latency_ms=100", "--for", "2s",
               cwd=tmp_path))
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) >= 4 and "\x1b" not in out, out  # no live display, no colour
    assert all(line[:8].count(":") == 2 and " req/s · p50 " in line for line in lines), out
    faulted = [line for line in lines if "faults: f1 latency on frontend->backend" in line]
    assert faulted and all(line.endswith("| no faults") for line in lines if line not in faulted), out
    assert "frontend/echo_in_flight" in out  # the stack's own scraped metrics

    ok(aichaos("stack", "down", cwd=tmp_path))
    journal = json.loads((Path(stack["folder"]) / "journal.json").read_text())
    phases = {p["name"]: p["metrics"] for p in journal["phases"]}
    assert phases["up"]["count"] > 0 and phases["inject f1"]["p50_ms"] > phases["up"]["p50_ms"] + 50, phases
    assert journal["scrapes"]["series"], "the scrapes watch took are in the journal"
