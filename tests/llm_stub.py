"""An OpenAI-compatible streaming server whose timing is known exactly, for tests and benchmarks.

Stdlib only (uvloop when installed), one asyncio protocol, HTTP/1.1 with keep-alive. It answers
``POST /v1/chat/completions`` and ``POST /v1/completions`` as vLLM does: with ``stream: true`` a
``text/event-stream`` in chunked encoding, one ``data: {...}`` event per token, an event with the
``finish_reason``, then (with ``stream_options: {include_usage: true}``) a ``usage`` event, then
``data: [DONE]``; without it one JSON answer after the whole generation time.

Its timing and its misbehaviour are set on the command line:

- ``--ttft-ms``, ``--itl-ms``: the first token after this long, each next one this long after the
  last; ``--tick-ms``: emit tokens on a shared clock instead (a batching engine's decode step), which
  is cheap enough for thousands of streams.
- ``--stall-every K --stall-after N --stall-ms M``: every K-th stream pauses M ms after token N.
- ``--truncate-every K --truncate-after N``: every K-th stream is cut after token N (no
  ``finish_reason``, no ``[DONE]``, no terminating chunk).
- ``--error-every K --error-after N``: every K-th stream sends an error event after token N.
- ``--no-usage``: never send ``usage`` (clients must count the chunks).

``GET /stats`` answers what it did: streams completed, truncated, errored and stalled, tokens sent
in completed streams, open and at most open, and with ``--record`` every completed stream's time of
arrival, true TTFT (request received → first token written) and gaps between token writes, in ms.
``/admin/faults`` speaks the sample stack's fault-hook protocol for ``slowdown`` (TTFT and gaps
times the factor).

    python tests/llm_stub.py --port 8000 --ttft-ms 50 --itl-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

WORD = " tok"


@dataclass
class Settings:
    ttft_ms: float = 50.0
    itl_ms: float = 10.0
    tokens: int = 16
    tick_ms: float = 0.0
    stall_every: int = 0
    stall_after: int = 0
    stall_ms: float = 0.0
    truncate_every: int = 0
    truncate_after: int = 0
    error_every: int = 0
    error_after: int = 0
    usage: bool = True
    record: bool = False
    slowdown: float = 1.0


@dataclass
class Stats:
    requests: int = 0
    completed: int = 0
    truncated: int = 0
    errored: int = 0
    stalled: int = 0
    tokens: int = 0
    active: int = 0  # streams open now
    peak: int = 0  # the most streams open at once
    # with --record, each completed stream: [epoch second it was received, true TTFT ms, [true gaps ms]]
    recorded: list[list[Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__


class Stream:
    """One request's generation: what it sends, when, and how it ends."""

    def __init__(self, server: Server, protocol: Http, number: int, body: dict[str, Any], chat: bool) -> None:
        self.server, self.protocol, self.number, self.chat = server, protocol, number, chat
        s = server.settings
        self.total = int(body.get("max_tokens") or body.get("max_completion_tokens") or s.tokens)
        self.model = str(body.get("model", "stub"))
        self.usage = s.usage and bool((body.get("stream_options") or {}).get("include_usage"))
        self.prompt_tokens = len(json.dumps(body.get("messages") or body.get("prompt") or "").split())
        self.stall_at = s.stall_after if s.stall_every and number % s.stall_every == 0 else -1
        self.truncate_at = s.truncate_after if s.truncate_every and number % s.truncate_every == 0 else -1
        self.error_at = s.error_after if s.error_every and number % s.error_every == 0 else -1
        self.sent = 0
        self.received = time.perf_counter()
        self.received_at = time.time()
        self.writes: list[float] = []
        self.token_frame = self.frame(self.chunk(WORD))  # the same bytes for every token: cheap to send

    @staticmethod
    def frame(payload: dict[str, Any] | str) -> bytes:
        data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        event = f"data: {data}\n\n".encode()
        return b"%x\r\n%s\r\n" % (len(event), event)

    def event(self, payload: dict[str, Any] | str) -> None:
        self.protocol.write(self.frame(payload))

    def end(self) -> None:
        self.server.stats.active -= 1

    def chunk(self, text: str | None, finish: str | None = None) -> dict[str, Any]:
        if self.chat:
            delta = {} if text is None else {"content": text}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish}
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": f"cmpl-{self.number}", "object": kind, "created": 0, "model": self.model, "choices": [choice]}

    def next_delay_ms(self) -> float:
        s = self.server.settings
        if self.sent == 0:
            return s.ttft_ms * s.slowdown
        if self.sent == self.stall_at:
            return s.stall_ms
        return s.itl_ms * s.slowdown

    def step(self) -> bool:
        """Send the next token (or the ending); False once the stream is over."""
        stats = self.server.stats
        if self.protocol.closed:
            self.end()
            return False
        if self.sent == self.truncate_at:
            stats.truncated += 1
            self.protocol.abort()
            self.end()
            return False
        if self.sent == self.error_at:
            stats.errored += 1
            self.end()
            self.event({"error": {"object": "error", "message": "stub: engine failed mid-stream", "type":
                                  "InternalServerError", "code": 500}})
            self.event("[DONE]")
            self.protocol.write(b"0\r\n\r\n")
            return False
        if self.sent < self.total:
            if self.sent == 0 and self.chat:
                self.event({**self.chunk(None), "choices": [{"index": 0, "delta": {"role": "assistant"},
                                                             "finish_reason": None}]})
            self.protocol.write(self.token_frame)
            if self.server.settings.record:
                self.writes.append(time.perf_counter())
            self.sent += 1
            if self.sent == self.stall_at + 1 and self.stall_at >= 0:
                stats.stalled += 1
            return True
        self.event(self.chunk(None, "length"))
        if self.usage:
            self.event({"id": f"cmpl-{self.number}", "object": "chat.completion.chunk", "created": 0,
                        "model": self.model, "choices": [],
                        "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.sent,
                                  "total_tokens": self.prompt_tokens + self.sent}})
        self.event("[DONE]")
        self.protocol.write(b"0\r\n\r\n")
        stats.completed += 1
        stats.tokens += self.sent
        self.end()
        if self.server.settings.record and self.writes:
            stats.recorded.append([self.received_at, (self.writes[0] - self.received) * 1000,
                                   [(b - a) * 1000 for a, b in zip(self.writes, self.writes[1:], strict=False)]])
        return False


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = Stats()
        self.ticking: list[Stream] = []
        self.loop = asyncio.get_event_loop()

    def start_stream(self, protocol: Http, body: dict[str, Any], chat: bool) -> None:
        self.stats.requests += 1
        self.stats.active += 1
        self.stats.peak = max(self.stats.peak, self.stats.active)
        stream = Stream(self, protocol, self.stats.requests, body, chat)
        protocol.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")
        if self.settings.tick_ms > 0:
            # through a method: the tick replaces the list, so a bound append could add to a dropped one
            self.loop.call_later(self.settings.ttft_ms * self.settings.slowdown / 1000, self.join_tick, stream)
        else:
            self.schedule(stream, stream.received)

    def join_tick(self, stream: Stream) -> None:
        self.ticking.append(stream)

    def schedule(self, stream: Stream, since: float) -> None:
        """Per-stream timing: the next step at an exact offset from the previous one (no drift)."""
        due = since + stream.next_delay_ms() / 1000

        def fire() -> None:
            if stream.step():
                self.schedule(stream, due)

        self.loop.call_at(self.loop.time() + max(0.0, due - time.perf_counter()), fire)

    async def tick(self) -> None:
        period = self.settings.tick_ms / 1000
        due = time.perf_counter()
        while True:
            due += period
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            self.ticking = [s for s in self.ticking if s.step()]

    def answer_whole(self, protocol: Http, body: dict[str, Any], chat: bool) -> None:
        self.stats.requests += 1
        stream = Stream(self, protocol, self.stats.requests, body, chat)
        s = self.settings
        delay = (s.ttft_ms + s.itl_ms * max(0, stream.total - 1)) * s.slowdown / 1000
        text = WORD * stream.total
        choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason":
                                   "length"} if chat else {"index": 0, "text": text, "finish_reason": "length"})
        answer: dict[str, Any] = {"id": f"cmpl-{stream.number}", "object": "chat.completion" if chat else
                                  "text_completion", "model": stream.model, "choices": [choice]}
        if s.usage:
            answer["usage"] = {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.total,
                               "total_tokens": stream.prompt_tokens + stream.total}

        def send() -> None:
            self.stats.completed += 1
            self.stats.tokens += stream.total
            protocol.respond(200, answer)

        self.loop.call_later(delay, send)


