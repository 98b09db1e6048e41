"""The state the builtin server's API mutates: its proxies, their toxics, and the operations on them.

Each operation takes the decoded JSON body of a Toxiproxy v2 request and returns ``(status,
payload)`` or raises ``ApiError``; the HTTP layer (``aichaos.proxy.api``) only routes to them. A
proxy's ``listen`` defaults to ``127.0.0.1:0`` (loopback, any port), and the bound port is reported
back. Everything here runs on the server's one event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aichaos.proxy.http import http_protocol_factory
from aichaos.proxy.link import Link, client_protocol_factory
from aichaos.proxy.toxics import HTTP_TOXICS, ApiError, Toxic, bad_body, check_attributes, check_toxicity

PROTOCOLS = ("tcp", "http")


def split_address(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ApiError(f"{what} {address!r} is not host:port", 400)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class Proxy:
    """One proxy. ``protocol`` is an extension of the builtin server: ``http`` makes each connection
    follow HTTP/1.1 message framing, so that HTTP toxics can act on requests, responses and
    server-sent events (``aichaos.proxy.http``); ``tcp`` (the default) relays bytes, as Toxiproxy does."""

    def __init__(self, name: str, listen: str, upstream: str, protocol: str = "tcp") -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.protocol = protocol
        self.enabled = False
        self.toxics: list[Toxic] = []
        self.links: set[Link] = set()
        self.server: asyncio.Server | None = None
        # what has gone through it: answered by GET /proxies/{name}/stats, an aichaos extension of the
        # API (Toxiproxy has none), so that an attached run can tell that an edge carries traffic
        self.stats: dict[str, int] = {"connections": 0, "upstream": 0, "downstream": 0}

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "listen": self.listen, "upstream": self.upstream,
               "enabled": self.enabled, "toxics": [t.to_json() for t in self.toxics]}
        if self.protocol != "tcp":  # only where it was asked for: a Toxiproxy client sees Toxiproxy's shape
            out["protocol"] = self.protocol
        return out

    def upstream_address(self) -> tuple[str, int]:
        return split_address(self.upstream, "upstream")

    def toxics_for(self, stream: str) -> list[Toxic]:
        """The byte-level toxics of one stream (HTTP toxics act on messages: ``http_toxics``)."""
        return [t for t in self.toxics if t.stream == stream and t.type not in HTTP_TOXICS]

    def http_toxics(self) -> list[Toxic]:
        return [t for t in self.toxics if t.type in HTTP_TOXICS]

    def set_protocol(self, protocol: str) -> None:
        """Change how connections are followed; open ones are closed, since a connection cannot be
        followed from its middle (clients open new ones)."""
        if protocol == self.protocol:
            return
        if self.http_toxics() and protocol != "http":
            raise ApiError("the proxy has HTTP toxics: remove them before its protocol changes", 409)
        self.protocol = protocol
        for link in list(self.links):
            link.close()

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
            self.server = await loop.create_server(self._protocol_factory, host, port,
                                                   reuse_address=True, backlog=4096)
        except OSError as exc:
            raise ApiError(f"listen tcp {self.listen}: {exc.strerror or exc}", 500) from exc
        bound = self.server.sockets[0].getsockname()
        self.listen = f"{host}:{bound[1]}" if ":" not in host else f"[{host}]:{bound[1]}"
        self.enabled = True

    def _protocol_factory(self) -> asyncio.Protocol:
        return http_protocol_factory(self) if self.protocol == "http" else client_protocol_factory(self)

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
    unknown = set(body) - {"name", "listen", "upstream", "enabled", "toxics", "protocol"}
    if unknown:
        raise bad_body(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "protocol" in body and body["protocol"] not in PROTOCOLS:
        raise bad_body(f"protocol must be one of {', '.join(PROTOCOLS)}")
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise bad_body("enabled must be true or false")
    for key in ("listen", "upstream"):
        value = _string_field(body, key)
        if value:
            split_address(value, key)


class ProxyRegistry:
    """All proxies of one server, and the operations the HTTP API routes to.

    ``lock`` serialises those operations: each may await a listener's bind, and no request may see
    another's half-done change.
    """

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
        proxy = Proxy(name, _string_field(body, "listen") or "127.0.0.1:0", upstream, body.get("protocol", "tcp"))
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
            existing.set_protocol(item.get("protocol", existing.protocol))
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
        proxy.set_protocol(body.get("protocol", proxy.protocol))
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
        if toxic.type in HTTP_TOXICS and proxy.protocol != "http":
            raise ApiError(f"a {toxic.type} toxic needs a proxy that follows HTTP: set its protocol to http "
                           f"(POST /proxies/{proxy.name} {{\"protocol\": \"http\"}})", 400)
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
