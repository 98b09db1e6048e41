"""Container faults: kill, stop, restart, pause, and CPU or memory squeezed through ``docker update``.

Each is reverted at the end of its phase: a killed or stopped service is started again and waited
for, a paused one unpaused, a squeezed one given back the limits it had. Under the local runtime
kill, stop, restart and pause act on the service's process group (SIGKILL, SIGTERM, a restart,
SIGSTOP); cpu and memory need the docker runtime.

A fault names a stack service; a container the run did not start is touched only when the
experiment names it (``container:``) and ``--allow-external`` is given.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from aichaos.errors import AichaosError, FaultInjectionError, FaultRevertError
from aichaos.experiment.model import (
    ContainerCpuFault,
    ContainerKillFault,
    ContainerMemoryFault,
    ContainerPauseFault,
    ContainerRestartFault,
    ContainerStopFault,
)
from aichaos.experiment.stack import Stack
from aichaos.faults.base import AppliedFault
from aichaos.runtime.base import Runtime, StackHandle

ContainerFault = (ContainerKillFault | ContainerStopFault | ContainerRestartFault | ContainerPauseFault
                  | ContainerCpuFault | ContainerMemoryFault)
CPU_PERIOD = 100_000  # microseconds, docker's default CFS period


def _spec(fault: Any) -> dict[str, Any]:
    return dict(fault.model_dump(mode="json", by_alias=True))


def _docker_call(container: Any, action: str, **kwargs: Any) -> Any:
    from docker.errors import APIError

    try:
        return getattr(container, action)(**kwargs)
    except APIError as exc:
        raise FaultInjectionError(f"docker {action} of {container.name} failed: {exc.explanation or exc}") from exc


def external_container(name: str) -> Any:
    from docker.errors import NotFound

    from aichaos.runtime.docker import engine

    try:
        return engine().containers.get(name)
    except NotFound as exc:
        raise FaultInjectionError(f"no container named {name!r}") from exc


def apply_container_fault(fault: ContainerFault, phase: str, runtime: Runtime, handle: StackHandle, stack: Stack,
                          expected_down: set[str], on_restarted: Callable[[], None]) -> AppliedFault:
    """Inject a container fault on a stack service (or, with ``container:``, an external container)."""
    if fault.container is not None:
        return _external(fault, phase)
    name = fault.service
    assert name is not None  # the model asks for exactly one of service and container
    service = stack.services[name]
    spec = _spec(fault)

    def back_up() -> None:
        """Start the service again if it is down, and wait until it is ready."""
        try:
            if not runtime.is_alive(name):
                handle.services[name] = runtime.restart_service(name)
                on_restarted()
            runtime.wait_ready(handle.services[name], service)
        except AichaosError as exc:
            raise FaultRevertError(f"{name} did not come back: {exc.message}") from exc
        finally:
            expected_down.discard(name)

    if isinstance(fault, ContainerKillFault | ContainerStopFault):
        expected_down.add(name)
        try:
            if isinstance(fault, ContainerKillFault):
                runtime.signal_service(name, fault.signal)
                what = f"{name} killed ({fault.signal})"
            else:
                runtime.stop_service(name)
                what = f"{name} stopped"
        except (AichaosError, OSError) as exc:
            expected_down.discard(name)
            raise FaultInjectionError(f"could not {fault.type} {name}: {exc}") from exc
        return AppliedFault(phase, fault.type, name, what, spec, time.time(), revert_action=back_up)
    if isinstance(fault, ContainerRestartFault):
        expected_down.add(name)
        try:
            handle.services[name] = runtime.restart_service(name)
            on_restarted()
        except (AichaosError, OSError) as exc:
            expected_down.discard(name)
            raise FaultInjectionError(f"could not restart {name}: {exc}") from exc
        return AppliedFault(phase, fault.type, name, f"{name} restarted", spec, time.time(), revert_action=back_up)
    if isinstance(fault, ContainerPauseFault):
        try:
            runtime.pause_service(name)
        except (AichaosError, OSError) as exc:
            raise FaultInjectionError(f"could not pause {name}: {exc}") from exc
        return AppliedFault(phase, fault.type, name, f"{name} paused", spec, time.time(),
                            revert_action=lambda: runtime.resume_service(name),
                            undo_record=pause_undo(runtime, handle, name))
    container = runtime.container_of(name)
    if container is None:
        raise FaultInjectionError(f"{fault.type} squeezes a container: it needs the docker runtime")
    return _squeeze(fault, phase, container, name)


def pause_undo(runtime: Runtime, handle: StackHandle, name: str) -> dict[str, Any]:
    """What `aichaos cleanup` needs to unfreeze a paused service: its container, or its process group."""
    container: Any = runtime.container_of(name)
    if container is not None:
        return {"container": container.id, "unpause": True}
    return {"resume_pid": handle.services[name].pid}


def _limits(container: Any) -> dict[str, int]:
    container.reload()
    host = container.attrs.get("HostConfig", {})
    return {"cpu_quota": int(host.get("CpuQuota") or 0), "cpu_period": int(host.get("CpuPeriod") or 0),
            "mem_limit": int(host.get("Memory") or 0), "memswap_limit": int(host.get("MemorySwap") or 0)}


def _squeeze(fault: ContainerCpuFault | ContainerMemoryFault, phase: str, container: Any, name: str) -> AppliedFault:
    before = _limits(container)
    if isinstance(fault, ContainerCpuFault):
        change = {"cpu_period": CPU_PERIOD, "cpu_quota": max(1000, int(fault.cpus * CPU_PERIOD))}
        restore = {"cpu_period": before["cpu_period"] or CPU_PERIOD, "cpu_quota": before["cpu_quota"] or -1}
        what = f"{name} limited to {fault.cpus:g} CPU"
    else:
        limit = fault.mb * 2**20
        change = {"mem_limit": limit, "memswap_limit": limit}
        # docker cannot remove a memory limit once set: no limit before becomes the machine's whole
        # memory (no real limit), with swap above it (memory and swap limits are raised together,
        # or the kernel refuses a memory limit above the swap one)
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        restore = {"mem_limit": before["mem_limit"] or ram,
                   "memswap_limit": before["memswap_limit"] if before["mem_limit"] else 2 * ram}
        what = f"{name} limited to {fault.mb} MiB of memory"
    _docker_call(container, "update", **change)

    def revert() -> None:
        try:
            _docker_call(container, "update", **restore)
        except FaultInjectionError as exc:
            raise FaultRevertError(exc.message) from exc

    return AppliedFault(phase, fault.type, name, what, _spec(fault), time.time(), revert_action=revert,
                        undo_record={"container": container.id, "update": restore})


def _external(fault: ContainerFault, phase: str) -> AppliedFault:
    """A fault on a container this run did not start (``--allow-external`` was checked by the run)."""
    assert fault.container is not None
    container = external_container(fault.container)
    spec = _spec(fault)
    label = f"container {fault.container}"
    if isinstance(fault, ContainerCpuFault | ContainerMemoryFault):
        applied = _squeeze(fault, phase, container, label)
        return applied
    if isinstance(fault, ContainerPauseFault):
        _docker_call(container, "pause")
        return AppliedFault(phase, fault.type, label, f"{label} paused", spec, time.time(),
                            revert_action=lambda: _docker_call(container, "unpause"),
                            undo_record={"container": container.id, "unpause": True})
    if isinstance(fault, ContainerKillFault):
        _docker_call(container, "kill", signal=fault.signal)
        what = f"{label} killed ({fault.signal})"
    elif isinstance(fault, ContainerStopFault):
        _docker_call(container, "stop", timeout=5)
        what = f"{label} stopped"
    else:
        _docker_call(container, "restart", timeout=5)
        what = f"{label} restarted"
    return AppliedFault(phase, fault.type, label, what, spec, time.time(),
                        revert_action=lambda: _docker_call(container, "start"),
                        undo_record={"container": container.id, "start": True})
