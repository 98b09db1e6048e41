"""The docker runtime and container faults against a real Docker engine. `make test` runs
scripts/docker-env first, which installs and starts an engine where it can and builds the local base
image; without an engine these tests are skipped.

Most tests use the host's network (`--network host`), every port on 127.0.0.1. The tests of the
run's own network (the default for users) put the containers on a bridge network that the run makes
and removes: the containers talk to each other there, inside network namespaces this test run's
engine made, and everything the tests themselves send goes to ports published on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_run import AICHAOS, _state, _wait_for, journal, run

pytestmark = [pytest.mark.docker, pytest.mark.slow]
PLAIN = ROOT / "tests" / "experiments" / "plain-latency.yaml"
BASE = "aichaos-base:bookworm"


@pytest.fixture(scope="module")
def docker_args() -> list[str]:
    """--runtime docker, and the locally built base image when there is one (no registry here)."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers ({exc}); scripts/docker-env sets one up where it can")
    args = ["--runtime", "docker", "--network", "host"]
    try:
        client.images.get(BASE)
        args += ["--build-arg", f"BASE_IMAGE={BASE}"]
    except docker.errors.ImageNotFound:
        pass  # the Dockerfile's default base, which needs a registry
    return args


def labelled(run_id: str) -> list:
    import docker

    return docker.from_env().containers.list(all=True, filters={"label": f"aichaos.run={run_id}"})


def networks(run_id: str) -> list[str]:
    import docker

    return [n.name for n in docker.from_env().networks.list(filters={"label": f"aichaos.run={run_id}"})]


@pytest.fixture
def run_network_args(docker_args) -> list[str]:
    """docker_args on the run's own network."""
    return [*docker_args[:docker_args.index("--network")], "--network", "run",
            *docker_args[docker_args.index("--network") + 2:]]


def plain(tmp_path: Path, faults: str, extra: list[str] = ()) -> list[str]:
    return [str(PLAIN), "--run-dir", str(tmp_path / "run"), "--set", f"phases.1.faults={faults}", *extra]


def phase(j: dict, name: str) -> dict:
    return next(p for p in j["phases"] if p["name"] == name)["metrics"]


