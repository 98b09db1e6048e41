"""Golden answers: reading answers, the comparisons, each round's shares, the experiment's block, and
the prober against an in-test OpenAI-compatible server on 127.0.0.1 whose answers change."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aichaos.correctness import GoldenProber, ask, probe_bodies
from aichaos.errors import EnvironmentFailure
from aichaos.experiment.model import Correctness, Experiment
from aichaos.metrics.golden import PREFIX, Answer, compare, is_duplicated, read_body, read_events, round_metrics
from aichaos.metrics.scrape import ScrapeStore

GOLDEN = Answer(" the quick brown fox", "stop", completion_tokens=4, chunks=4)


def chunk(text: str | None = None, finish: str | None = None, usage: int | None = None) -> str:
    payload: dict[str, Any] = {"choices": [{"delta": {"content": text} if text else {}, "finish_reason": finish}]}
    if usage is not None:
        payload = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": usage}}
    return json.dumps(payload)


# ------------------------------------------------------------------ reading answers
def test_a_stream_is_read_into_its_text_finish_reason_usage_and_chunks():
    events = [chunk(" the"), chunk(" quick"), chunk(" brown"), chunk(" fox"), chunk(finish="stop"), chunk(usage=4),
              "[DONE]"]
    assert read_events(events) == GOLDEN


def test_a_stream_without_done_is_incomplete_and_an_error_event_fails_it():
    assert read_events([chunk(" the"), chunk(" quick")]) == Answer(" the quick", None, None, 2, complete=False)
    failed = read_events([chunk(" the"), json.dumps({"error": {"message": "slow down", "code": 429}})])
    assert failed.failed and failed.error == "error event (429)" and failed.text == " the"
    assert read_events([chunk(" the"), '{"choices": [{"delta": {"content": "\\x']).error == "malformed event"


def test_completions_and_answers_not_streamed_are_read_too():
    events = [json.dumps({"choices": [{"text": " a", "finish_reason": None}]}),
              json.dumps({"choices": [{"text": " b", "finish_reason": "length"}], "usage": {"completion_tokens": 2}}),
              "[DONE]"]
    assert read_events(events) == Answer(" a b", "length", 2, 2)
    whole = {"choices": [{"message": {"role": "assistant", "content": " a b"}, "finish_reason": "stop"}],
             "usage": {"completion_tokens": 2}}
    assert read_body(json.dumps(whole).encode()) == Answer(" a b", "stop", 2, 1)
    assert read_body(b'{"error": {"code": 500}}').failed and read_body(b"not json").failed


# ------------------------------------------------------------------ comparisons
def test_the_golden_answer_itself_has_no_problem():
    assert compare(GOLDEN, GOLDEN) == frozenset()


@pytest.mark.parametrize(("answer", "problems"), [
    # a stream cut before its end, with or without the text so far
    (Answer(" the quick", None, None, 2, complete=False), {"truncated"}),
    # a well-framed 200 that ends early: its text is a strict prefix, even with a finish_reason
    (Answer(" the quick", "stop", 2, 2), {"truncated"}),
    # failover restarted the stream elsewhere: the start twice
    (Answer(" the quick the quick brown fox", "stop", 6, 6), {"duplicated"}),
    # ... and usage that counts only the second replica's tokens disagrees with the chunks received
    (Answer(" the quick the quick brown fox", "stop", 4, 6), {"duplicated", "usage"}),
    (Answer(" the lazy dog", "stop", 3, 3), {"changed"}),
    (Answer(" the quick brown fox", "length", 4, 4), {"finish_reason"}),
    (Answer(" the quick brown fox", "stop", 7, 4), {"usage"}),
    (Answer(" the", error="HTTP 429"), {"failed"}),
])
def test_each_difference_is_named(answer, problems):
    assert compare(GOLDEN, answer) == problems


def test_usage_is_judged_by_the_chunks_only_when_the_server_sends_one_token_a_chunk():
    merged = Answer(" the quick brown fox", "stop", completion_tokens=4, chunks=2)  # two tokens in each chunk
    assert compare(merged, Answer(" the quick brown fox", "stop", 4, 2)) == frozenset()
    assert compare(merged, Answer(" the quick brown fox", "stop", 5, 2)) == {"usage"}
    # another text: its token count is unknown, so usage is not judged
    assert compare(merged, Answer(" a dog", "stop", 9, 1)) == {"changed"}


@pytest.mark.parametrize(("text", "golden", "duplicated"), [
    ("abcabcdef", "abcdef", True),  # the start, then all of it again
    ("abab", "abcdef", True),  # the start, then the start again (and cut)
    ("abcdefabcdef", "abcdef", True),
    ("abcdef", "abcdef", False),
    ("abcxyz", "abcdef", False),
    ("xabcdef", "abcdef", False),
])
def test_duplication_is_a_start_of_the_golden_text_followed_by_it_again(text, golden, duplicated):
    assert is_duplicated(text, golden) is duplicated


def test_a_round_gives_each_problem_as_a_share_of_the_probes_with_a_golden_answer():
    goldens = [GOLDEN, GOLDEN, GOLDEN, None]
    answers = [GOLDEN, Answer(" the lazy dog", "stop", 3, 3), Answer(error="HTTP 500"), Answer(error="x")]
    values = round_metrics(goldens, answers)
    assert values[PREFIX + "changed"] == pytest.approx(1 / 3)
    assert values[PREFIX + "failed"] == pytest.approx(1 / 3)
    assert values[PREFIX + "mismatch"] == pytest.approx(1 / 3)  # a failure is not a mismatch: errors show it
    assert values[PREFIX + "truncated"] == values[PREFIX + "duplicated"] == 0
    assert round_metrics([None], [GOLDEN]) == {}


# ------------------------------------------------------------------ the experiment's block
def test_the_probe_set_is_drawn_with_the_seed_and_sent_deterministically():
    spec = Correctness(model="m", count=3, seed=5)
    bodies = probe_bodies(spec)
    assert bodies == probe_bodies(Correctness(model="m", count=3, seed=5)) and len(bodies) == 3
    assert all(b["temperature"] == 0 and b["seed"] == 5 and b["stream"] for b in bodies)
    assert bodies[0]["stream_options"] == {"include_usage": True}
    given = probe_bodies(Correctness(model="m", api="completions", prompts=["a", "b"], stream=False))
    assert [b["prompt"] for b in given] == ["a", "b"] and "stream_options" not in given[0]


def test_the_block_refuses_what_it_sets_itself_and_defaults_to_the_loads_target():
    with pytest.raises(ValueError, match="temperature"):
        Correctness(model="m", extra={"temperature": 1})
    with pytest.raises(ValueError, match="at least 1s"):
        Correctness(model="m", every=0.5)
    experiment = Experiment.model_validate({
        "version": 1, "name": "x", "stack": "s.yaml",
        "load": {"target": "router", "users": 1, "requests": [{"name": "chat", "llm": {"model": "m", "prompt": "hi"}}]},
        "steady_state": {"slo": {"metrics": {"router": {"aichaos_golden_mismatch": {"max": 0}}}}},
        "phases": [{"name": "baseline", "duration": "1s"}], "correctness": {"model": "m"}})
    assert experiment.correctness_target == "router"
    with pytest.raises(ValueError, match=r"at most steady_state\.window"):
        Experiment.model_validate({**experiment.model_dump(by_alias=True, exclude_none=True),
                                   "correctness": {"model": "m", "every": "10s"}})


# ------------------------------------------------------------------ the prober, on a real socket
class Server:
    """An OpenAI-compatible stub on 127.0.0.1: answers ``text`` streamed a word a chunk."""

    def __init__(self) -> None:
        self.text = " the quick brown fox"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                words = [" " + w for w in outer.text.split()]
                events = [chunk(w) for w in words] + [chunk(finish="stop"), chunk(usage=len(words)), "[DONE]"]
                body = "".join(f"data: {e}\n\n" for e in events).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_a_changed_answer_is_recorded_as_a_series_of_the_service(server):
    store = ScrapeStore()
    prober = GoldenProber("llm", server.url, Correctness(model="m", count=4, every=1), store)
    try:
        assert "4 of 4 probes of llm recorded" in prober.record_golden()
        assert ask(prober.url, prober.bodies[0], 5.0) == GOLDEN
        prober.start()
        server.text = " the lazy dog"  # a model swap behind the same API
        values = _next_values(store, "llm")
    finally:
        prober.stop()
    assert values[PREFIX + "changed"] == 1.0 and values[PREFIX + "mismatch"] == 1.0
    assert store.kinds["llm"][PREFIX + "changed"] == "gauge"


def test_a_server_that_is_not_deterministic_stops_the_run_before_any_fault(server):
    prober = GoldenProber("llm", server.url, Correctness(model="m", count=2), ScrapeStore())
    original = prober.answers
    rounds = iter([" the quick brown fox", " another answer"])

    def answers() -> list[Answer]:
        server.text = next(rounds)
        return original()

    prober.answers = answers  # type: ignore[method-assign]
    try:
        with pytest.raises(EnvironmentFailure, match="other answers to 2 of 2"):
            prober.record_golden()
    finally:
        prober.stop()


def test_no_complete_answer_is_an_environment_failure():
    prober = GoldenProber("llm", "http://127.0.0.1:9", Correctness(model="m", count=1, timeout=1), ScrapeStore())
    try:
        with pytest.raises(EnvironmentFailure, match="no complete answer"):
            prober.record_golden()
    finally:
        prober.stop()


def _next_values(store: ScrapeStore, service: str, timeout: float = 5.0) -> dict[str, float]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for second in sorted(store.series, reverse=True):
            values = store.series[second].get(service)
            if values:
                return values
        time.sleep(0.05)
    raise AssertionError("no round was recorded")
