"""End-to-end runs of `aichaos run` on the local runtime: real processes, real Locust, real proxy.

Most use the plain stack (sample_stack/plain.yaml) to stay quick; one runs the torch sample stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

PLAIN = ROOT / "tests" / "experiments" / "plain-latency.yaml"
AICHAOS = [sys.executable, "-m", "aichaos"]


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_holding(folder: Path) -> list[str]:
    """Processes with a file under ``folder`` open (every service, proxy and load process of a run
    writes its log there): any left after a run are leftovers, even ones the run never recorded."""
    found = []
    prefix = str(folder.resolve())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            targets = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(t.startswith(prefix) for t in targets) and process_alive(int(proc.name)):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def run(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(AICHAOS + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def journal(run_dir: Path) -> dict:
    return json.loads((run_dir / "journal.json").read_text())


def started_pids(j: dict) -> list[int]:
    return [s["pid"] for s in j["services"].values() if s.get("pid")]


def assert_nothing_left(j: dict, extra: list[int] = ()) -> None:
    assert j["leftovers"] == []
    for fault in j["faults"]:
        assert fault["reverted_at"] is not None and fault["revert_error"] is None, fault
    alive = [pid for pid in [*started_pids(j), *extra] if process_alive(pid)]
    assert alive == [], f"processes left running: {alive}"
    assert processes_holding(Path(j["run_dir"])) == []


def test_latency_fault_is_measured_and_recovered(tmp_path):
    run_dir = tmp_path / "run"
    result = run(["run", str(PLAIN), "--run-dir", str(run_dir), "--junit", str(tmp_path / "junit.xml")])
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(run_dir)
    assert j["status"] == "completed" and j["verdict"] == "pass" and j["exit_code"] == 0
    phases = {p["name"]: p["metrics"] for p in j["phases"]}
    added = phases["fault"]["p50_ms"] - phases["baseline"]["p50_ms"]
    assert added == pytest.approx(100, rel=0.2), phases  # the injected 100 ms, within 20%
    [fault] = j["fault_results"]
    assert fault["time_to_recover_s"] is not None and fault["time_to_recover_s"] <= 3
    assert fault["time_to_detect_s"] is not None and fault["time_to_detect_s"] <= 3  # p95 SLO is 60 ms
    assert phases["recovery"]["p50_ms"] < phases["baseline"]["p50_ms"] + 20
    # no second lost between the load process and the journal
    assert sum(s["count"] for s in j["samples"]) == j["load_totals"]["locust_total"] > 0
    assert j["environment"]["proxy"]["kind"] in ("builtin", "toxiproxy-server")
    assert_nothing_left(j)
    assert not (run_dir / "state.json").exists()
    junit = (tmp_path / "junit.xml").read_text()
    assert 'failures="0"' in junit and "recovery_time" in junit
    assert "verdict: PASS" in result.stderr


def test_a_gate_that_cannot_hold_exits_1_and_names_it(tmp_path):
    run_dir = tmp_path / "run"
    result = run(["run", str(PLAIN), "--run-dir", str(run_dir),
                  "--set", "gates.degradation={p50_ms: {max_ratio: 1.5}}",
                  "--set", "phases.0.duration=5s", "--set", "phases.1.duration=5s", "--set", "phases.2.duration=6s"])
    assert result.returncode == 1, result.stderr + result.stdout
    assert "degradation.p50_ms" in result.stderr  # the verdict line names the failed gate
    j = journal(run_dir)
    assert j["verdict"] == "fail"
    failed = [g for g in j["gates"] if not g["passed"]]
    assert [g["name"] for g in failed] == ["degradation.p50_ms"]
    assert_nothing_left(j)


def _start(args: list[str], run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(AICHAOS + args + ["--run-dir", str(run_dir)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def _state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _state_pids(state: dict) -> list[int]:
    pids = list(state.get("services", {}).values())
    return pids + [p for p in (state.get("proxy_pid"), state.get("load_pid")) if p]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_fault_reverts_tears_down_and_exits_130(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = _start(["run", str(PLAIN)], run_dir)
    _wait_for(lambda: _state(run_dir).get("faults"))  # the fault is applied
    pids = _state_pids(_state(run_dir))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    j = journal(run_dir)
    assert j["status"] == "interrupted" and j["verdict"] == "interrupted"
    assert signal.Signals(sig).name in " ".join(j["errors"])
    assert j["faults"] and all(f["reverted_at"] for f in j["faults"])
    assert_nothing_left(j, pids)
    assert "Traceback" not in err


def test_signal_during_setup(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(["run", str(PLAIN)], run_dir)
    _wait_for(lambda: _state(run_dir).get("services"))  # something has started
    pids = _state_pids(_state(run_dir))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    j = journal(run_dir)
    assert j["status"] == "interrupted"
    time.sleep(0.2)
    assert [p for p in pids if process_alive(p)] == []


def test_target_killed_mid_fault_exits_3_and_cleans_up(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(["run", str(PLAIN)], run_dir)
    _wait_for(lambda: _state(run_dir).get("faults"))
    state = _state(run_dir)
    os.killpg(state["services"]["backend"], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "backend" in err and "SIGKILL" in err
    j = journal(run_dir)
    assert j["status"] == "error" and j["verdict"] == "error"
    assert all(f["reverted_at"] for f in j["faults"])
    assert [p for p in _state_pids(state) if process_alive(p)] == []


def test_cleanup_after_kill_9(tmp_path):
    runs = tmp_path / "runs"
    run_dir = runs / "killed"
    proc = _start(["run", str(PLAIN)], run_dir)
    _wait_for(lambda: _state(run_dir).get("faults"))
    state = _state(run_dir)
    proc.kill()
    proc.communicate(timeout=10)
    pids = _state_pids(state)
    assert any(process_alive(p) for p in pids)  # kill -9 left the stack behind
    result = run(["cleanup", "--runs-dir", str(runs)])
    assert result.returncode == 0, result.stderr
    assert "killed service backend" in result.stdout
    time.sleep(0.3)
    assert [p for p in pids if process_alive(p)] == []
    assert not (run_dir / "state.json").exists()
    assert "nothing to clean up" in run(["cleanup", "--runs-dir", str(runs)]).stderr


def test_cleanup_after_kill_9_resumes_a_paused_service_and_stops_a_co_tenant(tmp_path):
    runs = tmp_path / "runs"
    run_dir = runs / "killed"
    proc = _start(["run", str(PLAIN), "--set", "phases.1.faults=[{type: pipeline_stall, service: backend}, "
                   "{type: device_memory_pressure, service: backend, mb: 64}]"], run_dir)
    _wait_for(lambda: len(_state(run_dir).get("faults", [])) == 1 and _state(run_dir).get("helpers"))
    state = _state(run_dir)
    [co_tenant] = state["helpers"].values()
    backend = state["services"]["backend"]
    assert Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"  # stopped
    proc.kill()
    proc.communicate(timeout=10)
    assert process_alive(co_tenant)
    result = run(["cleanup", "--runs-dir", str(runs)])
    assert result.returncode == 0, result.stderr
    assert f"resumed paused process group {backend}" in result.stdout
    assert "killed co-tenant fault.1" in result.stdout
    time.sleep(0.3)
    assert [p for p in [*_state_pids(state), co_tenant] if process_alive(p)] == []


def test_stack_that_fails_to_start_says_which_and_why(tmp_path, write):
    write("stack.yaml", """\