def test_sample_stack_under_docker_passes_the_demo_experiment(tmp_path, docker_args):
    run_dir = tmp_path / "run"
    result = run(["run", str(ROOT / "experiments" / "model-latency-spike.yaml"), "--run-dir", str(run_dir),
                  *docker_args, "--set", "phases.0.duration=10s", "--set", "phases.1.duration=8s",
                  "--set", "phases.2.duration=14s"], timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(run_dir)
    assert j["environment"]["runtime"] == "docker"
    assert all(s["container"] for s in j["services"].values())
    proxy = j["environment"]["proxy"]["kind"]
    assert proxy in ("toxiproxy-image", "builtin-container")  # the fault proxy ran in a container too
    if proxy == "builtin-container":
        assert "could not be pulled" in result.stdout + result.stderr  # and the run said which, and why
    assert (run_dir / "logs" / "proxy.log").read_text()
    added = phase(j, "fault")["p50_ms"] - phase(j, "baseline")["p50_ms"]
    assert added == pytest.approx(300, rel=0.2)
    assert "under docker" in result.stdout + result.stderr  # the summary prints the time to a ready stack
    print(f"stack ready under docker in {j['stack_ready_s']:.1f}s")
    assert labelled(j["run_id"]) == []
    assert (run_dir / "logs" / "model-server.log").read_text().strip()  # the container's output was kept


@pytest.mark.parametrize("fault, check", [
    ("{type: kill, service: backend}", "errors"),
    ("{type: stop, service: backend}", "errors"),
    ("{type: pause, service: backend}", "latency"),
])
def test_container_fault_shows_in_the_metrics_and_is_reverted(tmp_path, docker_args, fault, check):
    result = run(["run", *plain(tmp_path, f"[{fault}]", docker_args), "--set", "load.timeout=1s"], timeout=300)
    assert result.returncode in (0, 1), result.stderr + result.stdout
    j = journal(tmp_path / "run")
    base, during, after = phase(j, "baseline"), phase(j, "fault"), phase(j, "recovery")
    if check == "errors":
        assert during["error_rate"] > 0.5 and base["error_rate"] == 0
    else:  # a paused backend answers nothing: the frontend's calls wait, the load times out
        assert during["errors"].get("timeout", 0) > 0 or (during["p50_ms"] or 0) > 500
    [applied] = j["faults"]
    assert applied["reverted_at"] is not None and applied["revert_error"] is None
    [fault_result] = j["fault_results"]
    assert fault_result["time_to_recover_s"] is not None
    assert after["error_rate"] < 0.05
    assert labelled(j["run_id"]) == []


def test_cpu_squeeze_shows_as_latency_and_both_squeezes_are_restored(tmp_path, docker_args):
    faults = "[{type: cpu, service: backend, cpus: 0.02}, {type: memory, service: frontend, mb: 96}]"
    result = run(["run", *plain(tmp_path, faults, docker_args), "--keep-stack"], timeout=300)
    assert result.returncode in (0, 1), result.stderr + result.stdout
    j = journal(tmp_path / "run")
    assert phase(j, "fault")["p50_ms"] > 2 * phase(j, "baseline")["p50_ms"]  # 2% of a CPU: the backend crawls
    try:
        containers = {c.labels["aichaos.service"]: c for c in labelled(j["run_id"])}
        assert set(containers) == {"backend", "frontend", "fault-proxy"}  # --keep-stack keeps them all
        backend, frontend = containers["backend"].attrs["HostConfig"], containers["frontend"].attrs["HostConfig"]
        assert backend["CpuQuota"] in (0, -1)  # the squeeze was given back
        assert frontend["Memory"] > 1024 * 2**20
        assert [f["description"] for f in j["faults"]] == ["backend limited to 0.02 CPU",
                                                           "frontend limited to 96 MiB of memory"]
        assert all(f["reverted_at"] and not f["revert_error"] for f in j["faults"])
    finally:
        cleaned = run(["cleanup", "--runs-dir", str(tmp_path), "--run", j["run_id"]])
    assert cleaned.returncode == 0, cleaned.stderr
    assert labelled(j["run_id"]) == []


def test_a_service_killed_for_memory_says_so(tmp_path, docker_args):
    from aichaos.experiment.stack import Service
    from aichaos.runtime.docker import DockerRuntime

    runtime = DockerRuntime(tmp_path.name[-12:], tmp_path, tmp_path, network="host")
    hog = Service(image=BASE, ready={"tcp": True},
                  command=["python3", "-c", "import time; time.sleep(1); x = b'x' * (256 * 2**20); time.sleep(60)"])
    try:
        runtime.start_service("hog", hog, 1, {})
        runtime.containers["hog"].update(mem_limit=64 * 2**20, memswap_limit=64 * 2**20)
        _wait_for(lambda: not runtime.is_alive("hog"), timeout=30)
        assert runtime.exit_reason("hog") == "was killed by the kernel's OOM killer (over its 64 MiB memory limit)"
    finally:
        assert runtime.teardown(hurry=True) == []


def test_sigint_mid_pause_unpauses_and_removes_everything(tmp_path, docker_args):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*AICHAOS, "run", *plain(tmp_path, "[{type: pause, service: backend}]", docker_args)],
                            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: _state(run_dir).get("faults"), timeout=180)
    run_id = _state(run_dir)["run_id"]
    assert any(c.status == "paused" for c in labelled(run_id))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    j = json.loads((run_dir / "journal.json").read_text())
    assert j["status"] == "interrupted" and j["leftovers"] == []
    assert all(f["reverted_at"] for f in j["faults"])
    assert labelled(run_id) == []


def test_cleanup_removes_the_containers_and_network_of_a_run_killed_with_sigkill(tmp_path, run_network_args):
    runs = tmp_path / "runs"
    run_dir = runs / "killed"
    proc = subprocess.Popen([*AICHAOS, "run", str(PLAIN), "--run-dir", str(run_dir), *run_network_args], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: _state(run_dir).get("faults"), timeout=180)
    run_id = _state(run_dir)["run_id"]
    proc.kill()
    proc.communicate(timeout=10)
    assert labelled(run_id)  # kill -9 left the containers running
    assert networks(run_id) == [f"aichaos-{run_id}"]  # and their network
    result = run(["cleanup", "--runs-dir", str(runs)])
    assert result.returncode == 0, result.stderr
    assert "removed container" in result.stdout and f"removed network aichaos-{run_id}" in result.stdout
    time.sleep(0.3)
    assert labelled(run_id) == [] and networks(run_id) == []