class Http(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buffer = b""
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def respond(self, status: int, payload: Any, headers: str = "") -> None:
        body = json.dumps(payload).encode()
        self.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   f"{headers}\r\n".encode() + body)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1").split("\r\n")
            length = 0
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < head_end + 4 + length:
                return
            raw = self.buffer[head_end + 4:head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length:]
            method, path = head[0].split(" ")[:2]
            self.handle(method, path, headers, raw)

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> None:
        server = self.server
        if path == "/health":
            self.respond(200, {"status": "ok"})
        elif path == "/stats":
            self.respond(200, server.stats.to_json())
        elif path == "/admin/faults":
            token = os.environ.get("MODEL_FAULTS_TOKEN")
            if token and headers.get("authorization") != f"Bearer {token}":
                self.respond(401, {"error": "unauthorized"})
            elif method == "POST":
                faults = json.loads(raw or b"{}")
                server.settings.slowdown = float(faults.get("slowdown", server.settings.slowdown))
                self.respond(200, {"slowdown": server.settings.slowdown})
            else:
                self.respond(200, {"slowdown": server.settings.slowdown})
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            try:
                body = json.loads(raw)
            except ValueError:
                self.respond(400, {"error": {"message": "body is not JSON"}})
                return
            chat = path.endswith("chat/completions")
            if body.get("stream"):
                server.start_stream(self, body, chat)
            else:
                server.answer_whole(self, body, chat)
        else:
            self.respond(404, {"error": {"message": f"no route {method} {path}"}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    for name in ("ttft-ms", "itl-ms", "tick-ms", "stall-ms"):
        parser.add_argument(f"--{name}", type=float, default=getattr(Settings, name.replace("-", "_")))
    for name in ("tokens", "stall-every", "stall-after", "truncate-every", "truncate-after", "error-every",
                 "error-after"):
        parser.add_argument(f"--{name}", type=int, default=getattr(Settings, name.replace("-", "_")))
    parser.add_argument("--no-usage", action="store_true")
    parser.add_argument("--record", action="store_true", help="keep every true TTFT and gap for /stats")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    settings = Settings(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, tokens=args.tokens, tick_ms=args.tick_ms,
                        stall_every=args.stall_every, stall_after=args.stall_after, stall_ms=args.stall_ms,
                        truncate_every=args.truncate_every, truncate_after=args.truncate_after,
                        error_every=args.error_every, error_after=args.error_after, usage=not args.no_usage,
                        record=args.record)

    async def serve() -> None:
        server = Server(settings)
        server.loop = asyncio.get_running_loop()
        listener = await server.loop.create_server(lambda: Http(server), args.host, args.port, backlog=4096)
        ticker = asyncio.ensure_future(server.tick()) if settings.tick_ms > 0 else None
        print(f"llm stub on {args.host}:{args.port}", file=sys.stderr, flush=True)
        async with listener:
            await listener.serve_forever()
        if ticker is not None:
            ticker.cancel()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
