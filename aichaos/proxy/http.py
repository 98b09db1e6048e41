"""HTTP-aware connections of the builtin proxy: HTTP/1.1 framing followed in both directions, so that
HTTP toxics (``aichaos.proxy.toxics.HTTP_TOXICS``) act on requests, responses and server-sent events.

A proxy with ``protocol: http`` gives each accepted connection an ``HttpLink``. Its two directions
follow message framing (request and status lines, headers, Content-Length and chunked bodies,
bodies that end at close, 1xx answers, keep-alive, upgrades and CONNECT, after which the
connection is relayed as bytes) and hand what they forward to the ordinary byte path of
``aichaos.proxy.link``, so byte-level toxics (latency, bandwidth ...) still apply after the HTTP
ones. With no HTTP toxic active, bytes are forwarded as they arrive, in the same pieces; only the
framing is tracked.

Per request, in order:

- the request side rolls each ``http_error`` toxic that matches (``path`` prefix, ``method``); a hit
  swallows the request and queues a synthetic answer (JSON error body, ``Retry-After`` on 429 and
  503) that goes out in the response order, so keep-alive and pipelining stay in step;
- the response side rolls the other HTTP toxics when the response's head arrives:
  ``first_byte_delay`` holds everything of the response until its head's arrival plus the delay; the
  stream toxics act only on ``text/event-stream`` responses, whose body is then split into events
  (a blank line ends one) and, when chunked, sent again one chunk per event.

Times are measured from arrival, as the byte toxics' are: event N+1 of a stall leaves at the later
of its arrival and event N's departure plus the stall, so the gap a client sees is the stall. When
a toxic that holds data of an open response is removed or changed, what it holds is released at
once. A head that cannot be parsed, or is larger than ``MAX_HEAD``, turns the connection into a
plain relay of bytes: the proxy never breaks traffic it does not understand.
"""

from __future__ import annotations

import asyncio
import collections
import http
import json
import random
from dataclasses import dataclass, field
from typing import Protocol

from aichaos.proxy.link import HIGH_WATER, Direction, Link, ProxyView, _ClientSide
from aichaos.proxy.toxics import Toxic

MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024
STREAM_TOXICS = ("stream_stall", "stream_throttle", "stream_truncate", "stream_corrupt")
ERROR_TYPES = {429: "rate_limit_error", 503: "overloaded_error"}  # OpenAI's and Anthropic's names


def error_event(status: int) -> bytes:
    """The event a ``stream_corrupt`` toxic in mode ``error`` inserts: an OpenAI-style error object."""
    return b"data: %s\n\n" % json.dumps({"error": {
        "message": f"stream_corrupt: an error event ({status}) injected by aichaos",
        "type": ERROR_TYPES.get(status, "server_error"), "code": status}}).encode()


ERROR_EVENT = error_event(500)
MALFORMED_EVENT = b'data: {"id": "aichaos-corrupt", "choices": [{"delta": {"content": "\\x\n\n'
_CLOSE = object()  # a held item: close the connection once what is ahead of it has gone


class HttpProxyView(ProxyView, Protocol):
    def http_toxics(self) -> list[Toxic]: ...


# ------------------------------------------------------------------ framing
NONE, LENGTH, CHUNKED, UNFRAMED, UNTIL_CLOSE, TUNNEL = "none", "length", "chunked", "unframed", "until_close", "tunnel"
Event = tuple[str, bytes, bytes]  # ("head", head, b""), ("body", raw, decoded), ("end", ...), ("raw", bytes, b"")