def test_the_run_network_carries_the_stack_by_name_and_goes_with_the_run(tmp_path, run_network_args):
    result = run(["run", str(PLAIN), "--run-dir", str(tmp_path / "run"), *run_network_args], timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    j = journal(tmp_path / "run")
    network = f"aichaos-{j['run_id']}"
    assert j["environment"]["network"] == network and network in result.stderr  # and the run said so
    backend_port = j["services"]["backend"]["port"]
    # the frontend reaches the fault proxy, and the proxy the backend, by name on the run's network
    edge = j["proxies"]["frontend->backend"]
    assert edge["upstream"] == f"backend:{backend_port}"
    assert edge["listen"].startswith("0.0.0.0:")
    assert edge["address"] == f"aichaos-fault-proxy:{edge['listen'].rsplit(':', 1)[1]}"
    added = phase(j, "fault")["p50_ms"] - phase(j, "baseline")["p50_ms"]
    assert added == pytest.approx(100, abs=30)  # the proxy's latency, through the network
    assert phase(j, "baseline")["error_rate"] == 0 and phase(j, "recovery")["error_rate"] == 0
    assert j["leftovers"] == []
    assert labelled(j["run_id"]) == [] and networks(j["run_id"]) == []


def test_a_killed_service_comes_back_under_its_name_on_the_run_network(tmp_path, run_network_args):
    result = run(["run", *plain(tmp_path, "[{type: kill, service: backend}]", run_network_args),
                  "--set", "load.timeout=1s"], timeout=300)
    assert result.returncode in (0, 1), result.stderr + result.stdout
    j = journal(tmp_path / "run")
    assert phase(j, "fault")["error_rate"] > 0.5 and phase(j, "baseline")["error_rate"] == 0
    [applied] = j["faults"]
    assert applied["reverted_at"] is not None and applied["revert_error"] is None
    # restarted, the backend may have another address on the network: its name still finds it
    assert phase(j, "recovery")["error_rate"] < 0.05
    assert j["fault_results"][0]["time_to_recover_s"] is not None
    assert labelled(j["run_id"]) == [] and networks(j["run_id"]) == []


def test_a_proxy_at_a_url_is_refused_on_the_run_network(tmp_path, run_network_args):
    result = run(["run", str(PLAIN), "--run-dir", str(tmp_path / "run"), *run_network_args,
                  "--toxiproxy-url", "http://127.0.0.1:9"])
    assert result.returncode == 2, result.stderr + result.stdout
    assert "network: host" in result.stderr
    assert networks(journal(tmp_path / "run")["run_id"]) == []


def test_an_external_container_is_touched_only_with_allow_external(tmp_path, docker_args):
    import docker

    client = docker.from_env()
    image = next(t for t in (i.tags[0] for i in client.images.list() if i.tags) if t.startswith("aichaos-plain-"))
    outsider = client.containers.run(image, ["python3", "-c", "import time; time.sleep(300)"], detach=True,
                                     network_mode="host", name=f"outsider-{tmp_path.name}"[:60])
    try:
        fault = f"[{{type: pause, container: {outsider.name}}}]"
        refused = run(["run", *plain(tmp_path, fault, docker_args)])
        assert refused.returncode == 2 and "--allow-external" in refused.stderr
        outsider.reload()
        assert outsider.status == "running"
        (tmp_path / "run").rename(tmp_path / "refused")
        result = run(["run", *plain(tmp_path, fault, docker_args), "--allow-external"], timeout=300)
        assert result.returncode in (0, 1), result.stderr + result.stdout
        j = journal(tmp_path / "run")
        assert j["faults"][0]["description"] == f"container {outsider.name} paused"
        assert j["faults"][0]["reverted_at"] and not j["faults"][0]["revert_error"]
        outsider.reload()
        assert outsider.status == "running"  # unpaused, and left running: it is not the run's to remove
    finally:
        outsider.remove(force=True)
