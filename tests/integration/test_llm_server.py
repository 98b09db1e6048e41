"""The sample LLM server and its router as real processes on 127.0.0.1: the OpenAI stream format,
continuous batching, the admission queue, the context limit, preemption, the fault hooks, and the
router's fallback in the stack file, wired through the builtin fault proxy as `aichaos run` does."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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
httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.torch

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "aichaos-tiny-lm"


class Server:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def post(self, path: str, body: Any, timeout: float = 30, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=timeout, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kw)

    def faults(self, **body: Any) -> dict[str, Any]:
        answer = self.post("/admin/faults", body, headers=AUTH)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def metric(self, name: str) -> float:
        return metric(self.url, name)


def metric(url: str, name: str) -> float:
    """The value of the first sample whose name and labels start with ``name``."""
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith("#") and line[len(name)] in " {":
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics of {url}")


def start(tmp_path: Path, *args: str) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / f"llm-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sample_stack.llm_server", "--port", str(port),
                                 "--model-size", "tiny", "--enable-faults", "--faults-token", TOKEN, *args],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not http_ok("127.0.0.1", port, "/health"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Server(f"http://127.0.0.1:{port}", proc, log)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start(tmp_path_factory.mktemp("llm"), "--max-model-len", "256", "--max-num-seqs", "16",
                     "--cold-start-ms", "800")


@pytest.fixture
def llm(server: Server) -> Iterator[Server]:
    """The shared server, its faults cleared after each test."""
    yield server
    assert httpx.delete(server.url + "/admin/faults", headers=AUTH, timeout=10).status_code == 200


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One request at a time, two may wait, a 64-token context."""
    yield from start(tmp_path_factory.mktemp("narrow"), "--max-num-seqs", "1", "--max-waiting", "2",
                     "--max-model-len", "64")


def stream(url: str, path: str, body: dict[str, Any], timeout: float = 30) -> list[tuple[float, str]]:
    """The ``data:`` events of a streamed answer, each with the time it arrived."""
    events = []
    with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                assert line.startswith("data: "), line
                events.append((time.monotonic(), line[len("data: "):]))
    return events


def chunks(events: list[tuple[float, str]]) -> list[dict[str, Any]]:
    assert events[-1][1] == "[DONE]"
    return [json.loads(data) for _, data in events[:-1]]


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


# ---------------------------------------------------------------- the OpenAI API
def test_streamed_chat_follows_the_openai_format(llm: Server) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "tell me about chaos"}], "max_tokens": 6,
            "ignore_eos": True, "temperature": 0, "stream_options": {"include_usage": True}}
    got = chunks(stream(llm.url, "/v1/chat/completions", body))
    assert {c["id"] for c in got} == {got[0]["id"]} and got[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in got)
    *choices, usage = got
    assert choices[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0] for c in choices[1:]]
    assert len(content) == 6 and all(c["delta"]["content"].strip() for c in content)
    assert [c["finish_reason"] for c in content] == [None] * 5 + ["length"]
    # 4 words, a role token for the user's message and one for the answer
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 6, "completion_tokens": 6,
                                                         "total_tokens": 12}
    # the same request unstreamed: the same text (greedy), in one object
    whole = llm.post("/v1/chat/completions", body).json()
    assert whole["object"] == "chat.completion" and whole["usage"]["completion_tokens"] == 6
    assert whole["choices"][0]["message"]["content"] == "".join(c["delta"]["content"] for c in content)
    assert whole["choices"][0]["finish_reason"] == "length"


def test_streamed_completion_has_text_chunks_and_no_usage_unless_asked(llm: Server) -> None:
    got = chunks(stream(llm.url, "/v1/completions", {"prompt": "one two three", "max_tokens": 4,
                                                      "ignore_eos": True}))
    assert len(got) == 4 and all(c["object"] == "text_completion" and "usage" not in c for c in got)
    assert all(c["choices"][0]["text"].strip() for c in got)
    assert got[-1]["choices"][0]["finish_reason"] == "length"