services:
  broken:
    command: [python, -c, "import sys; print('model weights missing'); sys.exit(4)"]
    ready: {http: /health, timeout: 20s}
""")
    exp = write("exp.yaml", """\
version: 1
name: broken
stack: stack.yaml
load: {target: broken, users: 1, requests: [{name: x, path: /}]}
steady_state: {slo: {p95_ms: {max: 10}}}
phases: [{name: baseline, duration: 2s}]
""")
    result = run(["run", str(exp), "--run-dir", str(tmp_path / "run")])
    assert result.returncode == 3
    assert "'broken' exited with code 4" in result.stderr
    assert "model weights missing" in result.stderr  # its last log lines
    assert "Traceback" not in result.stderr


@pytest.mark.torch
def test_sample_stack_model_latency_spike(tmp_path):
    """The demo experiment, shortened: latency on gateway->model-server shows in p50 and recovers."""
    pytest.importorskip("torch")
    run_dir = tmp_path / "run"
    result = run(["run", "experiments/model-latency-spike.yaml", "--run-dir", str(run_dir), "--runtime", "local",
                  "--set", "phases.0.duration=12s", "--set", "phases.1.duration=12s",
                  "--set", "phases.2.duration=12s"], timeout=240)
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(run_dir)
    phases = {p["name"]: p["metrics"] for p in j["phases"]}
    added = phases["fault"]["p50_ms"] - phases["baseline"]["p50_ms"]
    assert added == pytest.approx(300, rel=0.2), phases
    assert phases["fault"]["error_rate"] == 0
    fault = j["fault_results"][0]
    # steady throughout ("not degraded": the SLO held), or steady again after the revert
    assert fault["degraded"] is False or fault["time_to_recover_s"] is not None
    assert_nothing_left(j)


def test_keep_stack_leaves_it_running_until_cleanup(tmp_path):
    runs = tmp_path / "runs"
    run_dir = runs / "kept"
    result = run(["run", str(PLAIN), "--run-dir", str(run_dir), "--keep-stack", "--set", "phases.0.duration=3s",
                  "--set", "phases.1.duration=2s", "--set", "phases.2.duration=2s"])
    assert result.returncode in (0, 1), result.stderr
    j = journal(run_dir)
    pids = started_pids(j)
    try:
        assert pids and all(process_alive(p) for p in pids)
        assert all(f["reverted_at"] for f in j["faults"])  # faults are reverted even when the stack stays
        result = run(["cleanup", "--runs-dir", str(runs), "--run", j["run_id"]])
        assert result.returncode == 0, result.stderr
        time.sleep(0.3)
        assert [p for p in pids if process_alive(p)] == []
    finally:
        for pid in pids:
            if process_alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_down_fault_shows_as_errors_and_recovers(tmp_path):
    """`down` on frontend->backend: the frontend answers 502 while the edge is down, and only then."""
    run_dir = tmp_path / "run"
    result = run(["run", str(PLAIN), "--run-dir", str(run_dir),
                  "--set", "phases.1.faults=[{type: down, edge: frontend->backend}]",
                  "--set", "phases.0.duration=4s", "--set", "phases.1.duration=4s", "--set", "phases.2.duration=6s"])
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(run_dir)
    phases = {p["name"]: p["metrics"] for p in j["phases"]}
    assert phases["baseline"]["error_rate"] == 0
    assert phases["fault"]["error_rate"] > 0.9
    assert set(phases["fault"]["errors"]) == {"5xx"}  # the frontend's 502s
    assert phases["recovery"]["error_rate"] < 0.01
    [fault] = j["fault_results"]
    assert fault["time_to_detect_s"] is not None and fault["time_to_detect_s"] <= 2
    assert fault["time_to_recover_s"] is not None and fault["time_to_recover_s"] <= 2
    assert_nothing_left(j)
