"""The builtin Toxiproxy-compatible server: proxies, toxics, and the v2 HTTP API on one asyncio loop.

Status codes, JSON shapes, defaults and error bodies follow Toxiproxy v2 (api.go), so the same
client drives this server and a real ``toxiproxy-server``. Where Toxiproxy is lax, this server is
stricter and says so with a 400: unknown fields, wrong types and oversized bodies are rejected
instead of silently ignored. A proxy's ``listen`` defaults to ``127.0.0.1:0`` (loopback, any port),
and the bound port is reported back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aichaos import __version__
from aichaos.proxy.link import Link, client_protocol_factory
from aichaos.proxy.toxics import ApiError, Toxic, bad_body, check_attributes, check_toxicity

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_HEADER_LINE = 8192
MAX_HEADERS = 100
API_VERSION = f"2.12.0-aichaos.{__version__}"


def split_address(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ApiError(f"{what} {address!r} is not host:port", 400)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: list[Toxic] = []
        self.links: set[Link] = set()
        self.server: asyncio.Server | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled, "toxics": [t.to_json() for t in self.toxics]}

    def upstream_address(self) -> tuple[str, int]:
        return split_address(self.upstream, "upstream")

    def toxics_for(self, stream: str) -> list[Toxic]:
        return [t for t in self.toxics if t.stream == stream]

    def find_toxic(self, name: str) -> Toxic:
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        raise ApiError("toxic not found", 404)

    def toxics_changed(self) -> None:
        for link in list(self.links):
            link.refresh()

    async def start(self) -> None:
        if self.enabled:
            return
        host, port = split_address(self.listen, "listen")
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(lambda: client_protocol_factory(self), host, port,
                                                   reuse_address=True, backlog=4096)
        except OSError as exc:
            raise ApiError(f"listen tcp {self.listen}: {exc.strerror or exc}", 500) from exc
        bound = self.server.sockets[0].getsockname()
        self.listen = f"{host}:{bound[1]}" if ":" not in host else f"[{host}]:{bound[1]}"
        self.enabled = True

    def stop(self) -> None:
        """Close the listener and every open connection (what ``enabled: false`` means)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for link in list(self.links):
            link.close()
        self.enabled = False


def _expect_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_body("expected a JSON object")
    return body