def parse_head(head: bytes) -> tuple[list[str], dict[str, str]]:
    """The start line's parts and the headers (names lower-cased) of a message head."""
    lines = head.decode("latin-1").split("\n")
    start = lines[0].strip().split(" ", 2)
    if len(start) < 2:
        raise ValueError(f"bad start line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return start, headers


def body_kind(headers: dict[str, str]) -> tuple[str, int]:
    """How a body is framed: chunked, a length, or neither (``UNFRAMED``: no body for a request,
    until the close for a response)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return CHUNKED, 0
    length = headers.get("content-length")
    if length is None:
        return UNFRAMED, 0
    length = length.split(",")[0].strip()
    if not length.isdigit():
        raise ValueError(f"bad Content-Length {length!r}")
    return LENGTH, int(length)


class _Framer:
    """Splits one direction's bytes into heads, body pieces (raw and decoded) and message ends.

    ``events`` stops after a head and returns the bytes after it, so that the owner can say how the
    body is framed (``begin``) before they are read."""

    def __init__(self) -> None:
        self.state = "head"  # head | body | tunnel
        self.buf = bytearray()
        self.kind = NONE
        self.remaining = 0
        self.chunk = "size"  # size | data | crlf | trailer

    def events(self, data: bytes) -> tuple[list[Event], bytes | None]:
        out: list[Event] = []
        i, n = 0, len(data)
        while i < n:
            if self.state == "tunnel":
                out.append(("raw", data[i:] if i else data, b""))
                return out, None
            if self.state == "head":
                start = max(0, len(self.buf) - 3)
                self.buf += data[i:] if i else data
                crlf, lf = self.buf.find(b"\r\n\r\n", start), self.buf.find(b"\n\n", start)
                if crlf < 0 and lf < 0:
                    if len(self.buf) > MAX_HEAD:
                        raise ValueError("head too large")
                    return out, None
                end = crlf + 4 if crlf >= 0 and (lf < 0 or crlf < lf) else lf + 2
                head, rest = bytes(self.buf[:end]), bytes(self.buf[end:])
                self.buf.clear()
                self.state = "body"
                out.append(("head", head, b""))
                return out, rest
            if self.kind == LENGTH:
                take = min(self.remaining, n - i)
                piece = data[i : i + take] if (i or take != n) else data
                out.append(("body", piece, piece))
                self.remaining -= take
                i += take
                if self.remaining == 0:
                    out.append(("end", b"", b""))
                    self.state = "head"
            elif self.kind == UNTIL_CLOSE:
                piece = data[i:] if i else data
                out.append(("body", piece, piece))
                return out, None
            else:
                i = self._chunked(data, i, n, out)
        return out, None

    def begin(self, kind: str, length: int = 0) -> bool:
        """After a head: how its body is framed. True when the message has no body (it ended)."""
        if kind == LENGTH and length == 0:
            kind = NONE
        self.kind, self.remaining, self.chunk = kind, length, "size"
        self.state = "head" if kind == NONE else "tunnel" if kind == TUNNEL else "body"
        return kind == NONE

    def _chunked(self, data: bytes, i: int, n: int, out: list[Event]) -> int:
        start = i
        decoded = bytearray()
        while i < n:
            if self.chunk == "data":
                take = min(self.remaining, n - i)
                decoded += data[i : i + take]
                self.remaining -= take
                i += take
                if self.remaining == 0:
                    self.chunk = "crlf"
                continue
            newline = data.find(b"\n", i, n)
            if newline < 0:
                self.buf += data[i:n]
                if len(self.buf) > MAX_LINE:
                    raise ValueError("chunk line too long")
                i = n
                break
            line = bytes(self.buf) + data[i:newline]
            self.buf.clear()
            i = newline + 1
            if self.chunk == "size":
                size = int(line.split(b";", 1)[0].strip(), 16)  # ValueError: not HTTP this proxy follows
                if size < 0:
                    raise ValueError("negative chunk size")
                self.chunk, self.remaining = ("data", size) if size else ("trailer", 0)
            elif self.chunk == "crlf":
                self.chunk = "size"
            elif not line.strip():  # the blank line after the last chunk (and its trailers)
                out.append(("body", data[start:i], bytes(decoded)))
                out.append(("end", b"", b""))
                self.state = "head"
                return i
        out.append(("body", data[start:i], bytes(decoded)))
        return i


# ------------------------------------------------------------------ held data
class _HttpDirection(Direction):
    """A direction whose input is framed before it reaches the byte path; what an HTTP toxic holds
    waits in ``held`` (in order, each item with the time it may leave)."""

    def __init__(self, link: HttpLink, stream: str) -> None:
        super().__init__(link, stream)
        self.http = link
        self.loop = asyncio.get_running_loop()
        self.framer = _Framer()
        self.held: collections.deque[tuple[float, object]] = collections.deque()
        self.held_bytes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.last_due = 0.0
        self.dropping = False  # after a close this side has decided: nothing more goes through
        self.http_paused = False

    def pending(self) -> bool:
        return bool(self.held) or super().pending()

    # -------------------------------------------------------- input
    def feed(self, data: bytes | None) -> None:
        while data is not None and not self.dropping:
            try:
                events, data = self.framer.events(data)
            except ValueError:
                self._give_up(b"")
                return
            for what, raw, decoded in events:
                if what == "raw":
                    self.emit(raw)
                elif what == "head":
                    self.on_head(raw)
                elif what == "body":
                    self.on_body(raw, decoded)
                else:
                    self.on_end()
                if self.dropping:
                    return

    def feed_eof(self) -> None:
        if self.dropping:
            return
        self.on_eof()
        self.emit_eof()

    def _give_up(self, data: bytes) -> None:
        """Not HTTP this proxy follows: relay the rest of the connection as bytes, both ways."""
        for d in (self.http.upstream, self.http.downstream):
            d.framer.state = "tunnel"
            if d.framer.buf:
                d.emit(bytes(d.framer.buf))
                d.framer.buf.clear()
        if data:
            self.emit(data)

    def on_head(self, head: bytes) -> None: ...

    def on_body(self, raw: bytes, decoded: bytes) -> None:
        self.emit(raw)

    def on_end(self) -> None: ...

    def on_eof(self) -> None: ...

    def begin(self, kind: str, length: int = 0) -> None:
        if self.framer.begin(kind, length):
            self.on_end()

    # -------------------------------------------------------- output, in order and on time
    def emit(self, data: bytes, due: float = 0.0) -> float:
        """Pass ``data`` on to the byte path no earlier than ``due``; returns when it leaves."""
        now = self.loop.time()
        if not self.held and due <= now:
            Direction.feed(self, data)
            return now
        return self._hold(max(due, self.last_due, now), data)

    def emit_eof(self, due: float = 0.0) -> None:
        now = self.loop.time()
        if not self.held and due <= now:
            Direction.feed_eof(self)
            return
        self._hold(max(due, self.last_due, now), None)

    def emit_close(self, due: float = 0.0) -> None:
        self._hold(max(due, self.last_due, self.loop.time()), _CLOSE)

    def _hold(self, due: float, item: object) -> float:
        self.held.append((due, item))
        self.last_due = due
        if isinstance(item, bytes):
            self.held_bytes += len(item)
            if self.held_bytes > HIGH_WATER and self.src is not None and not self.http_paused:
                self.http_paused = True
                self.src.pause_reading()
        self._arm()
        return due

    def _arm(self) -> None:
        if self.timer is None and self.held:
            self.timer = self.loop.call_at(self.held[0][0], self._release)

    def _release(self, everything: bool = False) -> None:
        self.timer = None
        now = self.loop.time()
        while self.held and (everything or self.held[0][0] <= now):
            _, item = self.held.popleft()
            if isinstance(item, bytes):
                self.held_bytes -= len(item)
                Direction.feed(self, item)
            elif item is None:
                Direction.feed_eof(self)
            elif item is _CLOSE:
                if not super().pending():  # else the EOF ahead of it ends the connection in its turn
                    self.link.close()
                return
        if everything:
            self.last_due = now
        if self.http_paused and self.held_bytes < HIGH_WATER // 2 and self.src is not None:
            self.http_paused = False
            self.src.resume_reading()
        self._arm()

    def release_all(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._release(everything=True)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        super().cancel()


def _matches(toxic: Toxic, method: str, path: str) -> bool:
    want_method = toxic.attributes.get("method", "")
    if want_method and want_method.upper() != method:
        return False
    return path.startswith(toxic.attributes.get("path", ""))


def _rolls(toxic: Toxic) -> bool:
    return toxic.toxicity >= 1.0 or random.random() < toxic.toxicity


def error_response(status: int, retry_after: int, close: bool) -> bytes:
    """The synthetic answer of an ``http_error`` toxic: an OpenAI-style JSON error body."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    body = json.dumps({"error": {"message": f"{status} {reason} (injected by aichaos http_error)",
                                 "type": "aichaos_http_error", "code": status}}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if status in (429, 503) and retry_after:
        head += f"Retry-After: {retry_after}\r\n"
    head += "Connection: close\r\n" if close else "Connection: keep-alive\r\n"
    return head.encode("latin-1") + b"\r\n" + body


