"""The load side end to end: pacing, per-phase load changes, distributed workers that lose no
second, a locustfile, a remote `aichaos worker`, and the stack's scraped metrics in SLOs and stop
conditions. All on the plain stack, on 127.0.0.1."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from aichaos.ports import free_port
from tests.conftest import ROOT
from tests.integration.test_run import AICHAOS, assert_nothing_left, journal, run

STACK = ROOT / "sample_stack" / "plain.yaml"


def experiment(tmp_path: Path, load: str, body: str, name: str = "load") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""\
version: 1
name: {name}
stack: {STACK}
runtime: local
load:
  target: frontend
{load}
steady_state:
  window: 2s
  warmup: 1s
{body}""")
    return path


REQUESTS = "  requests:\n    - {name: work, method: GET, path: /work}\n"


def phase(j: dict, name: str) -> dict:
    return next(p for p in j["phases"] if p["name"] == name)


def assert_every_second_counted(j: dict) -> None:
    """The per-second buckets add up to Locust's own total, and no second of the run is missing."""
    counts = {s["second"]: s["count"] for s in j["samples"]}
    assert sum(counts.values()) == j["load_totals"]["locust_total"] == j["load_totals"]["collected_total"] > 0
    run_seconds = range(int(j["phases"][0]["start"]), int(j["phases"][-1]["end"]))
    missing = [s for s in run_seconds if counts.get(s, 0) == 0]
    assert missing == [], f"seconds with no samples: {missing}"


def test_paced_load_reaches_its_rate_and_a_phase_spike_doubles_it(tmp_path):
    path = experiment(tmp_path, "  users: 6\n  rate: 80\n" + REQUESTS, """\
  slo: {p95_ms: {max: 200}}
phases:
  - {name: baseline, duration: 5s}
  - {name: spike, duration: 5s, load: {rate: 160}}
  - {name: after, duration: 4s}
""")
    run_dir = tmp_path / "run"
    result = run(["run", str(path), "--run-dir", str(run_dir)])
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(run_dir)
    base, spike, after = phase(j, "baseline"), phase(j, "spike"), phase(j, "after")
    assert base["offered_rps"] == 80 and spike["offered_rps"] == 160
    assert base["metrics"]["rps"] == pytest.approx(80, rel=0.1)
    assert spike["metrics"]["rps"] == pytest.approx(160, rel=0.1)
    assert after["metrics"]["rps"] == pytest.approx(80, rel=0.1)
    assert 0.9 <= spike["load_ratio"] <= 1.1
    assert_every_second_counted(j)
    assert_nothing_left(j)


def test_closed_loop_that_slows_down_is_reported_as_falling_short(tmp_path):
    # 4 users, 150 ms of latency: each user can send at most ~6 requests a second
    path = experiment(tmp_path, "  users: 4\n" + REQUESTS, """\
  slo: {p95_ms: {max: 1000}}
phases:
  - {name: baseline, duration: 4s}
  - name: slow
    duration: 5s
    faults: [{type: latency, edge: frontend->backend, latency_ms: 150}]
""")
    run_dir = tmp_path / "run"
    result = run(["run", str(path), "--run-dir", str(run_dir)])
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(run_dir)
    slow = phase(j, "slow")
    assert slow["offered_rps"] is None and slow["users"] == pytest.approx(4)
    assert slow["load_ratio"] < 0.2  # the load fell with the service: the report must say so
    assert "slowed the load down" in result.stdout + result.stderr
    assert "slowed the load down" in (run_dir / "report.md").read_text()


def test_two_workers_lose_no_second(tmp_path):
    path = experiment(tmp_path, "  users: 6\n  workers: 2\n  wait: {min: 5ms, max: 15ms}\n" + REQUESTS, """\
  slo: {p95_ms: {max: 200}}
phases:
  - {name: baseline, duration: 4s}
  - name: fault
    duration: 4s
    faults: [{type: latency, edge: frontend->backend, latency_ms: 50}]
  - {name: after, duration: 4s}
""")
    run_dir = tmp_path / "run"
    result = run(["run", str(path), "--run-dir", str(run_dir)])
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(run_dir)
    assert_every_second_counted(j)
    assert phase(j, "baseline")["users"] == pytest.approx(6, abs=0.5)
    added = phase(j, "fault")["metrics"]["p50_ms"] - phase(j, "baseline")["metrics"]["p50_ms"]
    assert added == pytest.approx(50, rel=0.25)  # the workers' latencies arrive intact
    assert_nothing_left(j)
    log = (run_dir / "logs" / "load.log").read_text()
    assert "Unknown message" not in log and "Traceback" not in log


