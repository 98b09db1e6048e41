"""The external runtime: attach to a system that is already running (a staging stack), start nothing
of it.

Each service of the stack is where its ``address`` says (``host:port``, or one per named port).
aichaos starts only the fault proxy (its builtin server, which counts the traffic of each proxy), puts
a listener on each declared edge (on the edge's ``listen`` port when given, so that the dependent can
be configured before the run, else a free one) and prints the address to route the edge through: the
dependent must call its dependency there. After the baseline the run refuses to inject anything when
an edge has seen no connection (``RuntimeKind.check_attached``), rather than report a fault that did
nothing. Readiness is probed at each address; nothing is stopped at the end.

Container faults (kill, stop, pause, ...) act on a service's ``container`` (a Docker container by
name, on the engine ``DOCKER_HOST`` names) and only with ``--allow-external``: aichaos never touches
what it did not start unless told.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aichaos.errors import EnvironmentFailure, FaultInjectionError, UsageError
from aichaos.experiment.stack import Service, Stack
from aichaos.ports import free_port
from aichaos.proxy.backend import ProxyBackend, start_proxy_backend
from aichaos.proxy.client import ToxiproxyClient
from aichaos.runtime.base import RunningService, StackHandle
from aichaos.runtime.readiness import wait_ready
from aichaos.runtime.registry import RuntimeKind, RuntimeSetup

log = logging.getLogger(__name__)

ATTACHED = "attached"  # a runtime capability: the stack runs on its own; aichaos only proxies and measures


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class ExternalKind(RuntimeKind):
    """Services already running at the stack's addresses: only the fault proxy is started."""

    name = "external"
    summary = "a running system (attached)"
    capabilities = frozenset({ATTACHED})

    def unsuitable(self, stack: Stack) -> str | None:
        missing = [n for n, s in stack.services.items() if s.address is None]
        return f"{', '.join(missing)} has no address" if missing else None

    def check(self, setup: RuntimeSetup) -> None:
        why = self.unsuitable(setup.stack)
        if why is not None:
            raise UsageError(f"runtime external attaches to services at their address, and {why}",
                             hint="give each service address: host:port (or {port name: host:port})")

    def open(self, setup: RuntimeSetup) -> ExternalRuntime:
        return ExternalRuntime(setup.run_dir, setup.stack)


def check_attached(client: ToxiproxyClient, handle: StackHandle) -> list[str]:
    """The edges that carried no connection so far (through their proxy), as lines saying where the
    dependent should send its calls. Raises EnvironmentFailure when the proxy cannot count."""
    quiet: list[str] = []
    for edge, info in handle.proxies.items():
        stats = client.stats(info.name)
        if stats is None:
            raise EnvironmentFailure("this fault proxy cannot count the traffic of an edge, so an attached run "
                                     "cannot tell that its faults would reach the system",
                                     hint="leave out toxiproxy_url: the builtin proxy counts it")
        if stats["connections"] == 0:
            quiet.append(f"{edge} (route it through {handle.addresses.get(edge)}, which forwards to {info.upstream})")
    return quiet


class ExternalRuntime:
    name = "external"

    def __init__(self, run_dir: Path, stack: Stack) -> None:
        self.run_dir = run_dir
        self.stack = stack
        self.logs: dict[str, Path] = {}
        self.report: Callable[[str], None] = log.info
        self.started: dict[str, RunningService] = {}

    @property
    def proxy_host(self) -> str:
        if self.stack.proxy_host:
            return self.stack.proxy_host
        listen = self.stack.proxy_listen
        return socket.gethostname() if listen in ("0.0.0.0", "::") else listen

    def prepare(self, report: Callable[[str], None]) -> dict[str, Any]:
        self.report = report
        report("runtime external: the services are already running; only the fault proxy is started")
        return {"attached": {n: s.addresses() for n, s in self.stack.services.items()}}

    def start_fault_proxy(self, url: str | None) -> ProxyBackend:
        # the builtin server even when toxiproxy-server is on PATH: it counts each edge's traffic
        return start_proxy_backend(self.run_dir, url, kind=None if url else "builtin")

    def stack_facts(self) -> tuple[dict[str, Any], str]:
        return {}, " (attached: nothing was started)"

    def proxy_listen_address(self) -> str:
        return f"{self.stack.proxy_listen}:{free_port()}"

    def peer_address(self, name: str, port: int) -> str:
        addresses = self.stack.services[name].addresses()
        for address in addresses.values():
            if split(address)[1] == port:
                return address
        return next(iter(addresses.values()))

    def exit_reason(self, name: str) -> str | None:
        return None  # not ours to watch: a service that stops answering shows in the load's errors

    def start_service(self, name: str, service: Service, port: int, env: dict[str, str],
                      ports: dict[str, int] | None = None) -> RunningService:
        """Nothing starts: the service is where its address says. Prints where its edges must go."""
        addresses = service.addresses()
        host, main = split(next(iter(addresses.values())))
        for variable, value in env.items():
            self.report(f"{name}: send its calls through the fault proxy: {variable}={value}")
        running = RunningService(name=name, host=host, port=main,
                                 ports={n: split(a)[1] for n, a in addresses.items()})
        self.started[name] = running
        return running

    def wait_ready(self, running: RunningService, service: Service) -> None:
        host = service.addresses().get(service.ready.port or "", f"{running.host}:{running.port}")
        probe_host, probe_port = split(host)
        running.ready_after_s = wait_ready(running.name, probe_host, probe_port, service.ready,
                                           alive=lambda: None, logs=lambda: "")

    def is_alive(self, name: str) -> bool:
        return True

    # ------------------------------------------------------------ container faults (--allow-external)
    def container_of(self, name: str) -> Any:
        container = self.stack.services[name].container
        if container is None:
            return None
        from aichaos.faults.container import external_container

        return external_container(container)

    def _container(self, name: str) -> Any:
        container = self.container_of(name)
        if container is None:
            raise FaultInjectionError(f"service {name!r} is attached at its address and names no container",
                                      hint=f"give services.{name}.container (its docker container's name)")
        return container

    def _call(self, name: str, action: str, **kwargs: Any) -> Any:
        from docker.errors import APIError

        try:
            return getattr(self._container(name), action)(**kwargs)
        except APIError as exc:
            raise EnvironmentFailure(f"docker {action} of {name!r} failed: {exc.explanation or exc}") from exc

    def kill_service(self, name: str) -> None:
        self._call(name, "kill")

    def signal_service(self, name: str, signal_name: str) -> None:
        self._call(name, "kill", signal=signal_name)

    def stop_service(self, name: str) -> None:
        self._call(name, "stop", timeout=5)

    def restart_service(self, name: str) -> RunningService:
        self._call(name, "restart", timeout=5)
        return self.started[name]

    def pause_service(self, name: str) -> None:
        self._call(name, "pause")

    def resume_service(self, name: str) -> None:
        container = self._container(name)
        container.reload()
        if container.status == "paused":
            self._call(name, "unpause")

    def teardown(self, hurry: bool = False) -> list[str]:
        return []  # nothing of the stack was started here

    def close_network(self) -> list[str]:
        return []


def refuse_unattended(kind_capabilities: frozenset[str], allow_external: bool, what: str) -> None:
    """Container and process faults on an attached stack act only with --allow-external."""
    if ATTACHED in kind_capabilities and not allow_external:
        raise UsageError(f"{what} acts on a service of an attached stack, which this run did not start: aichaos "
                         "touches it only with --allow-external")