def test_models_and_refusals(llm: Server) -> None:
    assert [m["id"] for m in llm.get("/v1/models").json()["data"]] == [MODEL]
    wrong = llm.post("/v1/completions", {"model": "gpt-9", "prompt": "x"})
    assert wrong.status_code == 404 and "gpt-9" in wrong.json()["error"]["message"]
    bad = llm.post("/v1/completions", {"prompt": "x", "max_tokens": "many"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"
    assert llm.post("/v1/chat/completions", {"messages": []}).status_code == 400


def test_requests_are_batched_continuously(llm: Server) -> None:
    before = llm.metric("vllm:generation_tokens_total")
    steps_before = llm.metric("llm_batch_size_count")
    singles_before = llm.metric('llm_batch_size_bucket{le="1.0"}')
    running: list[float] = []

    def one(i: int) -> int:
        got = chunks(stream(llm.url, "/v1/completions", {"prompt": words(5 + i), "max_tokens": 40,
                                                         "ignore_eos": True}))
        return len(got)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(8)]
        while not all(f.done() for f in futures):
            running.append(llm.metric("vllm:num_requests_running"))
            time.sleep(0.02)
        assert [f.result() for f in futures] == [40] * 8
    assert max(running) > 1
    assert llm.metric("vllm:generation_tokens_total") - before == 8 * 40
    steps = llm.metric("llm_batch_size_count") - steps_before
    batched = steps - (llm.metric('llm_batch_size_bucket{le="1.0"}') - singles_before)
    # one request at a time would take a step per token (320); batching computes several sequences a
    # step. (How many steps run alone depends on how the 8 arrivals spread, which a loaded machine
    # stretches: the tokens per step are what batching decides.)
    assert batched > 0 and 8 * 40 / steps > 2.0
    assert llm.metric("vllm:time_to_first_token_seconds_count") >= 8


def test_full_admission_queue_answers_429_with_retry_after(narrow: Server) -> None:
    narrow.faults(decode_delay_ms=100)
    try:
        def one(_: int) -> tuple[int, str | None, float]:
            started = time.monotonic()
            r = narrow.post("/v1/completions", {"prompt": "a b", "max_tokens": 8, "ignore_eos": True})
            return r.status_code, r.headers.get("retry-after"), time.monotonic() - started

        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(one, range(10)))
    finally:
        narrow.faults(decode_delay_ms=0)
    refused = [r for r in results if r[0] == 429]
    assert len(refused) >= 5, results
    assert all(after == "1" and took < 1.0 for _, after, took in refused)  # refused at once, not queued
    assert {r[0] for r in results} == {200, 429}
    assert narrow.metric('llm_requests_rejected_total{reason="queue_full"}') >= 5


def test_prompt_and_max_tokens_over_the_context_answer_400(narrow: Server) -> None:
    answer = narrow.post("/v1/completions", {"prompt": words(60), "max_tokens": 10})
    assert answer.status_code == 400
    assert "maximum context length is 64 tokens" in answer.json()["error"]["message"]
    assert "70 tokens" in answer.json()["error"]["message"]
    assert narrow.post("/v1/completions", {"prompt": words(54), "max_tokens": 10}).status_code == 200


# ---------------------------------------------------------------- KV cache and fault hooks
def test_a_tiny_kv_budget_preempts_and_recomputes_the_same_tokens(llm: Server) -> None:
    prompts = [f"{words(20)} v{i}" for i in range(4)]

    def answer(prompt: str) -> str:
        r = llm.post("/v1/completions", {"prompt": prompt, "max_tokens": 30, "temperature": 0, "ignore_eos": True})
        assert r.status_code == 200, r.text
        return str(r.json()["choices"][0]["text"])

    alone = [answer(p) for p in prompts]
    preempted = llm.metric("vllm:num_preemptions_total")
    # 6 blocks of 16 tokens: four sequences of up to 51 tokens (4 blocks each) cannot all fit
    assert llm.faults(kv_cache_blocks=6)["kv_cache_blocks"] == 6
    with ThreadPoolExecutor(4) as pool:
        squeezed = list(pool.map(answer, prompts))
    assert llm.metric("vllm:num_preemptions_total") > preempted
    assert squeezed == alone  # recomputed from prompt and output so far: the same greedy tokens
    assert llm.metric('llm_kv_cache_blocks{state="used"}') == 0


def test_a_request_larger_than_the_whole_budget_fails_instead_of_looping(llm: Server) -> None:
    llm.faults(kv_cache_blocks=2)
    r = llm.post("/v1/completions", {"prompt": words(20), "max_tokens": 40, "ignore_eos": True})
    assert r.status_code == 500 and "KV cache budget" in r.json()["error"]["message"]


