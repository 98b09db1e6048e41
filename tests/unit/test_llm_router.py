"""The sample LLM router's stream resumption (--resume-streams): its event helpers, and a stream that
one replica fails midway with a 429 error event, relayed whole from the other replica through
httpx's MockTransport (no process, no socket)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from sample_stack.llm_router import EventFramer, Router, event_text, is_error_event, parse_args, skip_text

WORDS = [" the", " quick", " brown", " fox"]


def event(payload: object) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def token(text: str, finish: str | None = None, role: bool = False) -> bytes:
    delta = {"role": "assistant", "content": text} if role else {"content": text}
    return event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def answer(words: list[str]) -> bytes:
    return b"".join(token(w, role=i == 0) for i, w in enumerate(words)) + token("", "stop") + b"data: [DONE]\n\n"


RATE_LIMIT = event({"error": {"message": "rate limited", "type": "rate_limit_error", "code": 429}})


def test_events_are_cut_at_blank_lines_whatever_the_chunks():
    framer = EventFramer()
    stream = answer(WORDS)
    got = [e for i in range(0, len(stream), 7) for e in framer.feed(stream[i:i + 7])]
    assert b"".join(got) == stream and len(got) == 6 and framer.rest == b""


def test_text_and_errors_are_read_from_chat_and_completion_chunks():
    assert event_text(token(" fox")) == " fox"
    assert event_text(event({"choices": [{"text": " dog", "finish_reason": None}]})) == " dog"
    assert event_text(b"data: [DONE]\n\n") == "" and event_text(b": a comment\n\n") == ""
    assert is_error_event(RATE_LIMIT) and not is_error_event(token(" fox"))


def test_skipping_text_cuts_through_events_and_drops_the_ones_left_empty():
    assert skip_text(token(" the", role=True), 6) == (b"", 2)  # all of it skipped, two characters still to go
    trimmed, left = skip_text(token(" quick"), 2)
    assert left == 0 and event_text(trimmed) == "uick"
    assert "role" not in json.loads(trimmed[5:])["choices"][0]["delta"]
    done = token("", "stop")
    assert skip_text(done, 3) == (done, 3)  # an event without text (the finish) is kept as it is


@pytest.mark.parametrize("resume", [False, True])
def test_a_429_in_the_middle_of_a_stream_is_relayed_or_resumed_on_the_other_replica(resume):
    asked: list[str] = []

    def replica(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        if request.url.host == "a":  # two tokens, then a rate limit after the 200
            body = token(WORDS[0], role=True) + token(WORDS[1]) + RATE_LIMIT + b"data: [DONE]\n\n"
        else:
            body = answer(WORDS)
        return httpx.Response(200, stream=httpx.ByteStream(body), headers={"content-type": "text/event-stream"})

    args = parse_args(["--port", "1", "--replica", "http://a", "--replica", "http://b",
                       *(["--resume-streams"] if resume else [])])
    router = Router([("replica-a", "http://a"), ("replica-b", "http://b")], args)
    router.client = httpx.AsyncClient(transport=httpx.MockTransport(replica))

    async def ask() -> tuple[bytes, bytes]:  # through ASGI, without the lifespan that makes the router's own client
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router.app), base_url="http://router") as c:
            got = await c.post("/v1/chat/completions", json={"model": "m", "messages": [], "stream": True})
            return got.content, (await c.get("/metrics")).content

    content, metrics = asyncio.run(ask())
    events = [e + b"\n\n" for e in content.split(b"\n\n") if e]
    text = "".join(event_text(e) for e in events)
    if resume:
        assert asked == ["a", "b"] and not any(is_error_event(e) for e in events)
        assert text == "".join(WORDS)  # each word once: nothing the client had is sent again
        assert events[-1] == b"data: [DONE]\n\n" and b'"finish_reason": "stop"' in events[-2]
        assert b"router_resumed_streams_total 1.0" in metrics
    else:
        assert asked == ["a"] and is_error_event(events[-2]) and text == "".join(WORDS[:2])