def test_a_remote_worker_joins_with_aichaos_worker(tmp_path):
    port = free_port()
    path = experiment(tmp_path, f"  users: 3\n  remote_workers: 1\n  master_port: {port}\n"
                                "  wait: {min: 5ms, max: 15ms}\n" + REQUESTS, """\
  slo: {p95_ms: {max: 200}}
phases:
  - {name: baseline, duration: 4s}
  - {name: after, duration: 3s}
""")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*AICHAOS, "run", str(path), "--run-dir", str(run_dir)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3)  # the stack comes up and the master waits for its worker
    worker = subprocess.Popen([*AICHAOS, "worker", "--master", f"127.0.0.1:{port}"], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err + out
        worker_out, _ = worker.communicate(timeout=30)  # the worker leaves when the run ends
    finally:
        for p in (proc, worker):
            if p.poll() is None:
                p.kill()
    j = journal(run_dir)
    assert_every_second_counted(j)
    assert "joining the load" in worker_out
    assert_nothing_left(j)


def test_a_locustfile_drives_the_load_and_is_still_measured(tmp_path):
    (tmp_path / "users.py").write_text("""\
from locust import FastHttpUser, constant, task

class Reader(FastHttpUser):
    wait_time = constant(0.01)

    @task
    def work(self):
        self.client.get("/work", name="custom")
""")
    path = experiment(tmp_path, "  users: 3\n  locustfile: users.py\n", """\
  slo: {p95_ms: {max: 200}}
phases:
  - {name: baseline, duration: 4s}
  - name: fault
    duration: 3s
    faults: [{type: down, edge: frontend->backend}]
""")
    run_dir = tmp_path / "run"
    result = run(["run", str(path), "--run-dir", str(run_dir)])
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(run_dir)
    assert_every_second_counted(j)
    assert phase(j, "baseline")["metrics"]["error_rate"] == 0
    assert phase(j, "fault")["metrics"]["error_rate"] > 0.9  # its requests are the ones measured


def test_scraped_metric_slo_detects_what_latency_does_not_and_a_stop_condition_aborts(tmp_path):
    # backend failures are invisible to a latency SLO on a fault that only errors: the scraped
    # counter sees them, and the stop condition on it aborts the run
    path = experiment(tmp_path, "  users: 4\n  wait: {min: 10ms, max: 20ms}\n" + REQUESTS, """\
  slo:
    p95_ms: {max: 500}
    metrics:
      frontend: {echo_backend_failures_total: {max: 0}, echo_in_flight: {max: 100}}
phases:
  - {name: baseline, duration: 4s}
  - name: fault
    duration: 12s
    faults: [{type: down, edge: frontend->backend}]
  - {name: after, duration: 4s}
stop_when:
  - metrics: {frontend: {echo_backend_failures_total: {above: 5, for: 2s}}}
""")
    run_dir = tmp_path / "run"
    result = run(["run", str(path), "--run-dir", str(run_dir)])
    assert result.returncode == 1, result.stderr + result.stdout
    j = journal(run_dir)
    assert j["status"] == "aborted" and "echo_backend_failures_total" in j["stop"]
    fault = phase(j, "fault")
    assert fault["end"] - fault["start"] < 10  # stopped well before the phase's 12 s
    base_value = j["baseline"]["scraped"]["frontend/echo_backend_failures_total"]
    assert base_value == {"min": 0.0, "max": 0.0}
    assert fault["metrics"]["scraped"]["frontend/echo_backend_failures_total"]["max"] > 5
    [result_] = j["fault_results"]
    assert result_["time_to_detect_s"] is not None and result_["time_to_detect_s"] <= 3
    assert j["scrapes"]["series"] and "frontend" in j["scrapes"]["kinds"]
    assert "Service metrics" in (run_dir / "report.md").read_text()
    assert_nothing_left(j)
