"""The one client aichaos uses for any Toxiproxy-API server (a real Toxiproxy or the builtin one).

It drives toxiproxy-python, wrapped at the boundary so that:

- every HTTP call is bounded in time (toxiproxy-python passes no timeout to ``requests``);
- its failure modes become ``ProxyError``s that say what failed and what to check: a 500 whose
  JSON body ends in a ``KeyError``, calls that return ``None``/``False`` silently whatever the
  server said, toxics that were never added;
- toxic updates, which toxiproxy-python lacks, go directly over HTTP.

toxiproxy-python keeps its server address in class attributes; this client sets them before each
call, so use one client per thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests

from aichaos.errors import ProxyError

log = logging.getLogger(__name__)


class _BoundedRequests:
    """Stands in for the ``requests`` module inside toxiproxy-python, adding a timeout to each call."""

    timeout = 5.0

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return requests.get(url, timeout=self.timeout, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return requests.post(url, timeout=self.timeout, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> requests.Response:
        return requests.delete(url, timeout=self.timeout, **kwargs)


_BOUNDED = _BoundedRequests()


def _toxiproxy() -> Any:
    import toxiproxy.api

    toxiproxy.api.requests = _BOUNDED
    return toxiproxy


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    listen: str
    upstream: str
    enabled: bool

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class ToxiproxyClient:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        host_port = self.url.split("://", 1)[-1]
        host, _, port = host_port.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)

    # ------------------------------------------------------------ plumbing
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        tp = _toxiproxy()
        tp.api.APIConsumer.host, tp.api.APIConsumer.port = self.host, self.port
        _BOUNDED.timeout = self.timeout
        exceptions = tp.exceptions
        try:
            return fn(*args, **kwargs)
        except requests.Timeout as exc:
            raise ProxyError(f"{what}: the fault proxy at {self.url} did not answer within {self.timeout:g}s",
                             hint="is the proxy server overloaded or stopped?") from exc
        except requests.ConnectionError as exc:
            raise ProxyError(f"{what}: cannot reach the fault proxy at {self.url}",
                             hint="is the proxy server running? (aichaos proxy serve, or toxiproxy-server)") from exc
        except (exceptions.NotFound, exceptions.ProxyExists, exceptions.InvalidToxic) as exc:
            raise ProxyError(f"{what}: the fault proxy refused: {_body_text(exc)}") from exc
        except (KeyError, ValueError, TypeError) as exc:
            # toxiproxy-python builds objects from whatever JSON came back, so a 500 ends here
            raise ProxyError(f"{what}: the fault proxy answered something unexpected ({exc!r})") from exc

    def _http(self, method: str, path: str, what: str, json: Any = None, expect: int = 200) -> Any:
        try:
            response = requests.request(method, self.url + path, json=json, timeout=self.timeout)
        except requests.Timeout as exc:
            raise ProxyError(f"{what}: the fault proxy at {self.url} did not answer within {self.timeout:g}s") from exc
        except requests.RequestException as exc:
            raise ProxyError(f"{what}: cannot reach the fault proxy at {self.url}: {exc}") from exc
        if response.status_code != expect:
            raise ProxyError(f"{what}: the fault proxy answered {response.status_code}: {response.text.strip()[:300]}")
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ProxyError(f"{what}: the fault proxy answered non-JSON: {response.text[:200]!r}") from exc

    def _proxy(self, name: str) -> Any:
        tp = _toxiproxy()
        proxy = self._call(f"look up proxy {name!r}", tp.Toxiproxy().get_proxy, name)
        if proxy is None:
            raise ProxyError(f"proxy {name!r} does not exist on the fault proxy at {self.url}")
        return proxy

    # ------------------------------------------------------------ API
    def version(self) -> str:
        body = self._http("GET", "/version", "ask the fault proxy's version")
        return str(body.get("version")) if isinstance(body, dict) else str(body)

    def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> ProxyInfo:
        tp = _toxiproxy()
        proxy = self._call(f"create proxy {name!r}", tp.Toxiproxy().create, upstream=upstream, name=name,
                           listen=listen, enabled=True)
        info = ProxyInfo(proxy.name, proxy.listen, proxy.upstream, bool(proxy.enabled))
        if not info.listen or info.listen.endswith(":0"):
            raise ProxyError(f"create proxy {name!r}: the fault proxy did not report the port it listens on")
        return info

    def delete_proxy(self, name: str) -> None:
        self._http("DELETE", f"/proxies/{name}", f"delete proxy {name!r}", expect=204)

    def proxies(self) -> dict[str, Any]:
        body = self._http("GET", "/proxies", "list proxies")
        return dict(body or {})

    def set_enabled(self, name: str, enabled: bool) -> None:
        proxy = self._proxy(name)
        what = f"{'enable' if enabled else 'disable'} proxy {name!r}"
        self._call(what, proxy.enable if enabled else proxy.disable)
        if bool(self._proxy(name).enabled) != enabled:  # toxiproxy-python ignores the answer
            raise ProxyError(f"{what}: the fault proxy did not apply the change")

    def set_protocol(self, proxy: str, protocol: str) -> None:
        """How the builtin server follows the proxy's connections: ``tcp`` (bytes, as Toxiproxy does) or
        ``http`` (HTTP/1.1 messages, for HTTP toxics); open connections are closed. Builtin server only."""
        body = self._http("POST", f"/proxies/{proxy}", f"set the protocol of proxy {proxy!r}",
                          json={"protocol": protocol})
        if not isinstance(body, dict) or body.get("protocol", "tcp") != protocol:
            raise ProxyError(f"set the protocol of proxy {proxy!r}: the fault proxy did not apply it",
                             hint="only the builtin proxy (aichaos proxy serve) follows HTTP")

    def protocol(self, proxy: str) -> str:
        body = self._http("GET", f"/proxies/{proxy}", f"look up proxy {proxy!r}")
        return str(body.get("protocol", "tcp")) if isinstance(body, dict) else "tcp"

    def add_toxic(self, proxy: str, kind: str, attributes: dict[str, Any], *, stream: str = "downstream",
                  toxicity: float = 1.0, name: str | None = None) -> str:
        name = name or f"{kind}_{stream}"
        target = self._proxy(proxy)
        self._call(f"add {kind} toxic to {proxy!r}", target.add_toxic, type=kind, stream=stream,
                   toxicity=toxicity, attributes=attributes, name=name)
        if self._call("check the toxic", target.get_toxic, name) is None:  # add_toxic returns nothing
            raise ProxyError(f"add {kind} toxic to {proxy!r}: the fault proxy did not keep it "
                             f"(attributes {attributes})")
        return name

    def update_toxic(self, proxy: str, name: str, attributes: dict[str, Any], toxicity: float | None = None) -> None:
        body: dict[str, Any] = {"attributes": attributes}
        if toxicity is not None:
            body["toxicity"] = toxicity
        self._http("POST", f"/proxies/{proxy}/toxics/{name}", f"update toxic {name!r} of {proxy!r}", json=body)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._http("DELETE", f"/proxies/{proxy}/toxics/{name}", f"remove toxic {name!r} from {proxy!r}", expect=204)

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return list(self._http("GET", f"/proxies/{proxy}/toxics", f"list toxics of {proxy!r}") or [])

    def stats(self, proxy: str) -> dict[str, int] | None:
        """Connections and bytes each way through ``proxy`` so far (``connections``, ``bytes_upstream``,
        ``bytes_downstream``), from the builtin server's extension of the API; None from a server
        without it (a real Toxiproxy answers 404)."""
        what = f"read the traffic of {proxy!r}"
        try:
            response = requests.get(f"{self.url}/proxies/{proxy}/stats", timeout=self.timeout)
        except requests.RequestException as exc:
            raise ProxyError(f"{what}: cannot reach the fault proxy at {self.url}: {exc}") from exc
        if response.status_code == 404 and "proxy not found" not in response.text:
            return None
        if response.status_code != 200:
            raise ProxyError(f"{what}: the fault proxy answered {response.status_code}: {response.text.strip()[:300]}")
        body = response.json()
        return {k: int(body.get(k, 0)) for k in ("connections", "bytes_upstream", "bytes_downstream")}


def _body_text(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else b""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return text.strip()[:300]
