"""Requests to OpenAI-compatible servers, and what their answers say, as pure functions.

The load process (``aichaos.load.llm_client``) sends the bodies ``body_draw`` makes and feeds every
server-sent event of a streamed answer, with the time it arrived, to a ``StreamReader``; the reader
turns them into one ``StreamResult`` per request, by the definitions of vLLM's ``bench serve``:

- TTFT: request sent → the first chunk that carries content (a chunk with only the role, or empty
  text, is not a token);
- ITL: every gap between consecutive content chunks (AIPerf's "inter token latency" is TPOT below);
- E2EL: request sent → the last chunk (the ``[DONE]`` marker excluded);
- TPOT: (E2EL − TTFT) / (output tokens − 1), for answers of more than one token;
- max gap: the longest ITL of the stream (a stall).

Output tokens come from the server's ``usage`` (``completion_tokens``) when it sends one, else from
the count of content chunks; ``tokens_from`` says which. An answer that ends without a
``finish_reason``, or whose connection drops before ``[DONE]`` or the end of the response, is an
error of kind ``truncated``; an error event inside a stream is ``stream_error``; an event whose data
is not JSON is ``malformed``. Failed requests are counted by kind and measured no further.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aichaos.load.templates import compile_template

TRUNCATED = "truncated"
STREAM_ERROR = "stream_error"
MALFORMED = "malformed"
LLM_ERROR_KINDS = (TRUNCATED, STREAM_ERROR, MALFORMED)

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
TokenSource = Literal["usage", "chunks", "none"]


@dataclass
class StreamResult:
    """One LLM request, measured. Times in ms; ``error`` is an error kind, or None for success."""

    error: str | None = None
    detail: str = ""
    ttft_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    e2el_ms: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int | None = None
    tokens_from: TokenSource = "none"
    content_chunks: int = 0
    streamed: bool = True
    good: bool = False  # met every goodput limit (set by the load process, which knows them)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot_ms(self) -> float | None:
        if self.ttft_ms is None or self.output_tokens < 2 or not self.streamed:
            return None
        return (self.e2el_ms - self.ttft_ms) / (self.output_tokens - 1)

    @property
    def max_gap_ms(self) -> float | None:
        return max(self.itl_ms) if self.itl_ms else None


@dataclass(frozen=True)
class Goodput:
    """Per-request limits (vLLM's ``--goodput``): a request that meets all of them is good."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None
    max_gap_ms: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Goodput:
        return cls(**(data or {}))

    def good(self, result: StreamResult) -> bool:
        if not result.ok:
            return False
        for limit, value in ((self.ttft_ms, result.ttft_ms), (self.tpot_ms, result.tpot_ms),
                             (self.e2el_ms, result.e2el_ms), (self.max_gap_ms, result.max_gap_ms)):
            if limit is not None and value is not None and value > limit:
                return False
        return True


def _has_content(choice: dict[str, Any], chat: bool) -> bool:
    if not chat:
        return bool(choice.get("text"))
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                or delta.get("tool_calls"))


