"""A small asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) for the model server.

One event loop handles every connection, and inference runs on the batcher's thread, so the
server spends its CPU on requests rather than on thread switches: with 32 clients the threaded
stdlib server was bound by the GIL long before the model was. Uses uvloop when installed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MAX_BODY = 1024 * 1024
MAX_HEAD = 64 * 1024
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 413: "Payload Too Large",
           500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout",
           507: "Insufficient Storage"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload).encode())


def text_response(status: int, text: str) -> Response:
    return Response(status, text.encode(), "text/plain; version=0.0.4")


Handler = Callable[[Request], Awaitable[Response]]


def _encode(response: Response, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Status')}",
            f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}",
            "Connection: keep-alive" if keep_alive else "Connection: close"]
    head += [f"{k}: {v}" for k, v in response.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


async def _connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                writer.write(_encode(json_response(400, {"error": "request head too large"}), False))
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            if len(parts) != 3:
                writer.write(_encode(json_response(400, {"error": "malformed request line"}), False))
                return
            headers = {}
            for line in lines[1:]:
                key, sep, value = line.partition(":")
                if sep:
                    headers[key.strip().lower()] = value.strip()
            length_text = headers.get("content-length", "0")
            if not length_text.isdigit() or int(length_text) > MAX_BODY:
                writer.write(_encode(json_response(413 if length_text.isdigit() else 400,
                                                   {"error": "bad or too large Content-Length"}), False))
                return
            body = await reader.readexactly(int(length_text)) if int(length_text) else b""
            keep_alive = parts[2] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            try:
                response = await handler(Request(parts[0].upper(), parts[1], headers, body))
            except Exception as exc:
                logging.exception("handler failed")
                response = json_response(500, {"error": f"internal error: {exc}"})
            writer.write(_encode(response, keep_alive))
            if not keep_alive:
                return
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_async(host: str, port: int, handler: Handler, name: str,
                on_start: Callable[[], None] | None = None, on_stop: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT. ``on_start`` runs once the port is bound."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: _connection(handler, r, w), host, port,
                                            reuse_address=True, backlog=1024, limit=MAX_HEAD)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        logging.info("listening on %s:%d", host, port)
        if on_start is not None:
            on_start()
        await stop.wait()
        server.close()

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        if on_stop is not None:
            on_stop()
        loop.close()