def test_fault_hooks_need_the_token_and_check_their_keys(llm: Server) -> None:
    assert llm.post("/admin/faults", {"hang": True}).status_code == 401
    assert llm.post("/admin/faults", {"volume": 11}, headers=AUTH).status_code == 400
    refused = llm.post("/admin/faults", {"slowdown": 0.5}, headers=AUTH)
    assert refused.status_code == 400 and "slowdown" in refused.json()["error"]
    state = llm.get("/admin/faults", headers=AUTH).json()
    assert set(state) == {"slowdown", "decode_delay_ms", "stall_after_tokens", "stall_ms", "hang", "error_fraction",
                          "error_status", "error_midstream", "kv_cache_blocks", "crash", "unload", "cold_start_ms"}
    assert llm.faults(slowdown=3, decode_delay_ms=5)["slowdown"] == 3
    # reverting is posting back what GET said before
    after = llm.faults(**state)
    assert after == state


def test_engine_crash_makes_health_503_while_the_front_answers(llm: Server) -> None:
    llm.faults(decode_delay_ms=50)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(stream, llm.url, "/v1/completions", {"prompt": "x", "max_tokens": 100,
                                                                      "ignore_eos": True})
        time.sleep(0.5)
        llm.faults(crash=True)
        events = in_flight.result(10)
    assert "engine died" in events[-2][1] and events[-1][1] == "[DONE]"
    deadline = time.monotonic() + 5
    while llm.get("/health").status_code != 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "engine dead" in llm.get("/health").json()["reason"]
    assert llm.get("/v1/models").status_code == 200  # the HTTP front is up
    assert llm.metric("llm_engine_alive") == 0
    assert llm.post("/v1/completions", {"prompt": "x"}).status_code == 503
    assert llm.get("/admin/faults", headers=AUTH).json()["crash"] is True
    llm.faults(crash=False)  # the revert: a fresh engine loop
    assert llm.get("/health").status_code == 200
    assert llm.post("/v1/completions", {"prompt": "x", "max_tokens": 2}).status_code == 200


def test_unload_means_a_cold_start_on_the_next_request(llm: Server) -> None:
    cold_before = llm.metric("llm_cold_starts_total")
    assert llm.faults(unload=True)["unload"] is True
    deadline = time.monotonic() + 5
    while llm.metric("llm_model_loaded") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert llm.get("/health").status_code == 200  # alive: it loads on demand
    started = time.monotonic()
    assert llm.post("/v1/completions", {"prompt": "x", "max_tokens": 2}).status_code == 200
    assert time.monotonic() - started >= 0.8  # --cold-start-ms 800
    assert llm.metric("llm_cold_starts_total") == cold_before + 1
    assert llm.get("/admin/faults", headers=AUTH).json()["unload"] is False
    started = time.monotonic()
    assert llm.post("/v1/completions", {"prompt": "x", "max_tokens": 2}).status_code == 200
    assert time.monotonic() - started < 0.5


def test_a_stall_after_n_tokens_pauses_each_stream_then_goes_on(llm: Server) -> None:
    llm.faults(stall_after_tokens=3, stall_ms=600)
    events = stream(llm.url, "/v1/completions", {"prompt": "x", "max_tokens": 8, "ignore_eos": True})
    times = [t for t, _ in events[:-1]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 8
    assert gaps.index(max(gaps)) == 2 and max(gaps) >= 0.5  # after the third token


def test_hang_freezes_streams_until_cleared(llm: Server) -> None:
    llm.faults(hang=True)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(stream, llm.url, "/v1/completions", {"prompt": "x", "max_tokens": 3})
        time.sleep(0.6)
        assert not pending.done()
        assert llm.get("/health").status_code == 200  # a hung engine still looks alive
        llm.faults(hang=False)
        assert pending.result(10)[-1][1] == "[DONE]"


def test_error_fraction_at_once_or_in_the_middle_of_a_stream(llm: Server) -> None:
    llm.faults(error_fraction=1.0, error_status=503)
    answer = llm.post("/v1/completions", {"prompt": "x"})
    assert answer.status_code == 503 and "injected" in answer.json()["error"]["message"]
    llm.faults(error_midstream=True)
    events = stream(llm.url, "/v1/completions", {"prompt": "x", "max_tokens": 20, "ignore_eos": True})
    assert events[-1][1] == "[DONE]"
    assert "error" in json.loads(events[-2][1])
    tokens = [json.loads(d) for _, d in events[:-2]]
    assert 1 <= len(tokens) < 20 and all(t["choices"][0]["finish_reason"] is None for t in tokens)


# ---------------------------------------------------------------- the router in the stack file
class LlmStack:
    def __init__(self, runtime: LocalRuntime, handle: StackHandle, spec: Any) -> None:
        self.runtime, self.handle, self.spec = runtime, handle, spec

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.handle.services[name].port}"


