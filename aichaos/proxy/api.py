"""The Toxiproxy v2 HTTP API of the builtin server: routes, request parsing and responses.

Status codes, JSON shapes, defaults and error bodies follow Toxiproxy v2 (api.go), so the same
client drives this server and a real ``toxiproxy-server``. Where Toxiproxy is lax, this server is
stricter and says so with a 400: unknown fields, wrong types and oversized bodies are rejected
instead of silently ignored. The state behind the routes is ``aichaos.proxy.registry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aichaos import __version__
from aichaos.proxy.registry import ProxyRegistry
from aichaos.proxy.toxics import ApiError, bad_body

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_HEADER_LINE = 8192
MAX_HEADERS = 100
API_VERSION = f"2.12.0-aichaos.{__version__}"


async def dispatch(registry: ProxyRegistry, method: str, path: str, body: Any) -> tuple[int, Any]:
    """Route one request to its operation on ``registry``: ``(status, payload)`` or ``ApiError``."""
    for pattern, methods in _ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        handler = methods.get(method)
        if handler is None:
            raise ApiError("method not allowed", 405)
        async with registry.lock:
            return await handler(registry, body, *match.groups())
    raise ApiError("not found", 404)


async def _sync(result: tuple[int, Any]) -> tuple[int, Any]:
    return result


Handler = Callable[..., Awaitable[tuple[int, Any]]]
_NAME = r"([^/]+)"
_ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"/proxies"), {
        "GET": lambda s, b: _sync((200, {n: p.to_json() for n, p in s.proxies.items()})),
        "POST": lambda s, b: s.create_proxy(b),
    }),
    (re.compile(r"/populate"), {"POST": lambda s, b: s.populate(b)}),
    (re.compile(r"/reset"), {"POST": lambda s, b: s.reset()}),
    (re.compile(r"/version"), {"GET": lambda s, b: _sync((200, {"version": API_VERSION}))}),
    (re.compile(rf"/proxies/{_NAME}"), {
        "GET": lambda s, b, p: _sync((200, s.get_proxy(p).to_json())),
        "POST": lambda s, b, p: s.update_proxy(p, b),
        "PATCH": lambda s, b, p: s.update_proxy(p, b),
        "DELETE": lambda s, b, p: _sync(s.delete_proxy(p)),
    }),
    (re.compile(rf"/proxies/{_NAME}/stats"), {  # an aichaos extension: traffic through the proxy so far
        "GET": lambda s, b, p: _sync((200, {"connections": s.get_proxy(p).stats["connections"],
                                            "bytes_upstream": s.get_proxy(p).stats["upstream"],
                                            "bytes_downstream": s.get_proxy(p).stats["downstream"]})),
    }),
    (re.compile(rf"/proxies/{_NAME}/toxics"), {
        "GET": lambda s, b, p: _sync((200, [t.to_json() for t in s.get_proxy(p).toxics])),
        "POST": lambda s, b, p: _sync(s.create_toxic(p, b)),
    }),
    (re.compile(rf"/proxies/{_NAME}/toxics/{_NAME}"), {
        "GET": lambda s, b, p, t: _sync((200, s.get_proxy(p).find_toxic(t).to_json())),
        "POST": lambda s, b, p, t: _sync(s.update_toxic(p, t, b)),
        "PATCH": lambda s, b, p, t: _sync(s.update_toxic(p, t, b)),
        "DELETE": lambda s, b, p, t: _sync(s.delete_toxic(p, t)),
    }),
]
_BODY_METHODS = {"POST", "PATCH", "PUT"}
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error"}


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes, bool] | None:
    """One HTTP/1.1 request, or None at a clean end of the connection."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _HttpError(400, "incomplete request line") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _HttpError(400, "request line too long") from exc
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _HttpError(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        try:
            raw = await reader.readuntil(b"\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise _HttpError(400, "malformed headers") from exc
        if raw in (b"\r\n", b"\n"):
            break
        key, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise _HttpError(400, "malformed header line")
        headers[key.strip().lower()] = value.strip()
    else:
        raise _HttpError(400, "too many headers")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise _HttpError(400, "chunked request bodies are not supported; send Content-Length")
    length_text = headers.get("content-length", "0") or "0"
    if not length_text.isdigit():
        raise _HttpError(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        raise _HttpError(413, f"request body larger than {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
    path = target.split("?", 1)[0]
    return method.upper(), path, headers, body, keep_alive


def _response(status: int, payload: Any, keep_alive: bool) -> bytes:
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
    if status == 204 or payload is None:
        body = b""
    else:
        body = json.dumps(payload).encode() + b"\n"
        head += "Content-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    head += "Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n"
    return head.encode("latin-1") + b"\r\n" + body


async def _handle_api(registry: ProxyRegistry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                request = await _read_request(reader)
            except _HttpError as exc:
                writer.write(_response(exc.status, {"error": exc.message, "status": exc.status}, False))
                await writer.drain()
                return
            if request is None:
                return
            method, path, _, raw, keep_alive = request
            body: Any = None
            try:
                if raw.strip() and method in _BODY_METHODS:
                    try:
                        body = json.loads(raw)
                    except (ValueError, RecursionError) as exc:
                        raise bad_body(f"not valid JSON ({exc})") from exc
                elif method in _BODY_METHODS:
                    body = {}
                status, payload = await dispatch(registry, method, path, body)
            except ApiError as exc:
                status, payload = exc.status, {"error": exc.message, "status": exc.status}
            except Exception as exc:  # never let one bad request take the server down
                log.exception("API handler failed")
                status, payload = 500, {"error": f"internal error: {exc}", "status": 500}
            writer.write(_response(status, payload, keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def start_api(registry: ProxyRegistry, host: str, port: int) -> asyncio.Server:
    """Listen for the v2 API on host:port; every request is routed to ``registry``."""
    return await asyncio.start_server(lambda r, w: _handle_api(registry, r, w), host, port,
                                      reuse_address=True, limit=MAX_HEADER_LINE)


