"""The sample AI stack as processes, wired through the builtin proxy the way `aichaos run` does it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from aichaos.experiment.loader import load_stack
from aichaos.ports import free_port
from aichaos.proxy.backend import start_proxy_backend
from aichaos.runtime.base import StackHandle, bring_up
from aichaos.runtime.local import LocalRuntime
from aichaos.runtime.readiness import http_ok
from tests.conftest import ROOT

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TOKEN = "aichaos-sample-token"


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 10) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def metric(url: str, name: str) -> float:
    _, text = call("GET", url + "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


class Stack:
    def __init__(self, runtime: LocalRuntime, handle: StackHandle, services: Any) -> None:
        self.runtime, self.handle, self.services = runtime, handle, services

    def url(self, name: str) -> str:
        s = self.handle.services[name]
        return f"http://127.0.0.1:{s.port}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    spec = load_stack(ROOT / "sample_stack" / "stack.yaml")
    backend = start_proxy_backend(run_dir, kind="builtin")
    runtime = LocalRuntime(run_dir, ROOT / "sample_stack")
    handle = StackHandle()
    try:
        bring_up(spec, runtime, backend.client, handle)
        yield Stack(runtime, handle, spec)
    finally:
        runtime.teardown()
        backend.close()


def predict(stack: Stack, entity: str = "7", text: str = "the gpu queue is slow") -> tuple[int, Any]:
    return call("POST", stack.url("gateway") + "/predict", {"entity_id": entity, "text": text})


def test_prediction_flows_end_to_end(stack):
    time.sleep(1.2)  # one pipeline period: features exist
    status, body = predict(stack)
    assert status == 200, body
    assert body["degraded"] is False
    assert body["label"] in ("billing", "outage", "feature_request", "praise")
    assert body["model_version"] == "v1"
    assert len(body["scores"]) == 4 and abs(sum(body["scores"]) - 1) < 1e-3
    assert body["features"] and float(body["features"]["score"]) >= 0
    assert body["feature_staleness_s"] is not None and body["feature_staleness_s"] < 3
    # and the model server counted it
    assert metric(stack.url("model-server"), 'model_requests_total{status="200"}') >= 1


def test_stopping_the_pipeline_makes_features_stale(stack):
    gateway = stack.url("gateway")
    assert metric(gateway, "gateway_feature_staleness_seconds") < 2.5
    pid = stack.handle.services["pipeline"].pid
    os.killpg(pid, signal.SIGSTOP)
    try:
        time.sleep(3.5)
        assert metric(gateway, "gateway_feature_staleness_seconds") > 3
        _, body = predict(stack)
        assert body["feature_staleness_s"] > 3
    finally:
        os.killpg(pid, signal.SIGCONT)
    time.sleep(1.5)
    assert metric(gateway, "gateway_feature_staleness_seconds") < 2.5


def test_fault_hooks_need_the_token_and_swap_versions(stack):
    model = stack.url("model-server")
    status, _ = call("POST", model + "/admin/faults", {"version": "v2"})
    assert status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = call("POST", model + "/admin/faults", {"version": "v2"}, auth)
    assert status == 200 and body["version"] == "v2"
    assert predict(stack)[1]["model_version"] == "v2"
    status, body = call("POST", model + "/admin/faults", {"slowdown": 0.5}, auth)
    assert status == 400 and "slowdown" in body["error"]
    status, body = call("POST", model + "/admin/faults", {"volume": 11}, auth)
    assert status == 400 and "unknown" in body["error"]
    status, body = call("DELETE", model + "/admin/faults", headers=auth)
    assert status == 200 and body["version"] == "v1"
    assert predict(stack)[1]["model_version"] == "v1"


def test_error_fraction_hook_is_retried_and_then_falls_back(stack):
    model, gateway = stack.url("model-server"), stack.url("gateway")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    calls_before = metric(gateway, "gateway_upstream_calls_total")
    call("POST", model + "/admin/faults", {"error_fraction": 1.0, "error_status": 503}, auth)
    try:
        status, body = predict(stack)
        assert status == 200 and body["degraded"] is True
        # retried within the budget: more than one upstream call for this request
        assert metric(gateway, "gateway_upstream_calls_total") - calls_before >= 2
        assert metric(gateway, "gateway_retries_total") >= 1
    finally:
        call("DELETE", model + "/admin/faults", headers=auth)
    deadline = time.monotonic() + 10
    while predict(stack)[1]["degraded"]:  # breaker may be open for its cooldown
        assert time.monotonic() < deadline
        time.sleep(0.3)


def test_killing_the_model_server_opens_the_breaker_and_restart_closes_it(stack):
    gateway = stack.url("gateway")
    running = stack.handle.services["model-server"]
    stack.runtime.kill_service("model-server")
    answers = [predict(stack)[1] for _ in range(10)]
    assert all(a["degraded"] for a in answers)
    assert metric(gateway, "gateway_breaker_state") == 2  # open
    assert metric(gateway, "gateway_fallbacks_total") >= 10
    restarted = stack.runtime.start_service("model-server", stack.services.services["model-server"], running.port, {})
    stack.runtime.wait_ready(restarted, stack.services.services["model-server"])
    stack.handle.services["model-server"] = restarted
    deadline = time.monotonic() + 15
    while predict(stack)[1]["degraded"]:
        assert time.monotonic() < deadline, "breaker never closed"
        time.sleep(0.3)
    assert metric(gateway, "gateway_breaker_state") == 0


def test_full_queue_answers_503_rather_than_piling_up(tmp_path):
    port = free_port()
    log = open(tmp_path / "model.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "sample_stack.model_server", "--port", str(port),
                             "--max-queue", "2", "--max-batch", "1", "--max-wait-ms", "0", "--enable-faults",
                             "--faults-token", "t"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not http_ok("127.0.0.1", port, "/ready"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        call("POST", url + "/admin/faults", {"slowdown": 200}, {"Authorization": "Bearer t"})
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: (call("POST", url + "/predict", {"text": "a b c"}, timeout=30),
                                               time.monotonic()), range(16)))
        statuses = [r[0][0] for r in results]
        refused = [t for (s, _), t in results if s == 503]
        assert statuses.count(503) >= 10, statuses
        assert all(t - started < 2 for t in refused)  # refused at once, not after queueing
        assert metric(url, "model_queue_depth") == 0
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_v1_and_v2_disagree_on_a_measurable_share():
    from sample_stack.model import build_model, tokenize

    device = torch.device("cpu")
    v1, v2 = build_model("v1", device), build_model("v2", device)
    rng = random.Random(5)
    words = "model latency token batch queue gpu memory retry timeout cache feature store outage bill".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) for _ in range(400)]
    from sample_stack.model import batch_tensor

    with torch.inference_mode():
        a = [v1(batch_tensor([tokenize(t)], device)).argmax(-1).item() for t in texts]
        b = [v2(batch_tensor([tokenize(t)], device)).argmax(-1).item() for t in texts]
        again = [v1(batch_tensor([tokenize(t)], device)).argmax(-1).item() for t in texts]
    assert a == again  # deterministic
    share = sum(x != y for x, y in zip(a, b, strict=True)) / len(texts)
    assert 0.05 <= share <= 0.8, share
    assert len(set(a)) >= 2  # not a constant classifier