@dataclass
class _Exchange:
    """A request the response side owes an answer to: from upstream, or ``answer`` made here."""

    method: str
    path: str
    answer: bytes | None = None
    close: bool = False


class _RequestSide(_HttpDirection):
    def __init__(self, link: HttpLink) -> None:
        super().__init__(link, "upstream")
        self.swallowing = False

    def on_head(self, head: bytes) -> None:
        try:
            (method, target, *_), headers = parse_head(head)
            kind, length = body_kind(headers)
        except ValueError:
            self._give_up(head)
            return
        method = method.upper()
        path = target.split("?", 1)[0]
        hit = next((t for t in self.http.proxy.http_toxics()
                    if t.type == "http_error" and _matches(t, method, path) and _rolls(t)), None)
        if hit is None:
            self.http.expected.append(_Exchange(method, path))
            self.emit(head)
        else:
            close = ("close" in headers.get("connection", "").lower() or "expect" in headers
                     or not head.split(b"\r\n", 1)[0].rstrip().endswith(b"HTTP/1.1"))
            self.swallowing = True
            answer = error_response(int(hit.attributes["status"]), int(hit.attributes["retry_after"]), close)
            self.http.expected.append(_Exchange(method, path, answer, close))
            self.http.downstream.answer_queued()
        if kind == UNFRAMED or method == "CONNECT" or "upgrade" in headers.get("connection", "").lower():
            kind = NONE  # an upgrade's answer decides whether the connection becomes a tunnel
        self.begin(kind, length)

    def on_body(self, raw: bytes, decoded: bytes) -> None:
        if not self.swallowing:
            self.emit(raw)

    def on_end(self) -> None:
        self.swallowing = False


