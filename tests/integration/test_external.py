"""Stacks nobody here wrote: attaching to a running system (runtime external), and a third-party
server from PyPI with several ports (Dask's scheduler: its comm port, and a dashboard port that
serves HTTP and Prometheus metrics), run under a latency experiment while its metrics are scraped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from aichaos.ports import free_port
from aichaos.runtime.readiness import http_ok
from tests.conftest import ROOT
from tests.integration.test_run import journal, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPERIMENT = """\
version: 1
name: {name}
stack: stack.yaml
runtime: {runtime}
load:
  target: {target}
  users: 6
  wait: {{min: 10ms, max: 30ms}}
  timeout: 5s
  requests: [{{name: r, method: GET, path: {path}}}]
steady_state:
  window: 2s
  warmup: 1s
  slo: {slo}
phases:
  - {{name: baseline, duration: 5s}}
  - {{name: fault, duration: 5s, faults: [{{type: latency, edge: {edge}, latency_ms: 150}}]}}
  - {{name: recovery, duration: 4s}}
"""


def phase(j: dict, name: str) -> dict:
    return next(p for p in j["phases"] if p["name"] == name)["metrics"]


def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    import os

    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture
def running_stack():
    """The plain stack started by hand, as a team's staging system would be: the frontend's backend
    address is given by the test (through the fault proxy's fixed port, or straight to the backend)."""
    started: list[subprocess.Popen[bytes]] = []

    def up(through_proxy: bool) -> dict[str, int]:
        ports = {"backend": free_port(), "frontend": free_port(), "listen": free_port()}
        backend_url = f"http://127.0.0.1:{ports['listen'] if through_proxy else ports['backend']}"
        echo = [sys.executable, "-m", "sample_stack.echo"]
        started.append(start([*echo, "backend", "--port", str(ports["backend"])]))
        started.append(start([*echo, "frontend", "--port", str(ports["frontend"])], {"BACKEND_URL": backend_url}))
        deadline = time.monotonic() + 20
        while not all(http_ok("127.0.0.1", ports[n], "/health") for n in ("backend", "frontend")):
            assert time.monotonic() < deadline, "the hand-started stack did not come up"
            time.sleep(0.1)
        return ports

    yield up
    for process in started:
        process.terminate()
        process.wait(10)


def attached(tmp_path: Path, ports: dict[str, int]) -> Path:
    (tmp_path / "stack.yaml").write_text(f"""\
services:
  backend:
    address: 127.0.0.1:{ports['backend']}
    ready: {{http: /health}}
  frontend:
    address: 127.0.0.1:{ports['frontend']}
    ready: {{http: /health}}
    metrics: /metrics
    depends_on:
      backend: {{env: BACKEND_URL, scheme: http, listen: {ports['listen']}}}
""")
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT.format(name="attached", runtime="external", target="frontend", path="/work",
                                      slo="{p95_ms: {max: 100}}", edge="frontend->backend"))
    return path


def test_attached_run_injects_into_a_system_it_did_not_start(tmp_path, running_stack):
    ports = running_stack(through_proxy=True)
    result = run(["run", str(attached(tmp_path, ports)), "--run-dir", str(tmp_path / "run")])
    out = result.stdout + result.stderr
    assert result.returncode in (0, 1), out
    j = journal(tmp_path / "run")
    assert j["environment"]["runtime"] == "external"
    # the run printed where to route the edge, and checked that traffic did go through it
    assert f"frontend: send its calls through the fault proxy: BACKEND_URL=http://127.0.0.1:{ports['listen']}" in out
    assert "every edge carried traffic through the fault proxy" in out
    added = phase(j, "fault")["p50_ms"] - phase(j, "baseline")["p50_ms"]
    assert added == pytest.approx(150, rel=0.25)
    # nothing of the stack was started or stopped by the run
    assert all(s["pid"] is None and s["container"] is None for s in j["services"].values())
    assert http_ok("127.0.0.1", ports["frontend"], "/health") and http_ok("127.0.0.1", ports["backend"], "/health")


def test_attached_run_refuses_an_edge_that_sees_no_traffic(tmp_path, running_stack):
    ports = running_stack(through_proxy=False)  # the frontend calls the backend directly: the proxy sees nothing
    result = run(["run", str(attached(tmp_path, ports)), "--run-dir", str(tmp_path / "run")])
    out = result.stdout + result.stderr
    assert result.returncode == 3, out
    assert "no traffic went through the fault proxy on frontend->backend" in out
    assert f"route it through 127.0.0.1:{ports['listen']}" in out
    j = journal(tmp_path / "run")
    assert j["faults"] == []  # nothing was injected


def test_attached_container_faults_need_allow_external(tmp_path, running_stack):
    ports = {"backend": 1, "frontend": 2, "listen": 3}
    path = attached(tmp_path, ports)
    path.write_text(path.read_text().replace("{type: latency, edge: frontend->backend, latency_ms: 150}",
                                             "{type: kill, service: backend}"))
    result = run(["run", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "aichaos touches it only with --allow-external" in result.stdout + result.stderr


def test_a_third_party_server_with_several_ports_under_a_latency_fault(tmp_path):
    """Dask's scheduler (installed from PyPI by the dev extra): a comm port and a dashboard port with
    /health, JSON endpoints and /metrics. The echo frontend forwards the load to its dashboard through
    the fault proxy, on the edge that names that port; its Prometheus metrics are scraped from it."""
    pytest.importorskip("distributed")
    (tmp_path / "stack.yaml").write_text("""\
services:
  scheduler:
    command: [python, -m, distributed.cli.dask_scheduler, --host, 127.0.0.1, --port, "{port.comm}",
              --dashboard-address, "127.0.0.1:{port.http}"]
    ports: {comm: null, http: null}
    ready: {http: /health, port: http, timeout: 60s}
    metrics: {port: http, path: /metrics}
    workdir: .
  frontend:
    command: [python, -m, sample_stack.echo, frontend, --port, "{port}"]
    env_file: [frontend.env]
    ready: {http: /health}
    depends_on:
      scheduler: {env: BACKEND_URL, scheme: http, port: http}
""")
    (tmp_path / "frontend.env").write_text("PYTHONPATH=" + str(ROOT) + "\n")
    slo = "{p95_ms: {max: 100}, metrics: {scheduler: {dask_scheduler_clients: {max: 0}}}}"
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT.format(name="dask", runtime="local", target="frontend", path="/json/counts.json",
                                      slo=slo, edge="frontend->scheduler"))
    result = run(["run", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.returncode in (0, 1), result.stdout + result.stderr
    j = journal(tmp_path / "run")
    scheduler = j["services"]["scheduler"]
    assert set(scheduler["ports"]) == {"comm", "http"} and scheduler["port"] == scheduler["ports"]["comm"]
    assert j["proxies"]["frontend->scheduler"]["upstream"].endswith(f":{scheduler['ports']['http']}")
    added = phase(j, "fault")["p50_ms"] - phase(j, "baseline")["p50_ms"]
    assert added == pytest.approx(150, rel=0.25)
    assert phase(j, "baseline")["error_rate"] == 0
    # its metrics were scraped from the named port into the time line, every second
    assert j["scrapes"]["kinds"]["scheduler"]["dask_scheduler_clients"] == "gauge"
    scraped = [s for s in j["scrapes"]["series"] if "scheduler" in s["scraped"]]
    assert len(scraped) >= 10 and scraped[-1]["services"]["scheduler"]["dask_scheduler_clients"] == 0
