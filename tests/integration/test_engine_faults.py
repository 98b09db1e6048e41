"""The engine faults (kv_cache_pressure, engine_crash, model_unload) through their kinds on the sample
LLM server's hooks: applied, measured where they measure (engine_crash's health honesty), reverted to
the state before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from aichaos.experiment.model import EngineCrashFault, KvCachePressureFault, ModelUnloadFault
from aichaos.faults.hooks import HookClient
from aichaos.faults.registry import kind_of
from aichaos.runtime.readiness import http_ok
from tests.integration.test_llm_server import AUTH, TOKEN, Server, start

httpx = pytest.importorskip("httpx")
pytest.importorskip("torch")
pytestmark = [pytest.mark.integration, pytest.mark.torch]


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start(tmp_path_factory.mktemp("engine"), "--max-model-len", "256", "--cold-start-ms", "300")


def context(server: Server) -> Any:
    """The part of a FaultContext that hook faults read: the service's address and its hooks."""
    port = int(server.url.rsplit(":", 1)[1])
    hooks = SimpleNamespace(path="/admin/faults", token_env="LLM_TOKEN")
    return SimpleNamespace(stack=SimpleNamespace(services={"llm": SimpleNamespace(hooks=hooks,
                                                                                  env={"LLM_TOKEN": TOKEN})}),
                           handle=SimpleNamespace(services={"llm": SimpleNamespace(host="127.0.0.1", port=port)}))


def test_kv_cache_pressure_and_model_unload_set_their_hooks_and_revert(llm: Server) -> None:
    hooks = HookClient(llm.url + "/admin/faults", TOKEN)
    before = hooks.get()
    for fault, expect in [
        (KvCachePressureFault(type="kv_cache_pressure", service="llm", blocks=4), {"kv_cache_blocks": 4}),
        (ModelUnloadFault(type="model_unload", service="llm", cold_start_ms=300),
         {"unload": True, "cold_start_ms": 300}),
    ]:
        applied = kind_of(fault).apply(fault, "fault", 0, context(llm))
        state = hooks.get()
        assert {k: state[k] for k in expect} == expect, state
        applied.revert()
        assert hooks.get() == before
    assert applied.detail["reload_s"] >= 0.3  # the revert waited for the cold start


def test_engine_crash_records_how_long_health_took_to_say_so(llm: Server) -> None:
    fault = EngineCrashFault(type="engine_crash", service="llm")
    applied = kind_of(fault).apply(fault, "fault", 0, context(llm))
    answer = httpx.post(llm.url + "/v1/completions", json={"prompt": "a b c", "max_tokens": 4}, timeout=10)
    assert answer.status_code == 503  # the front answers, the engine is dead
    time.sleep(0.3)
    applied.revert()
    detail = applied.detail
    assert detail["health_answer"] == "503" and 0 <= detail["health_unhealthy_after_s"] < 1.0, detail
    assert detail["health_checks"] >= 1
    deadline = time.monotonic() + 30
    while not http_ok("127.0.0.1", int(llm.url.rsplit(":", 1)[1]), "/health"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert httpx.get(llm.url + "/admin/faults", headers=AUTH, timeout=10).json()["crash"] is False


def test_a_health_check_that_never_admits_the_crash_is_recorded_as_such(llm: Server) -> None:
    from aichaos.faults.hooks import HealthWatch

    watch = HealthWatch(llm.url + "/v1/models")  # answers 200 whatever the engine does
    watch.start()
    time.sleep(0.2)
    detail = watch.stop()
    assert detail["health_unhealthy_after_s"] is None and detail["health_checks"] >= 2
