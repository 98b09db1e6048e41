"""A Compose file as the stack, on a real Docker engine: experiments/compose-latency.yaml (services built
from local contexts on the local base image, networks and a volume of their own, a healthcheck as
readiness, an inferred edge) measures the latency it injects, and a Compose run killed with kill -9 is
cleaned up to the last network and volume. Skipped where no engine answers (scripts/docker-env sets
one up)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import ROOT
from tests.integration.test_run import AICHAOS, _state, _wait_for, journal, run

pytestmark = [pytest.mark.docker, pytest.mark.slow]
EXAMPLE = ROOT / "experiments" / "compose-latency.yaml"
BASE = "aichaos-base:bookworm"


@pytest.fixture(scope="module")
def engine():
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers ({exc}); scripts/docker-env sets one up where it can")
    try:
        client.images.get(BASE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"the local base image {BASE} is not built (scripts/docker-env builds it)")
    return client


def labelled(client, run_id: str) -> dict[str, list[str]]:
    label = {"label": f"aichaos.run={run_id}"}
    return {"containers": [c.name for c in client.containers.list(all=True, filters=label)],
            "networks": [n.name for n in client.networks.list(filters=label)],
            "volumes": [v.name for v in client.volumes.list(filters=label)]}


def phase(j: dict, name: str) -> dict:
    return next(p for p in j["phases"] if p["name"] == name)["metrics"]


def test_the_compose_example_measures_the_latency_it_injects(tmp_path, engine):
    run_dir = tmp_path / "run"
    result = run(["run", str(EXAMPLE), "--run-dir", str(run_dir), "--build-arg", f"BASE_IMAGE={BASE}",
                  "--set", "phases.0.duration=6s", "--set", "phases.1.duration=6s", "--set", "phases.2.duration=6s"],
                 timeout=400)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "edge gateway->model: MODEL_URL (model:8000) rewritten to go through the fault proxy (inferred)" in out
    j = journal(run_dir)
    added = phase(j, "fault")["p50_ms"] - phase(j, "baseline")["p50_ms"]
    assert added == pytest.approx(200, rel=0.2)
    model = j["services"]["model"]
    assert set(model["ports"]) == {"http", "metrics"} and model["container"]
    # the gateway reached the model through the proxy by its name on the stack's own network
    assert j["proxies"]["gateway->model"]["upstream"] == "model:8000"
    assert sorted(j["environment"]["networks"]) == ["backend", "frontend"]
    assert list(j["environment"]["volumes"]) == ["model-state"]
    assert j["scrapes"]["kinds"]["model"]["model_predictions_total"] == "counter"  # from its metrics port
    assert labelled(engine, j["run_id"]) == {"containers": [], "networks": [], "volumes": []}


def test_cleanup_removes_a_compose_run_killed_with_sigkill(tmp_path, engine):
    runs = tmp_path / "runs"
    run_dir = runs / "killed"
    proc = subprocess.Popen([*AICHAOS, "run", str(EXAMPLE), "--run-dir", str(run_dir), "--build-arg",
                             f"BASE_IMAGE={BASE}"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _wait_for(lambda: _state(run_dir).get("faults"), timeout=240)
    run_id = _state(run_dir)["run_id"]
    model = engine.containers.get(f"aichaos-{run_id}-model")
    assert model.exec_run(["cat", "/state/model.started"]).exit_code == 0  # the named volume is mounted
    proc.kill()
    proc.communicate(timeout=10)
    left = labelled(engine, run_id)
    assert len(left["containers"]) == 3  # model, gateway, fault proxy
    assert sorted(left["networks"]) == sorted([f"aichaos-{run_id}", f"aichaos-{run_id}-backend",
                                               f"aichaos-{run_id}-frontend"])
    assert left["volumes"] == [f"aichaos-{run_id}-model-state"]
    result = run(["cleanup", "--runs-dir", str(runs)])
    assert result.returncode == 0, result.stderr
    assert f"removed volume aichaos-{run_id}-model-state" in result.stdout
    time.sleep(0.3)
    assert labelled(engine, run_id) == {"containers": [], "networks": [], "volumes": []}