@pytest.fixture(scope="module")
def llm_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmStack]:
    run_dir = tmp_path_factory.mktemp("llm-stack")
    spec = load_stack(ROOT / "sample_stack" / "llm.yaml")
    for name in ("replica-a", "replica-b"):
        service = spec.services[name]
        spec.services[name] = service.model_copy(update={"env": {**service.env, "LLM_MODEL_SIZE": "tiny"}})
    backend = start_proxy_backend(run_dir, kind="builtin")
    runtime = LocalRuntime(run_dir, ROOT / "sample_stack")
    handle = StackHandle()
    try:
        bring_up(spec, runtime, backend.client, handle)
        yield LlmStack(runtime, handle, spec)
    finally:
        runtime.teardown()
        backend.close()


def test_router_relays_streams_chunk_by_chunk(llm_stack: LlmStack) -> None:
    for replica in ("replica-a", "replica-b"):
        httpx.post(llm_stack.url(replica) + "/admin/faults", json={"decode_delay_ms": 40},
                   headers={"Authorization": "Bearer aichaos-sample-token"}, timeout=10)
    try:
        events = stream(llm_stack.url("router"), "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "ignore_eos": True})
    finally:
        for replica in ("replica-a", "replica-b"):
            httpx.post(llm_stack.url(replica) + "/admin/faults", json={"decode_delay_ms": 0},
                       headers={"Authorization": "Bearer aichaos-sample-token"}, timeout=10)
    got = chunks(events)
    assert len(got) == 11 and got[-1]["choices"][0]["finish_reason"] == "length"  # the role, 10 tokens
    # relayed as they came, not gathered: the chunks arrived over the ~0.4 s of decoding
    assert events[-1][0] - events[0][0] > 0.25


def test_router_falls_back_on_an_engine_crash_and_a_dead_replica(llm_stack: LlmStack) -> None:
    router = llm_stack.url("router")
    auth = {"Authorization": "Bearer aichaos-sample-token"}
    body = {"prompt": "x", "max_tokens": 3}
    # replica-b's engine dies, its front answers 503: every request still succeeds, through replica-a
    httpx.post(llm_stack.url("replica-b") + "/admin/faults", json={"crash": True}, headers=auth, timeout=10)
    try:
        assert [httpx.post(router + "/v1/completions", json=body, timeout=30).status_code
                for _ in range(8)] == [200] * 8
        assert metric(router, "router_fallbacks_total") >= 1
        assert metric(router, 'router_upstream_requests_total{replica="replica-b",status="503"}') >= 1
        assert metric(router, 'router_breaker_state{replica="replica-b"}') == 2  # open: b is skipped
    finally:
        httpx.post(llm_stack.url("replica-b") + "/admin/faults", json={"crash": False}, headers=auth, timeout=10)
    time.sleep(2.2)  # the breaker's cooldown: b gets a trial request again
    # replica-a is killed: streams go to replica-b
    llm_stack.runtime.kill_service("replica-a")
    for _ in range(6):
        got = chunks(stream(router, "/v1/completions", {**body, "ignore_eos": True}))
        assert got[-1]["choices"][0]["finish_reason"] == "length"
    assert metric(router, 'router_breaker_state{replica="replica-a"}') == 2
    assert metric(router, 'router_breaker_opened_total{replica="replica-a"}') >= 1


def test_aichaos_hook_faults_apply_and_revert_on_the_llm_server(llm: Server) -> None:
    from aichaos.experiment.model import InferenceErrorsFault, InferenceHangFault, InferenceSlowdownFault
    from aichaos.faults.hooks import HookClient, apply_hook_fault

    client = HookClient(llm.url + "/admin/faults", TOKEN)
    before = client.get()
    faults = [InferenceSlowdownFault(type="inference_slowdown", service="llm", factor=4),
              InferenceErrorsFault(type="inference_errors", service="llm", fraction=0.5),
              InferenceHangFault(type="inference_hang", service="llm")]
    applied = [apply_hook_fault(f, "fault", client) for f in faults]
    state = client.get()
    assert (state["slowdown"], state["error_fraction"], state["hang"]) == (4, 0.5, True)
    for fault in reversed(applied):
        fault.revert()
    assert client.get() == before
