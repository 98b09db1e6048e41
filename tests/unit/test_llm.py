"""LLM requests as pure functions: what a stream's events say (TTFT, ITL, TPOT, E2EL, gaps, tokens,
errors by kind), request bodies, per-second LLM buckets and the window metrics they give."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from aichaos.experiment.model import Experiment, InputSurgeFault, Load, RequestSpec
from aichaos.load.openai import Goodput, StreamReader, body_draw, read_prompts, read_whole
from aichaos.load.schedule import surged
from aichaos.metrics.analysis import Metrics, degradation, metrics_of
from aichaos.metrics.histogram import value_of
from aichaos.metrics.llm import LLM_METRICS, LlmStats, llm_metrics, merge_llm
from aichaos.metrics.samples import Bucket


def chunk(content: str | None = None, finish: str | None = None, role: bool = False) -> str:
    delta: dict = {"role": "assistant"} if role else ({} if content is None else {"content": content})
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def usage(completion: int, prompt: int = 7) -> str:
    return json.dumps({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})


def feed(reader: StreamReader, events: list[tuple[float, str] | tuple[float, str, str]]) -> None:
    for event in events:
        at, data = event[0], event[1]
        reader.on_event(event[2] if len(event) == 3 else "message", data, at)


def test_a_stream_is_measured_by_vllms_definitions():
    reader = StreamReader(sent=10.0, chat=True)
    feed(reader, [(10.050, chunk(role=True)),  # the role alone is not a token
                  (10.100, chunk("a")), (10.120, chunk("b")), (10.150, chunk("c")), (10.160, chunk("")),
                  (10.190, chunk("d")), (10.200, chunk(None, "stop")), (10.210, usage(4)), (10.3, "[DONE]")])
    result = reader.finish(10.3, complete=True)
    assert result.ok
    assert result.ttft_ms == pytest.approx(100)
    assert result.itl_ms == pytest.approx([20, 30, 40])  # gaps between chunks with content only
    assert result.e2el_ms == pytest.approx(210)  # to the last chunk; [DONE] is no chunk
    assert result.output_tokens == 4 and result.tokens_from == "usage" and result.prompt_tokens == 7
    assert result.tpot_ms == pytest.approx((210 - 100) / 3)
    assert result.max_gap_ms == pytest.approx(40)


def test_without_usage_tokens_are_the_content_chunks_and_a_completion_reads_text():
    reader = StreamReader(sent=0.0, chat=False)
    feed(reader, [(0.1, json.dumps({"choices": [{"text": "x", "finish_reason": None}]})),
                  (0.2, json.dumps({"choices": [{"text": "y", "finish_reason": "length"}]}))])
    result = reader.finish(0.3, complete=True)  # no [DONE], but the response ended as HTTP says: complete
    assert result.ok and result.output_tokens == 2 and result.tokens_from == "chunks"
    assert result.ttft_ms == pytest.approx(100) and result.itl_ms == pytest.approx([100])


@pytest.mark.parametrize("events, complete, kind", [
    ([(0.1, chunk("a")), (0.2, chunk("b"))], True, "truncated"),  # ended without a finish_reason
    ([(0.1, chunk("a")), (0.2, chunk(None, "stop"))], False, "truncated"),  # dropped before [DONE]
    ([(0.1, chunk("a")), (0.2, json.dumps({"error": {"message": "engine died"}})), (0.3, "[DONE]")], True,
     "stream_error"),
    ([(0.1, chunk("a")), (0.2, "oops", "error"), (0.3, chunk(None, "stop"))], True, "stream_error"),
    ([(0.1, chunk("a")), (0.2, "{not json"), (0.3, chunk(None, "stop")), (0.4, "[DONE]")], True, "malformed"),
    ([(0.1, "{not json"), (0.2, json.dumps({"error": "x"})), (0.3, chunk(None, "stop"))], True, "stream_error"),
])
def test_failed_streams_are_errors_of_their_kind(events, complete, kind):
    reader = StreamReader(sent=0.0, chat=True)
    feed(reader, events)
    result = reader.finish(1.0, complete=complete, problem="" if complete else "reset")
    assert result.error == kind and result.detail
    assert result.ttft_ms is None and result.itl_ms == []  # a failed request is measured no further


def test_a_stream_that_drops_after_its_done_is_complete():
    reader = StreamReader(sent=0.0, chat=True)
    feed(reader, [(0.1, chunk("a")), (0.2, chunk(None, "stop")), (0.3, "[DONE]")])
    assert reader.finish(0.4, complete=False, problem="reset").ok


def test_an_answer_that_was_not_streamed():
    body = json.dumps({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                       "usage": {"completion_tokens": 5, "prompt_tokens": 3}}).encode()
    result = read_whole(body, 1.0, 1.5, chat=True)
    assert result.ok and result.ttft_ms == result.e2el_ms == pytest.approx(500)
    assert result.output_tokens == 5 and result.tpot_ms is None and result.max_gap_ms is None
    assert read_whole(b'{"choices": [{"text": "x"}]}', 0, 1, chat=False).error == "truncated"
    assert read_whole(b"<html>", 0, 1, chat=False).error == "malformed"


def test_goodput_limits():
    reader = StreamReader(sent=0.0, chat=True)
    feed(reader, [(0.1, chunk("a")), (0.5, chunk("b")), (0.6, chunk(None, "stop")), (0.7, "[DONE]")])
    result = reader.finish(0.7, complete=True)
    assert Goodput().good(result) and Goodput(ttft_ms=150).good(result)
    assert not Goodput(ttft_ms=50).good(result) and not Goodput(max_gap_ms=300).good(result)


def llm_block(**kw) -> dict:
    block = {"api": "chat", "model": "m", "stream": True, "usage": True, "prompt": None, "messages": None,
             "prompts": None, "max_tokens": 16, "temperature": None, "seed": None, "extra": {}, "api_key_env": None}
    block.update(kw)
    return block


def test_request_bodies():
    rng = random.Random(1)
    body = body_draw(llm_block(prompt="say {{ words(3) }}", max_tokens="{{ lognormal(50, 0.1) }}", temperature=0,
                               extra={"top_p": 0.9}))(rng)
    assert body["model"] == "m" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    [message] = body["messages"]
    assert message["role"] == "user" and len(message["content"].split()) == 4
    assert isinstance(body["max_tokens"], int) and body["max_tokens"] >= 1
    assert body["temperature"] == 0 and body["top_p"] == 0.9 and "seed" not in body
    completion = body_draw(llm_block(api="completions", stream=False, prompts=["p1", "p2"]))(rng)
    assert completion["prompt"] in ("p1", "p2") and "stream_options" not in completion and "messages" not in completion
    chat = body_draw(llm_block(messages=[{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "{{ choice('a', 'b') }}"}]))(rng)
    assert chat["messages"][0] == {"role": "system", "content": "be brief"}
    assert chat["messages"][1]["content"] in ("a", "b")


def test_prompt_files():
    assert read_prompts("first\n\nsecond line\n", "f") == ["first", "second line"]
    jsonl = '"a"\n{"prompt": "b"}\n{"messages": [{"role": "user", "content": "c"}]}\n'
    assert read_prompts(jsonl, "f") == ["a", "b", [{"role": "user", "content": "c"}]]
    with pytest.raises(ValueError, match="f:1"):
        read_prompts('{"other": 1}\n', "f")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts("\n\n", "f")


def stats_of(*streams: tuple[float, list[float], int]) -> LlmStats:
    """Stats of successful streams given as (ttft, gaps, tokens)."""
    stats = LlmStats()
    for ttft, gaps, tokens in streams:
        reader = StreamReader(sent=0.0, chat=True)
        at = ttft / 1000
        events = [(at, chunk("t"))]
        for gap in gaps:
            at += gap / 1000
            events.append((at, chunk("t")))
        events += [(at, chunk(None, "stop")), (at, usage(tokens)), (at, "[DONE]")]
        feed(reader, events)
        result = reader.finish(at, complete=True)
        result.good = True
        stats.record(result)
    return stats


def test_llm_buckets_merge_and_give_window_metrics():
    a = stats_of((100, [10, 10, 500], 4))
    b = stats_of((200, [20], 2), (300, [], 1))
    b.record(StreamReader(0.0, True).finish(1.0, complete=False))  # a truncated one: counted, not measured
    merged = merge_llm([a, None, b])
    assert merged is not None and merge_llm([None]) is None
    assert (merged.requests, merged.streams, merged.output_tokens) == (4, 3, 7)
    assert LlmStats.from_json(json.loads(json.dumps(merged.to_json()))) == merged
    m = llm_metrics(merged, seconds=2, min_samples=3)
    assert m["ttft_p50_ms"] == pytest.approx(200, rel=0.01) and m["ttft_p99_ms"] == pytest.approx(300, rel=0.01)
    assert m["itl_p50_ms"] == pytest.approx(10, rel=0.01)  # 4 gaps: 10, 10, 20, 500
    assert m["max_gap_ms"] == pytest.approx(500, rel=0.01)
    assert m["tpot_p50_ms"] is None  # only 2 requests of more than one token: fewer than min_samples
    assert m["tokens_per_s"] == 3.5 and m["goodput"] == 1.5
    assert m["tokens_from"] == {"usage": 3, "chunks": 0}
    assert set(LLM_METRICS) <= set(m)


def test_window_metrics_and_degradation_read_the_llm_buckets():
    buckets = {100: Bucket(100, count=2, hist={1: 2}, llm=stats_of((100, [10], 2), (100, [10], 2))),
               101: Bucket(101, count=1, hist={1: 1}, llm=stats_of((300, [30], 2)))}
    buckets = {s: Bucket.from_json(json.loads(json.dumps(b.to_json()))) for s, b in buckets.items()}
    base = metrics_of(buckets, 100, 101, min_samples=1)
    fault = metrics_of(buckets, 101, 102, min_samples=1)
    assert base.get("ttft_p95_ms") == pytest.approx(100, rel=0.01) and base.get("tokens_per_s") == 4
    assert Metrics.from_json(json.loads(json.dumps(base.to_json()))).get("itl_p50_ms") == pytest.approx(
        value_of(min(buckets[100].llm.itl)), abs=0.001)
    change = degradation(base, fault)["ttft_p50_ms"]
    assert change.ratio == pytest.approx(3, rel=0.02)
    plain = metrics_of({100: Bucket(100, count=1, hist={1: 1})}, 100, 101, min_samples=1)
    assert plain.llm is None and plain.get("ttft_p50_ms") is None
    assert "ttft_p50_ms" not in degradation(plain, plain)  # runs without LLM requests keep their journals


EXPERIMENT = {"version": 1, "name": "x", "stack": "s.yaml", "steady_state": {"slo": {"ttft_p95_ms": {"max": 500}}},
              "phases": [{"name": "baseline", "duration": "5s"}]}


def test_the_experiment_format():
    request = RequestSpec.model_validate({"name": "chat", "llm": {"model": "m", "prompt": "hi"}})
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    request = RequestSpec.model_validate({"name": "c", "llm": {"api": "completions", "model": "m", "prompt": "hi"}})
    assert request.path == "/v1/completions"
    for bad, message in [({"json": {"a": 1}}, "llm.extra"), ({"method": "GET"}, "POST")]:
        with pytest.raises(ValidationError, match=message):
            RequestSpec.model_validate({"name": "c", "llm": {"model": "m", "prompt": "hi"}, **bad})
    for llm, message in [({"model": "m"}, "exactly one of prompt"), ({"model": "m", "prompt": "a", "prompts": "f"},
                                                                    "got prompt, prompts"),
                         ({"model": "m", "api": "completions", "messages": [{"role": "user", "content": "x"}]},
                          "api: chat"),
                         ({"model": "m", "prompt": "a", "extra": {"stream": False}}, "must not set stream"),
                         ({"model": "m", "prompt": "{{ nope() }}"}, "unknown template function")]:
        with pytest.raises(ValidationError, match=message):
            RequestSpec.model_validate({"name": "c", "llm": llm})
    load = {"target": "llm", "users": 4, "requests": [{"name": "c", "llm": {"model": "m", "prompt": "hi"}}]}
    with pytest.raises(ValidationError, match="poisson needs a rate"):
        Load.model_validate({**load, "arrival": "poisson"})
    assert Load.model_validate({**load, "rate": 5, "arrival": "poisson", "goodput": {"ttft_ms": 200}}).goodput
    assert Load.model_validate({**load, "target": "https://api.example.test/v1"}).target_is_url
    assert Experiment.model_validate({**EXPERIMENT, "load": load}).steady_state.slo.ttft_p95_ms
    plain = {"target": "llm", "users": 4, "requests": [{"name": "p", "path": "/x"}]}
    with pytest.raises(ValidationError, match="ttft_p95_ms measure llm requests"):
        Experiment.model_validate({**EXPERIMENT, "load": plain})
    with pytest.raises(ValidationError, match="goodput judges llm requests"):
        Load.model_validate({**plain, "goodput": {"ttft_ms": 1}})
    with pytest.raises(ValidationError, match="must not be negative"):
        Experiment.model_validate({**EXPERIMENT, "load": load, "stop_when": [{"itl_p99_ms": {"above": -1}}]})


def test_an_input_surge_replaces_an_llm_requests_prompt():
    request = RequestSpec.model_validate({"name": "c", "llm": {"model": "m", "prompts": "p.txt", "max_tokens": 8}})
    surge = InputSurgeFault.model_validate({"type": "input_surge", "json": {"prompt": "{{ words(2000) }}",
                                                                             "top_k": 5}})
    llm = surged(request, surge).llm
    assert llm is not None and llm.prompt == "{{ words(2000) }}" and llm.prompts is None
    assert llm.max_tokens == 8 and llm.extra == {"top_k": 5}


def test_the_api_key_stays_in_the_environment(tmp_path, monkeypatch):
    from aichaos.errors import LoadError
    from aichaos.load.generator import load_spec
    from aichaos.load.schedule import plan_load

    (tmp_path / "prompts.txt").write_text("one\ntwo\n")
    load = Load.model_validate({"target": "llm", "users": 2, "requests": [
        {"name": "c", "llm": {"model": "m", "prompts": "prompts.txt", "api_key_env": "AICHAOS_TEST_KEY"}}]})
    experiment = Experiment.model_validate({**EXPERIMENT, "load": load.model_dump(by_alias=True)})
    plan = plan_load(experiment.load, experiment.phases)
    monkeypatch.delenv("AICHAOS_TEST_KEY", raising=False)
    with pytest.raises(LoadError, match="AICHAOS_TEST_KEY"):
        load_spec(experiment.load, "http://127.0.0.1:1", plan, base_dir=tmp_path)
    monkeypatch.setenv("AICHAOS_TEST_KEY", "sk-secret")
    spec = load_spec(experiment.load, "http://127.0.0.1:1", plan, base_dir=tmp_path)
    assert "sk-secret" not in json.dumps(spec)  # the load process reads the key from its own environment
    [[request]] = spec["mixes"]
    assert request["llm"]["prompts"] == ["one", "two"] and request["llm"]["api_key_env"] == "AICHAOS_TEST_KEY"
    assert "sk-secret" not in experiment.model_dump_json()
