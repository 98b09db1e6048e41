"""The verdict's four blind spots, each closed, on the plain stack with real processes and load:
percentiles from a handful of survivors, an SLO that names no error rate, recovery that leaves out
a restart, and faults injected into a baseline that was never steady."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

AICHAOS = [sys.executable, "-m", "aichaos"]

STACK = """\
services:
  backend:
    command: [python, -m, sample_stack.echo, backend, --port, "{{port}}"{backend_args}]
    ready: {{http: /health, timeout: 30s}}
  frontend:
    command: [python, -m, sample_stack.echo, frontend, --port, "{{port}}"]
    ready: {{http: /health, timeout: 30s}}
    depends_on:
      backend: {{env: BACKEND_URL, scheme: http}}
"""

EXPERIMENT = """\
version: 1
name: {name}
stack: stack.yaml
runtime: local
load:
  target: frontend
  users: 4
  wait: {{min: 10ms, max: 30ms}}
  requests:
    - {{name: work, method: GET, path: /work}}
steady_state:
  window: 1s
  warmup: 1s
  slo: {slo}
phases:
  - {{name: baseline, duration: 4s}}
  - name: fault
    duration: {fault_s}s
    faults:
      - {fault}
  - {{name: recovery, duration: 8s}}
gates:
{gates}
"""


def run(tmp_path: Path, name: str, fault: str, *, slo: str = "{p95_ms: {max: 200}}", gates: str = "",
        backend_args: str = "", fault_s: int = 3) -> tuple[subprocess.CompletedProcess[str], dict]:
    (tmp_path / "stack.yaml").write_text(STACK.format(backend_args=backend_args))
    path = tmp_path / f"{name}.yaml"
    path.write_text(EXPERIMENT.format(name=name, slo=slo, fault=fault, fault_s=fault_s,
                                      gates=gates or "  baseline_steady: true"))
    run_dir = tmp_path / "run"
    result = subprocess.run([*AICHAOS, "run", str(path), "--run-dir", str(run_dir)], capture_output=True,
                            text=True, timeout=180, cwd=ROOT)
    return result, json.loads((run_dir / "journal.json").read_text())


def test_a_down_edge_with_a_handful_of_survivors_fails_its_percentile_gate(tmp_path):
    result, j = run(tmp_path, "handful", "{type: down, edge: frontend->backend}",
                    gates="  degradation: {p95_ms: {max_ratio: 4.0}}")
    fault = next(p for p in j["phases"] if p["name"] == "fault")["metrics"]
    assert fault["error_rate"] > 0.95 and fault["ok_count"] < 20  # (a request or two may slip through)
    assert fault["p95_ms"] is None
    (gate,) = [g for g in j["gates"] if g["name"] == "degradation.p95_ms"]
    assert not gate["passed"] and gate["value"] == "insufficient data"
    assert "a percentile needs 20" in gate["detail"]
    assert result.returncode == 1 and j["verdict"] == "fail"
    assert "insufficient (" in result.stdout  # the phase table says so too
    # errors you can read: the most frequent distinct one, counted, with the frontend's answer as example
    top = fault["top_errors"][0]
    assert top["kind"] == "5xx" and top["count"] >= 0.9 * fault["count"]
    assert top["example"].startswith("502 ") and "backend failed" in top["example"]
    assert f"error seen [fault] {top['count']} x 5xx: 502" in result.stderr


def test_an_slo_that_names_only_latency_still_sees_a_fast_failing_outage(tmp_path):
    result, j = run(tmp_path, "errors", "{type: reset_peer, edge: frontend->backend, timeout_ms: 0}",
                    gates="  detect_time: {max: 3s}")
    fault = next(p for p in j["phases"] if p["name"] == "fault")["metrics"]
    assert fault["error_rate"] > 0.5
    (result_fault,) = j["fault_results"]
    assert result_fault["time_to_detect_s"] is not None and result_fault["time_to_detect_s"] <= 3
    assert "no violation" not in result.stdout + result.stderr
    assert "(the default: the SLO names no error rate)" in result.stderr
    assert j["rules"]["error_rate_default"] is True


def test_recovery_time_includes_the_restart_of_a_killed_slow_starting_service(tmp_path):
    result, j = run(tmp_path, "restart", "{type: kill, service: backend}", backend_args=', --startup-delay, "3"',
                    slo="{p95_ms: {max: 200}, error_rate: {max: 0.01}}", gates="  recovery_time: {max: 15s}")
    (fault,) = j["fault_results"]
    fault_phase = next(p for p in j["phases"] if p["name"] == "fault")
    assert abs(fault["revert"] - fault_phase["end"]) < 0.01  # counted from the phase's end
    assert fault["revert_s"] >= 2.9  # the restart and its readiness wait, recorded
    assert fault["time_to_recover_s"] is not None and 3.0 <= fault["time_to_recover_s"] <= 5.0
    recovery = next(p for p in j["phases"] if p["name"] == "recovery")["metrics"]
    assert recovery["error_rate"] > 0.1  # errors went on while it restarted, and the figure shows them
    assert "revert took 3." in result.stdout


def test_a_baseline_whose_requests_all_fail_stops_the_run_before_any_fault(tmp_path):
    result, j = run(tmp_path, "broken", "{type: latency, edge: frontend->backend, latency_ms: 100}",
                    backend_args=', --fail-status, "404"')
    assert result.returncode == 3 and j["status"] == "error"
    assert j["faults"] == [] and [p["name"] for p in j["phases"]] == ["baseline"]
    assert "the baseline was not steady" in result.stderr and "--allow-unhealthy-baseline" in j["errors"][0]
    assert "4xx" in j["errors"][0]  # the frontend passes on the backend's 404: what failed, by kind


def test_a_reader_that_closes_stdout_early_loses_nothing(tmp_path):
    """`aichaos run x.yaml | head -1`: the journal is written, everything torn down, the exit code the verdict's."""
    run_dir = tmp_path / "run"
    script = (f"{sys.executable} -m aichaos run tests/experiments/plain-short.yaml --run-dir {run_dir} "
              "--set phases.2.duration=2s | head -c 1 >/dev/null; echo ${PIPESTATUS[0]}")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    j = json.loads((run_dir / "journal.json").read_text())
    assert int(result.stdout.strip()) == j["exit_code"] and j["verdict"] in ("pass", "fail")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert j["leftovers"] == [] and not (run_dir / "state.json").exists()
