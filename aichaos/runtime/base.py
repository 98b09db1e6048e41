"""The runtime interface and the stack bring-up that every runtime shares."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aichaos.experiment.stack import Edge, Service, Stack
from aichaos.ports import free_port
from aichaos.proxy.backend import ProxyBackend
from aichaos.proxy.client import ProxyInfo, ToxiproxyClient

log = logging.getLogger(__name__)


@dataclass
class RunningService:
    name: str
    host: str
    port: int  # the first named port, as the load, readiness and scraping reach it
    pid: int | None = None
    log_path: Path | None = None
    ready_after_s: float = 0.0
    container: str | None = None  # the container's id under the docker runtime
    ports: dict[str, int] = field(default_factory=dict)  # every named port as reached from here (default: port)
    gpus: list[str] | None = None  # the GPUs the engine gave the container (docker), as device ids or "all"

    def port_of(self, name: str | None) -> int:
        """The named port as reached from here; the first one for None."""
        return self.ports.get(name, self.port) if name is not None else self.port


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

    def start_service(self, name: str, service: Service, port: int, env: dict[str, str],
                      ports: dict[str, int] | None = None) -> RunningService:
        """Start ``name`` listening on ``port`` (its first named port) and ``ports`` (every named port, as
        the service listens on them; None: just ``port``), with ``env`` (the proxied addresses of its
        dependencies) on top of its own environment."""
        ...

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


_NAMED_PORT = re.compile(r"\{port\.([a-z0-9][a-z0-9_-]*)\}")


def substitute(value: str, port: int, host: str = "127.0.0.1", ports: dict[str, int] | None = None) -> str:
    """A command argument or environment value with ``{port}`` (the service's first port),
    ``{port.NAME}`` (its port NAME) and ``{host}`` (the address it should listen on: 127.0.0.1, or
    0.0.0.0 on a run's own docker network) filled in."""
    named = ports or {}
    value = _NAMED_PORT.sub(lambda m: str(named[m.group(1)]) if m.group(1) in named else m.group(0), value)
    return value.replace("{port}", str(port)).replace("{host}", host)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as Compose reads an env file: blank lines and # comments skipped, ``export``
    allowed, one pair of matching quotes around a value removed. Raises StackStartError."""
    from aichaos.errors import StackStartError

    try:
        text = path.read_text()
    except OSError as exc:
        raise StackStartError(f"cannot read the env file {path}: {exc.strerror or exc}",
                              hint="env_file paths are relative to the stack file") from exc
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue  # a bare name passes the caller's own value in Compose: nothing to set here
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def service_environment(service: Service, port: int, env: dict[str, str], host: str = "127.0.0.1",
                        ports: dict[str, int] | None = None, stack_dir: Path | None = None) -> dict[str, str]:
    """What aichaos sets in a service's environment: ``PORT`` and ``PORT_<NAME>`` for each named port,
    its env files, the stack file's ``env`` (with ``{port}``, ``{port.NAME}`` and ``{host}`` filled
    in), then ``env``, the proxied addresses of its dependencies."""
    named = ports or {}
    from_files: dict[str, str] = {}
    for name in service.env_file:
        from_files.update(read_env_file((stack_dir or Path.cwd()) / name))
    return {"PYTHONUNBUFFERED": "1", "PORT": str(port),
            **{f"PORT_{k.upper().replace('-', '_')}": str(v) for k, v in named.items()},
            **{k: substitute(v, port, host, named) for k, v in from_files.items()},
            **{k: substitute(v, port, host, named) for k, v in service.env.items()}, **env}


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
    ports = allocate_ports(stack)
    for name in stack.start_order():
        service = stack.services[name]
        env: dict[str, str] = {}
        for dep, edge in service.depends_on.items():
            key = f"{name}->{dep}"
            dep_port = ports[dep][edge.port or stack.services[dep].port_names[0]]
            listen = runtime.proxy_listen_address()
            if edge.listen is not None:  # a fixed port, that a running dependent can be pointed at beforehand
                listen = f"{listen.rsplit(':', 1)[0]}:{edge.listen}"
            info = proxy.create_proxy(proxy_name(key), upstream=runtime.peer_address(dep, dep_port), listen=listen)
            handle.proxies[key] = info
            address = f"{runtime.proxy_host}:{info.port}"
            handle.addresses[key] = address
            env[edge.env] = edge_value(service, edge, address)
        main = service.port_names[0]
        running = runtime.start_service(name, service, ports[name][main], env, ports[name])
        handle.services[name] = running
        if on_started is not None:
            on_started()
        runtime.wait_ready(running, service)
        log.info("service %s ready on port %d after %.1fs", name, running.port, running.ready_after_s)
    return handle


def allocate_ports(stack: Stack) -> dict[str, dict[str, int]]:
    """Each service's named ports as it listens on them: the fixed ones as given, the others free
    ports of this machine."""
    out: dict[str, dict[str, int]] = {}
    for name, service in stack.services.items():
        if service.address is not None:  # runtime external: the ports of its addresses
            out[name] = {port: int(address.rsplit(":", 1)[1]) for port, address in service.addresses().items()}
            continue
        out[name] = {port: number if number is not None else free_port()
                     for port, number in (service.ports or {n: None for n in service.port_names}).items()}
    return out


def edge_value(service: Service, edge: Edge, address: str) -> str:
    """The value of the edge's variable in the dependent: the proxied address (as a URL of the edge's
    scheme), or with ``replace`` the service's own value with the dependency's host:port rewritten."""
    if edge.replace is not None:
        return service.env[edge.env].replace(edge.replace, address)
    return address if edge.scheme == "tcp" else f"{edge.scheme}://{address}"