@dataclass
class _Response:
    exchange: _Exchange
    arrived: float
    hold_until: float = 0.0
    toxics: dict[str, Toxic] = field(default_factory=dict)
    events: bool = False
    chunked: bool = False
    count: int = 0
    last_due: float = 0.0
    cut: bool = False  # truncated: the rest of this body goes nowhere
    buffer: bytearray = field(default_factory=bytearray)


class _ResponseSide(_HttpDirection):
    def __init__(self, link: HttpLink) -> None:
        super().__init__(link, "downstream")
        self.response: _Response | None = None
        self.last: _Response | None = None  # the response before: its events may still be held

    # -------------------------------------------------------- answers made here
    def answer_queued(self) -> None:
        """Send the synthetic answers at the head of the queue, when no response is under way."""
        expected = self.http.expected
        while self.response is None and expected and expected[0].answer is not None:
            exchange = expected.popleft()
            assert exchange.answer is not None
            self.emit(exchange.answer)
            if exchange.close:
                self.emit_eof()
                self.http.upstream.dropping = True
                return

    # -------------------------------------------------------- responses from upstream
    def on_head(self, head: bytes) -> None:
        try:
            (_, status_text, *_), headers = parse_head(head)
            status = int(status_text)
            kind, length = body_kind(headers)
        except ValueError:
            self._give_up(head)
            return
        expected = self.http.expected
        if 100 <= status < 200 and status != 101:
            self.emit(head)
            self.begin(NONE)  # not the final answer: the exchange stays expected
            return
        exchange = expected.popleft() if expected and expected[0].answer is None else _Exchange("GET", "/")
        now = self.loop.time()
        response = _Response(exchange, now)
        for toxic in self.http.proxy.http_toxics():
            if toxic.type != "http_error" and toxic.type not in response.toxics \
                    and _matches(toxic, exchange.method, exchange.path) and _rolls(toxic):
                response.toxics[toxic.type] = toxic
        delay = response.toxics.get("first_byte_delay")
        if delay is not None:
            response.hold_until = now + delay.attributes["delay"] / 1000
        sse = headers.get("content-type", "").lower().startswith("text/event-stream")
        response.events = sse and any(t in response.toxics for t in STREAM_TOXICS)
        response.chunked = kind == CHUNKED
        self.response = response
        response.last_due = self.emit(head, response.hold_until)
        if status == 101 or (exchange.method == "CONNECT" and 200 <= status < 300):
            self.response = None
            self.http.upstream.framer.begin(TUNNEL)
            self.begin(TUNNEL)
            return
        if exchange.method == "HEAD" or status in (204, 304):
            self.begin(NONE)
        elif kind == UNFRAMED:
            self.begin(UNTIL_CLOSE)  # no length given: the body ends when the connection does
        else:
            self.begin(kind, length)

    def on_body(self, raw: bytes, decoded: bytes) -> None:
        response = self.response
        if response is None:  # pragma: no cover - a body always follows a head
            self.emit(raw)
            return
        if not response.events:
            if response.cut:
                return
            self.emit(raw, response.hold_until)
            return
        buffer = response.buffer
        buffer += decoded
        while not response.cut:
            end, sep = _event_end(buffer)
            if end < 0:
                break
            event = bytes(buffer[: end + sep])
            del buffer[: end + sep]
            self.on_event(response, event)
        if response.cut:
            buffer.clear()

    def on_event(self, r: _Response, event: bytes) -> None:
        r.count += 1
        due = max(r.hold_until, r.last_due)
        toxics = r.toxics
        throttle = toxics.get("stream_throttle")
        if throttle is not None:
            due = max(due, r.last_due + 1 / throttle.attributes["rate"])
        stall = toxics.get("stream_stall")
        if stall is not None and r.count == stall.attributes["after_events"] + 1:
            due = max(due, r.last_due + stall.attributes["stall"] / 1000)
        truncate = toxics.get("stream_truncate")
        if truncate is not None and r.count == truncate.attributes["after_events"] + 1:
            r.cut = True
            if truncate.attributes["mode"] == "end" and r.chunked:
                self.emit(b"0\r\n\r\n", due)  # a well-framed body without the rest of its events
            else:
                self.emit_eof(due)
                self.emit_close(due)
                self.dropping = True
            return
        corrupt = toxics.get("stream_corrupt")
        if corrupt is not None and r.count == corrupt.attributes["after_events"] + 1:
            if self.framer.kind == LENGTH:
                event = _same_length(MALFORMED_EVENT, len(event))  # a Content-Length body keeps its length
            elif corrupt.attributes["mode"] == "error":
                self._send_event(r, error_event(int(corrupt.attributes.get("status", 500))), due)
            else:
                event = MALFORMED_EVENT
        r.last_due = self._send_event(r, event, due)

    def _send_event(self, r: _Response, event: bytes, due: float) -> float:
        piece = b"%x\r\n%s\r\n" % (len(event), event) if r.chunked else event
        return self.emit(piece, due)

    def on_end(self) -> None:
        response = self.response
        self.response = None
        if response is not None:
            self.last = response
        if response is not None and response.events and not response.cut:
            if response.buffer:  # a last event without its blank line
                self._send_event(response, bytes(response.buffer), max(response.hold_until, response.last_due))
            if response.chunked:
                self.emit(b"0\r\n\r\n", max(response.hold_until, response.last_due))
        self.answer_queued()

    def on_eof(self) -> None:
        if self.response is not None:  # a body that ends at the close
            self.on_end()

    # -------------------------------------------------------- toxics changed
    def toxics_changed(self) -> None:
        """A toxic of the response under way that was removed or changed lets go of what it holds."""
        response = self.response or self.last
        if response is None or not response.toxics:
            return
        live = {id(t): t.version for t in self.http.proxy.http_toxics()}
        gone = [kind for kind, t in response.toxics.items() if live.get(id(t)) != t.version]
        if not gone:
            return
        for kind in gone:
            del response.toxics[kind]
        response.hold_until = 0.0
        response.last_due = self.loop.time()
        self.release_all()


