"""The runtime interface and the stack bring-up that every runtime shares."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aichaos.experiment.stack import Service, Stack
from aichaos.ports import free_port
from aichaos.proxy.backend import ProxyBackend
from aichaos.proxy.client import ProxyInfo, ToxiproxyClient

log = logging.getLogger(__name__)


@dataclass
class RunningService:
    name: str
    host: str
    port: int
    pid: int | None = None
    log_path: Path | None = None
    ready_after_s: float = 0.0
    container: str | None = None  # the container's id under the docker runtime


class Runtime(Protocol):
    """What a run needs of a runtime. Kinds of runtime are registered in ``aichaos.runtime.registry``."""

    name: str
    logs: dict[str, Path]

    @property
    def proxy_host(self) -> str:
        """The fault proxy's host as the services see it."""
        ...

    def prepare(self, report: Callable[[str], None]) -> dict[str, Any]:
        """Make what the run needs before the fault proxy and the services (a network); returns facts
        for the journal's environment."""
        ...

    def start_fault_proxy(self, url: str | None) -> ProxyBackend:
        """The run's fault proxy: the server at ``url``, or one this runtime starts and stops."""
        ...

    def stack_facts(self) -> tuple[dict[str, Any], str]:
        """Once the stack is up: facts for the journal's environment, and a note for the ready line."""
        ...

    def proxy_listen_address(self) -> str:
        """host:port for a new listener of the fault proxy."""
        ...

    def peer_address(self, name: str, port: int) -> str:
        """host:port at which the fault proxy reaches service ``name``."""
        ...

    def exit_reason(self, name: str) -> str | None: ...

    def start_service(self, name: str, service: Service, port: int, env: dict[str, str]) -> RunningService: ...

    def wait_ready(self, running: RunningService, service: Service) -> None: ...

    def is_alive(self, name: str) -> bool: ...

    def kill_service(self, name: str) -> None: ...

    def restart_service(self, name: str) -> RunningService: ...

    def pause_service(self, name: str) -> None: ...

    def signal_service(self, name: str, signal_name: str) -> None: ...

    def stop_service(self, name: str) -> None: ...

    def container_of(self, name: str) -> object | None:
        """The service's docker container object, or None under a runtime without containers."""
        ...

    def resume_service(self, name: str) -> None: ...

    def teardown(self, hurry: bool = False) -> list[str]:
        """Stop everything started; returns what could not be stopped (empty when all went well)."""
        ...

    def close_network(self) -> list[str]:
        """Remove the network made for the run, once nothing is on it; returns what could not be removed."""
        ...


def substitute(value: str, port: int, host: str = "127.0.0.1") -> str:
    """A command argument or environment value with ``{port}`` (the service's port) and ``{host}``
    (the address it should listen on: 127.0.0.1, or 0.0.0.0 on a run's own docker network) filled in."""
    return value.replace("{port}", str(port)).replace("{host}", host)


def service_environment(service: Service, port: int, env: dict[str, str], host: str = "127.0.0.1") -> dict[str, str]:
    """What aichaos sets in a service's environment: ``PORT``, the stack file's ``env`` (with ``{port}``
    and ``{host}`` filled in), then ``env``, the proxied addresses of its dependencies."""
    return {"PYTHONUNBUFFERED": "1", "PORT": str(port),
            **{k: substitute(v, port, host) for k, v in service.env.items()}, **env}


def proxy_name(edge: str) -> str:
    """Toxiproxy names allow no '>': gateway->model-server becomes gateway__model-server."""
    return edge.replace("->", "__")


@dataclass
class StackHandle:
    services: dict[str, RunningService] = field(default_factory=dict)
    proxies: dict[str, ProxyInfo] = field(default_factory=dict)  # edge -> proxy
    addresses: dict[str, str] = field(default_factory=dict)  # edge -> the proxy's address as the dependent has it


def bring_up(stack: Stack, runtime: Runtime, proxy: ToxiproxyClient, handle: StackHandle,
             on_started: Callable[[], None] | None = None) -> StackHandle:
    """Allocate ports, put a proxy on every edge, start services in dependency order, wait for each.

    ``handle`` is filled as things start, so the caller can tear down whatever got started even
    when this raises half-way.
    """
    ports = {name: free_port() for name in stack.services}
    for name in stack.start_order():
        service = stack.services[name]
        env: dict[str, str] = {}
        for dep, edge in service.depends_on.items():
            key = f"{name}->{dep}"
            info = proxy.create_proxy(proxy_name(key), upstream=runtime.peer_address(dep, ports[dep]),
                                      listen=runtime.proxy_listen_address())
            handle.proxies[key] = info
            address = f"{runtime.proxy_host}:{info.port}"
            handle.addresses[key] = address
            env[edge.env] = address if edge.scheme == "tcp" else f"{edge.scheme}://{address}"
        running = runtime.start_service(name, service, ports[name], env)
        handle.services[name] = running
        if on_started is not None:
            on_started()
        runtime.wait_ready(running, service)
        log.info("service %s ready on port %d after %.1fs", name, running.port, running.ready_after_s)
    return handle
