"""Standing a stack up, for a run and for a game day alike: the runtime's network, then the fault
proxy, then the services in dependency order with a proxy on every edge. Each part is registered in
the ``RunSession`` the moment it exists (so teardown, in reverse, finds it whatever happens next)
and in the run's state file (so ``aichaos cleanup`` does after a ``kill -9``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aichaos.errors import AichaosError
from aichaos.experiment.stack import Stack
from aichaos.proxy.backend import ProxyBackend
from aichaos.runtime.base import Runtime, StackHandle, bring_up
from aichaos.runtime.registry import RuntimeKind, RuntimeSetup
from aichaos.runtime.state import RunState
from aichaos.session import RunSession

Reporter = Callable[[str], None]


@dataclass
class ProxyUp:
    runtime: Runtime
    backend: ProxyBackend
    environment: dict[str, Any] = field(default_factory=dict)  # facts for the journal


def start_fault_proxy(session: RunSession, kind: RuntimeKind, setup: RuntimeSetup, state: RunState,
                      report: Reporter) -> ProxyUp:
    """Open the runtime, make its network and start the fault proxy."""
    runtime = kind.open(setup)
    session.runtime = runtime
    # the network is made first and removed last: the proxy and the services are on it
    session.started("network", lambda hurry: runtime.close_network(), of_stack=True)
    environment = dict(runtime.prepare(report))
    backend = runtime.start_fault_proxy(setup.toxiproxy_url)
    session.backend = backend
    session.started("fault proxy", lambda hurry: backend.close(), of_stack=True)
    environment["proxy"] = {"kind": backend.kind, "url": backend.url, "version": backend.version}
    state.proxy_url, state.proxy_pid = backend.url, backend.pid
    state.save()
    report(f"fault proxy: {backend.kind} at {backend.url} (version {backend.version})")
    if backend.kind == "builtin-container":
        report("the ghcr.io/shopify/toxiproxy image is not here and could not be pulled: the builtin "
               "Toxiproxy-compatible server serves in a container instead")
    return ProxyUp(runtime, backend, environment)


def record_services(state: RunState, handle: StackHandle) -> Callable[[], None]:
    """A callback that writes the stack's pids and proxies to the state file (a restarted service too)."""

    def record() -> None:
        state.services = {n: s.pid for n, s in handle.services.items() if s.pid}
        state.proxies = [p.name for p in handle.proxies.values()]
        state.save()

    return record


def start_services(session: RunSession, up: ProxyUp, stack: Stack, state: RunState,
                   handle: StackHandle | None = None) -> StackHandle:
    """Start every service with a proxy on each edge (filling ``handle`` as they start, for whoever
    reads it meanwhile); teardown deletes those proxies, then the services."""
    runtime, client = up.runtime, up.backend.client
    handle = handle if handle is not None else StackHandle()
    session.handle = handle

    def stop_stack(hurry: bool) -> list[str]:
        leftovers: list[str] = []
        for edge, info in handle.proxies.items():
            try:
                client.delete_proxy(info.name)
            except AichaosError as exc:
                leftovers.append(f"proxy {info.name} for {edge} ({exc.message})")
        return leftovers + runtime.teardown(hurry=hurry)

    session.started("stack", stop_stack, of_stack=True)
    record = record_services(state, handle)
    bring_up(stack, runtime, client, handle, on_started=record)
    record()
    return handle