def _event_end(buffer: bytearray) -> tuple[int, int]:
    """Where the first complete server-sent event ends (index of its blank line, its length), or -1."""
    lf = buffer.find(b"\n\n")
    crlf = buffer.find(b"\r\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return lf, 2


def _same_length(event: bytes, length: int) -> bytes:
    if length <= 2:
        return b"\n" * length
    body = (event.rstrip(b"\n") + b"x" * length)[: length - 2]
    return body + b"\n\n"


class HttpLink(Link):
    """One proxied connection whose HTTP messages the proxy follows (``protocol: http``)."""

    def __init__(self, proxy: HttpProxyView) -> None:
        super().__init__(proxy)
        self.proxy: HttpProxyView = proxy
        self.expected: collections.deque[_Exchange] = collections.deque()
        self.upstream: _RequestSide = _RequestSide(self)
        self.downstream: _ResponseSide = _ResponseSide(self)

    def refresh(self) -> None:
        super().refresh()
        self.downstream.toxics_changed()


class _HttpClientSide(_ClientSide):
    def __init__(self, proxy: HttpProxyView) -> None:
        self.link = HttpLink(proxy)
        self.incoming = self.link.upstream
        self.outgoing = self.link.downstream


def http_protocol_factory(proxy: HttpProxyView) -> asyncio.Protocol:
    return _HttpClientSide(proxy)