def _string_field(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_body(f"{key} must be a string")
    return value


def _check_proxy_fields(body: dict[str, Any]) -> None:
    unknown = set(body) - {"name", "listen", "upstream", "enabled", "toxics"}
    if unknown:
        raise bad_body(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise bad_body("enabled must be true or false")
    for key in ("listen", "upstream"):
        value = _string_field(body, key)
        if value:
            split_address(value, key)


class ProxyServer:
    """All proxies of one server, and the handlers of the HTTP API."""

    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()

    # ------------------------------------------------------------ proxies
    async def create_proxy(self, body: Any) -> tuple[int, Any]:
        body = _expect_object(body)
        _check_proxy_fields(body)
        name = _string_field(body, "name")
        upstream = _string_field(body, "upstream")
        if not name:
            raise ApiError("missing required field: name", 400)
        if not upstream:
            raise ApiError("missing required field: upstream", 400)
        if name in self.proxies:
            raise ApiError("proxy already exists", 409)
        proxy = Proxy(name, _string_field(body, "listen") or "127.0.0.1:0", upstream)
        if body.get("enabled", True):
            await proxy.start()
        self.proxies[name] = proxy
        return 201, proxy.to_json()

    async def populate(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, list):
            raise bad_body("expected a JSON array of proxies")
        for i, item in enumerate(body):
            item = _expect_object(item)
            _check_proxy_fields(item)
            if not _string_field(item, "name"):
                raise ApiError(f"missing required field: name at proxy {i + 1}", 400)
            if not _string_field(item, "upstream"):
                raise ApiError(f"missing required field: upstream at proxy {i + 1}", 400)
        done: list[Proxy] = []
        for item in body:
            existing = self.proxies.get(item["name"])
            listen = item.get("listen") or "127.0.0.1:0"
            if existing is not None and (existing.upstream != item["upstream"] or existing.listen != listen):
                existing.stop()
                del self.proxies[existing.name]
                existing = None
            if existing is None:
                existing = Proxy(item["name"], listen, item["upstream"])
                self.proxies[existing.name] = existing
            try:
                if item.get("enabled", True):
                    await existing.start()
                else:
                    existing.stop()
            except ApiError as exc:
                return exc.status, {"error": exc.message, "status": exc.status,
                                    "proxies": [p.to_json() for p in done]}
            done.append(existing)
        return 201, {"proxies": [p.to_json() for p in done]}

    def get_proxy(self, name: str) -> Proxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError("proxy not found", 404) from None

    async def update_proxy(self, name: str, body: Any) -> tuple[int, Any]:
        proxy = self.get_proxy(name)
        body = _expect_object(body)
        _check_proxy_fields(body)
        listen = _string_field(body, "listen") or proxy.listen
        upstream = _string_field(body, "upstream") or proxy.upstream
        enabled = body.get("enabled", proxy.enabled)
        if listen != proxy.listen or upstream != proxy.upstream:
            proxy.stop()
            proxy.listen, proxy.upstream = listen, upstream
        if enabled:
            await proxy.start()
        else:
            proxy.stop()
        return 200, proxy.to_json()

    def delete_proxy(self, name: str) -> tuple[int, Any]:
        proxy = self.get_proxy(name)
        proxy.stop()
        del self.proxies[name]
        return 204, None

    async def reset(self) -> tuple[int, Any]:
        for proxy in self.proxies.values():
            proxy.toxics.clear()
            proxy.toxics_changed()
            await proxy.start()
        return 204, None

    # ------------------------------------------------------------ toxics
    def create_toxic(self, proxy_name: str, body: Any) -> tuple[int, Any]:
        proxy = self.get_proxy(proxy_name)
        toxic = Toxic.from_json(body)
        if any(t.name == toxic.name for t in proxy.toxics):
            raise ApiError("toxic already exists", 409)
        proxy.toxics.append(toxic)
        proxy.toxics_changed()
        return 200, toxic.to_json()

    def update_toxic(self, proxy_name: str, toxic_name: str, body: Any) -> tuple[int, Any]:
        proxy = self.get_proxy(proxy_name)
        toxic = proxy.find_toxic(toxic_name)
        body = _expect_object(body)
        unknown = set(body) - {"attributes", "toxicity", "name", "type", "stream"}
        if unknown:
            raise bad_body(f"unknown field(s): {', '.join(sorted(unknown))}")
        attributes = check_attributes(toxic.type, body.get("attributes"), base=toxic.attributes)
        toxicity = check_toxicity(body["toxicity"]) if "toxicity" in body else toxic.toxicity
        toxic.attributes, toxic.toxicity = attributes, toxicity
        toxic.version += 1
        proxy.toxics_changed()
        return 200, toxic.to_json()

    def delete_toxic(self, proxy_name: str, toxic_name: str) -> tuple[int, Any]:
        proxy = self.get_proxy(proxy_name)
        toxic = proxy.find_toxic(toxic_name)
        proxy.toxics.remove(toxic)
        proxy.toxics_changed()
        return 204, None

    def close_all(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()

    # ------------------------------------------------------------ routing
    async def dispatch(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        for pattern, methods in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            handler = methods.get(method)
            if handler is None:
                raise ApiError("method not allowed", 405)
            async with self.lock:
                return await handler(self, body, *match.groups())
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


async def _handle_api(server: ProxyServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
                status, payload = await server.dispatch(method, path, body)
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


async def start_api(server: ProxyServer, host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(lambda r, w: _handle_api(server, r, w), host, port,
                                      reuse_address=True, limit=MAX_HEADER_LINE)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (several times fewer µs per loop iteration: connection rate and
    latency depend on it), else asyncio's own loop. Behaviour is the same on both; the tests run
    on both (AICHAOS_PROXY_LOOP=asyncio forces asyncio's)."""
    if os.environ.get("AICHAOS_PROXY_LOOP") == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class BackgroundProxyServer:
    """The builtin server on its own thread and loop: for tests, benchmarks and embedding.

    >>> with BackgroundProxyServer() as srv:  # doctest: +SKIP
    ...     srv.url
    'http://127.0.0.1:41234'
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.loop = new_event_loop()
        self.server = ProxyServer()
        self._api: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="aichaos-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundProxyServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_api(self.server, self.host, self.port), self.loop)
        self._api = future.result(10)
        self.port = self._api.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close_all()
            if self._api is not None:
                self._api.close()
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> BackgroundProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM; ``on_ready`` gets the API URL."""
    import signal

    async def main() -> None:
        server = ProxyServer()
        api = await start_api(server, host, port)
        bound = api.sockets[0].getsockname()[1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        on_ready(f"http://{host}:{bound}")
        await stop.wait()
        server.close_all()
        api.close()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