class StreamReader:
    """Reads one streamed answer's events as they arrive.

    ``sent`` and every ``now`` are ``time.perf_counter()`` readings: the request was sent at ``sent``,
    the event arrived at ``now``.
    """

    def __init__(self, sent: float, chat: bool) -> None:
        self.sent = sent
        self.chat = chat
        self.first: float | None = None
        self.last_content: float | None = None
        self.last_event: float | None = None
        self.itl_ms: list[float] = []
        self.chunks = 0
        self.finish_reason: str | None = None
        self.done = False
        self.usage: dict[str, Any] | None = None
        self.error: str | None = None
        self.detail = ""

    def on_event(self, name: str, data: str, now: float) -> None:
        if data == "[DONE]":
            self.done = True
            return
        self.last_event = now
        if name == "error":
            self._fail(STREAM_ERROR, data[:200])
            return
        try:
            payload = json.loads(data)
        except ValueError:
            self._fail(MALFORMED, f"event data is not JSON: {data[:80]!r}")
            return
        if not isinstance(payload, dict):
            self._fail(MALFORMED, f"event data is not a JSON object: {data[:80]!r}")
            return
        if payload.get("error") is not None:
            error = payload["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            self._fail(STREAM_ERROR, str(message)[:200])
            return
        usage = payload.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            self.usage = usage
        for choice in payload.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if _has_content(choice, self.chat):
                if self.last_content is None:
                    self.first = now
                else:
                    self.itl_ms.append((now - self.last_content) * 1000.0)
                self.last_content = now
                self.chunks += 1
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _fail(self, kind: str, detail: str) -> None:
        if self.error is None or (self.error == MALFORMED and kind == STREAM_ERROR):
            self.error, self.detail = kind, detail

    def finish(self, now: float, complete: bool, problem: str = "") -> StreamResult:
        """The result once the answer ended: ``complete`` when the response ended as HTTP says it
        should (else the connection dropped, with ``problem`` saying how)."""
        error, detail = self.error, self.detail
        if error is None and self.finish_reason is None:
            error = TRUNCATED
            detail = f"the stream ended after {self.chunks} content chunks without a finish_reason"
            detail += f" ({problem})" if problem else ""
        elif error is None and not (complete or self.done):
            error = TRUNCATED
            detail = f"the connection dropped before [DONE] ({problem or 'the response did not end'})"
        last = self.last_event if self.last_event is not None else now
        result = StreamResult(error=error, detail=detail, e2el_ms=(last - self.sent) * 1000.0,
                              content_chunks=self.chunks)
        if error is not None:
            return result
        result.ttft_ms = None if self.first is None else (self.first - self.sent) * 1000.0
        result.itl_ms = self.itl_ms
        _count_tokens(result, self.usage, self.chunks)
        return result


def _count_tokens(result: StreamResult, usage: dict[str, Any] | None, chunks: int) -> None:
    if usage is not None:
        try:
            result.output_tokens = int(usage["completion_tokens"])
            result.tokens_from = "usage"
            prompt = usage.get("prompt_tokens")
            result.prompt_tokens = None if prompt is None else int(prompt)
            return
        except (TypeError, ValueError):
            pass
    result.output_tokens = chunks
    result.tokens_from = "chunks" if result.streamed else "none"


def read_whole(body: bytes, sent: float, now: float, chat: bool) -> StreamResult:
    """The result of a request that was not streamed: its whole JSON answer arrived at ``now``.
    TTFT is then the whole latency (there is no earlier token to see), and there are no gaps."""
    e2el = (now - sent) * 1000.0
    try:
        payload = json.loads(body)
    except ValueError:
        return StreamResult(error=MALFORMED, detail=f"the answer is not JSON: {body[:80]!r}", e2el_ms=e2el,
                            streamed=False)
    if not isinstance(payload, dict) or payload.get("error") is not None:
        return StreamResult(error=STREAM_ERROR, detail=str(payload)[:200], e2el_ms=e2el, streamed=False)
    choices = [c for c in payload.get("choices") or () if isinstance(c, dict)]
    if not choices or not any(c.get("finish_reason") for c in choices):
        return StreamResult(error=TRUNCATED, detail="the answer has no finish_reason", e2el_ms=e2el, streamed=False)
    result = StreamResult(ttft_ms=e2el, e2el_ms=e2el, streamed=False)
    usage = payload.get("usage")
    _count_tokens(result, usage if isinstance(usage, dict) and usage.get("completion_tokens") is not None
                  else None, 0)
    return result


# ---------------------------------------------------------------- request bodies
Draw = Callable[[random.Random], Any]


def _whole_number(draw: Draw) -> Draw:
    return lambda rng: max(1, round(float(draw(rng))))


def body_draw(llm: dict[str, Any]) -> Draw:
    """A function of an RNG that draws one request body from the experiment's ``llm`` block
    (as ``aichaos.load.generator`` hands it to the load process: ``prompts`` already read)."""
    chat = llm["api"] == "chat"
    stream = bool(llm["stream"])
    max_tokens = _whole_number(compile_template(llm["max_tokens"]))
    extra = compile_template(llm.get("extra") or {})
    prompts: list[Any] = llm.get("prompts") or []
    prompt_of: Draw
    if prompts:
        prompt_of = lambda rng: rng.choice(prompts)  # noqa: E731
    elif llm.get("messages") is not None:
        prompt_of = compile_template(llm["messages"])
    else:
        prompt_of = compile_template(llm["prompt"])
    fixed: dict[str, Any] = {"model": llm["model"], "stream": stream}
    if stream and llm.get("usage", True):
        fixed["stream_options"] = {"include_usage": True}
    for key in ("temperature", "seed"):
        if llm.get(key) is not None:
            fixed[key] = llm[key]

    def draw(rng: random.Random) -> dict[str, Any]:
        body = dict(fixed)
        prompt = prompt_of(rng)
        if chat:
            body["messages"] = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        else:
            body["prompt"] = prompt if isinstance(prompt, str) else _flatten(prompt)
        body["max_tokens"] = max_tokens(rng)
        body.update(extra(rng))
        return body

    return draw


def _flatten(messages: Any) -> str:
    """A chat prompt (a list of messages) given to the completions API: its contents, one per line."""
    if isinstance(messages, list):
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in messages)
    return str(messages)


def read_prompts(text: str, source: str) -> list[Any]:
    """Prompts from a file's text: JSON Lines (each a string, a list of messages, or an object with
    ``prompt`` or ``messages``) when every non-empty line is JSON, else one prompt per line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{source}: no prompts in the file")
    try:
        parsed = [json.loads(line) for line in lines]
    except ValueError:
        return lines
    out: list[Any] = []
    for number, item in enumerate(parsed, 1):
        if isinstance(item, dict):
            item = item.get("messages", item.get("prompt"))
        if isinstance(item, str) or (isinstance(item, list) and all(isinstance(m, dict) for m in item)):
            out.append(item)
        else:
            raise ValueError(f"{source}:{number}: expected a string, a list of messages, or an object with "
                             "prompt or messages")
    return out
