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
import signal
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from aichaos import clock
from aichaos.errors import AichaosError, FaultInjectionError, FaultRevertError, UsageError
from aichaos.experiment.model import (
    ContainerCpuFault,
    ContainerKillFault,
    ContainerMemoryFault,
    ContainerPauseFault,
    ContainerRestartFault,
    ContainerStopFault,
)
from aichaos.faults.base import AppliedFault
from aichaos.faults.registry import (
    FaultContext,
    FaultKind,
    RunCheck,
    UndoContext,
    register_fault,
    register_undo,
    undo_record,
)
from aichaos.runtime.base import Runtime, StackHandle

CONTAINER_LIMITS = "container_limits"  # a runtime capability: docker update on the service's container
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


class ContainerKind(FaultKind):
    """A fault on a stack service's container or process group, or on an external container."""

    target = "container"

    def check_run(self, fault: Any, run: RunCheck) -> None:
        if fault.container is None:
            from aichaos.runtime.external import refuse_unattended

            refuse_unattended(run.capabilities, run.allow_external, f"a {fault.type} fault")
            return
        if not run.allow_external:
            raise UsageError(f"names container {fault.container!r}, which this run does not start: aichaos touches "
                             "it only with --allow-external")
        from aichaos.runtime.docker import engine

        engine()  # an external container needs a Docker engine, whatever runtime the stack has

    def apply(self, fault: Any, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        if fault.container is not None:
            label = f"container {fault.container}"
            return self.apply_external(fault, phase, external_container(fault.container), label)
        return self.apply_service(fault, phase, fault.service, ctx)

    @abstractmethod
    def apply_service(self, fault: Any, phase: str, name: str, ctx: FaultContext) -> AppliedFault: ...

    @abstractmethod
    def apply_external(self, fault: Any, phase: str, container: Any, label: str) -> AppliedFault: ...


def back_up(name: str, ctx: FaultContext) -> Callable[[], None]:
    """A revert that starts the service again if it is down, and waits until it is ready."""
    runtime, service = ctx.runtime, ctx.stack.services[name]

    def revert() -> None:
        try:
            if not runtime.is_alive(name):
                ctx.handle.services[name] = runtime.restart_service(name)
                ctx.save_state()
            runtime.wait_ready(ctx.handle.services[name], service)
        except AichaosError as exc:
            raise FaultRevertError(f"{name} did not come back: {exc.message}") from exc
        finally:
            ctx.expected_down.discard(name)

    return revert


def _taken_down(fault: Any, phase: str, name: str, ctx: FaultContext, act: Callable[[], str]) -> AppliedFault:
    """The service goes down (``act`` says how) and is started again on revert."""
    ctx.expected_down.add(name)
    try:
        what = act()
    except (AichaosError, OSError) as exc:
        ctx.expected_down.discard(name)
        raise FaultInjectionError(f"could not {fault.type} {name}: {exc}") from exc
    return AppliedFault(phase, fault.type, name, what, _spec(fault), clock.now(), revert_action=back_up(name, ctx))


def _external_down(fault: Any, phase: str, container: Any, label: str, what: str) -> AppliedFault:
    return AppliedFault(phase, fault.type, label, what, _spec(fault), clock.now(),
                        revert_action=lambda: _docker_call(container, "start"),
                        undo_record=undo_record("container_start", container=container.id))


@register_fault
class Kill(ContainerKind):
    model = ContainerKillFault

    def apply_service(self, fault: ContainerKillFault, phase: str, name: str, ctx: FaultContext) -> AppliedFault:
        def act() -> str:
            ctx.runtime.signal_service(name, fault.signal)
            return f"{name} killed ({fault.signal})"

        return _taken_down(fault, phase, name, ctx, act)

    def apply_external(self, fault: ContainerKillFault, phase: str, container: Any, label: str) -> AppliedFault:
        _docker_call(container, "kill", signal=fault.signal)
        return _external_down(fault, phase, container, label, f"{label} killed ({fault.signal})")


@register_fault
class Stop(ContainerKind):
    model = ContainerStopFault

    def apply_service(self, fault: ContainerStopFault, phase: str, name: str, ctx: FaultContext) -> AppliedFault:
        def act() -> str:
            ctx.runtime.stop_service(name)
            return f"{name} stopped"

        return _taken_down(fault, phase, name, ctx, act)

    def apply_external(self, fault: ContainerStopFault, phase: str, container: Any, label: str) -> AppliedFault:
        _docker_call(container, "stop", timeout=5)
        return _external_down(fault, phase, container, label, f"{label} stopped")


@register_fault
class Restart(ContainerKind):
    model = ContainerRestartFault

    def apply_service(self, fault: ContainerRestartFault, phase: str, name: str, ctx: FaultContext) -> AppliedFault:
        def act() -> str:
            ctx.handle.services[name] = ctx.runtime.restart_service(name)
            ctx.save_state()
            return f"{name} restarted"

        return _taken_down(fault, phase, name, ctx, act)

    def apply_external(self, fault: ContainerRestartFault, phase: str, container: Any, label: str) -> AppliedFault:
        _docker_call(container, "restart", timeout=5)
        return _external_down(fault, phase, container, label, f"{label} restarted")


def pause_service(fault: Any, phase: str, name: str, ctx: FaultContext, what: str) -> AppliedFault:
    """Freeze a stack service until the revert (shared with pipeline_stall)."""
    try:
        ctx.runtime.pause_service(name)
    except (AichaosError, OSError, KeyError) as exc:
        raise FaultInjectionError(f"could not pause {name}: {exc}") from exc
    return AppliedFault(phase, fault.type, name, what, _spec(fault), clock.now(),
                        revert_action=lambda: ctx.runtime.resume_service(name),
                        undo_record=pause_undo(ctx.runtime, ctx.handle, name))


@register_fault
class Pause(ContainerKind):
    model = ContainerPauseFault

    def apply_service(self, fault: ContainerPauseFault, phase: str, name: str, ctx: FaultContext) -> AppliedFault:
        return pause_service(fault, phase, name, ctx, f"{name} paused")

    def apply_external(self, fault: ContainerPauseFault, phase: str, container: Any, label: str) -> AppliedFault:
        _docker_call(container, "pause")
        return AppliedFault(phase, fault.type, label, f"{label} paused", _spec(fault), clock.now(),
                            revert_action=lambda: _docker_call(container, "unpause"),
                            undo_record=undo_record("container_unpause", container=container.id))


def pause_undo(runtime: Runtime, handle: StackHandle, name: str) -> dict[str, Any]:
    """What `aichaos cleanup` needs to unfreeze a paused service: its container, or its process group."""
    container: Any = runtime.container_of(name)
    if container is not None:
        return undo_record("container_unpause", container=container.id)
    return undo_record("process_resume", pid=handle.services[name].pid)


class SqueezeKind(ContainerKind):
    """A limit set with ``docker update`` and restored to what it was."""

    def check_run(self, fault: Any, run: RunCheck) -> None:
        if CONTAINER_LIMITS not in run.capabilities:
            raise UsageError(f"squeezes a container and needs runtime: docker (this run uses {run.runtime})")
        super().check_run(fault, run)

    @abstractmethod
    def squeeze(self, fault: Any, before: dict[str, int], name: str) -> tuple[dict[str, int], dict[str, int], str]:
        """The limits to set, the limits to restore, and how to say it."""

    def apply_service(self, fault: Any, phase: str, name: str, ctx: FaultContext) -> AppliedFault:
        container = ctx.runtime.container_of(name)
        if container is None:
            raise FaultInjectionError(f"{fault.type} squeezes a container: it needs the docker runtime")
        return self.apply_external(fault, phase, container, name)

    def apply_external(self, fault: Any, phase: str, container: Any, label: str) -> AppliedFault:
        change, restore, what = self.squeeze(fault, _limits(container), label)
        _docker_call(container, "update", **change)

        def revert() -> None:
            try:
                _docker_call(container, "update", **restore)
            except FaultInjectionError as exc:
                raise FaultRevertError(exc.message) from exc

        return AppliedFault(phase, fault.type, label, what, _spec(fault), clock.now(), revert_action=revert,
                            undo_record=undo_record("container_update", container=container.id, update=restore))


def _limits(container: Any) -> dict[str, int]:
    container.reload()
    host = container.attrs.get("HostConfig", {})
    return {"cpu_quota": int(host.get("CpuQuota") or 0), "cpu_period": int(host.get("CpuPeriod") or 0),
            "mem_limit": int(host.get("Memory") or 0), "memswap_limit": int(host.get("MemorySwap") or 0)}


@register_fault
class Cpu(SqueezeKind):
    model = ContainerCpuFault

    def squeeze(self, fault: ContainerCpuFault, before: dict[str, int],
                name: str) -> tuple[dict[str, int], dict[str, int], str]:
        change = {"cpu_period": CPU_PERIOD, "cpu_quota": max(1000, int(fault.cpus * CPU_PERIOD))}
        restore = {"cpu_period": before["cpu_period"] or CPU_PERIOD, "cpu_quota": before["cpu_quota"] or -1}
        return change, restore, f"{name} limited to {fault.cpus:g} CPU"


@register_fault
class Memory(SqueezeKind):
    model = ContainerMemoryFault

    def squeeze(self, fault: ContainerMemoryFault, before: dict[str, int],
                name: str) -> tuple[dict[str, int], dict[str, int], str]:
        limit = fault.mb * 2**20
        change = {"mem_limit": limit, "memswap_limit": limit}
        # docker cannot remove a memory limit once set: no limit before becomes the machine's whole
        # memory (no real limit), with swap above it (memory and swap limits are raised together,
        # or the kernel refuses a memory limit above the swap one)
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        restore = {"mem_limit": before["mem_limit"] or ram,
                   "memswap_limit": before["memswap_limit"] if before["mem_limit"] else 2 * ram}
        return change, restore, f"{name} limited to {fault.mb} MiB of memory"


# ------------------------------------------------------------------ cleanup after kill -9
def _undo_container(record: dict[str, Any], act: Callable[[Any], str]) -> str:
    from aichaos.runtime.docker import engine

    try:
        return act(engine().containers.get(record["container"]))
    except Exception as exc:  # the SDK's errors, an absent engine: report and go on
        return f"could not revert {record}: {getattr(exc, 'message', exc)}"


def _unpause(container: Any) -> str:
    if container.status == "paused":
        container.unpause()
    return f"unpaused container {container.name}"


def _start(container: Any) -> str:
    container.start()
    return f"started container {container.name}"


@register_undo("container_unpause")
def _undo_unpause(record: dict[str, Any], ctx: UndoContext) -> str:
    return _undo_container(record, _unpause)


@register_undo("container_start")
def _undo_start(record: dict[str, Any], ctx: UndoContext) -> str:
    return _undo_container(record, _start)


@register_undo("container_update")
def _undo_update(record: dict[str, Any], ctx: UndoContext) -> str:
    def update(container: Any) -> str:
        container.update(**record["update"])
        return f"restored the limits of container {container.name}"

    return _undo_container(record, update)


@register_undo("process_resume")
def _undo_resume(record: dict[str, Any], ctx: UndoContext) -> str:
    pid = int(record["pid"])
    if not ctx.is_ours(pid):
        return f"paused process group {pid} is gone already"
    try:
        os.killpg(pid, signal.SIGCONT)
    except OSError as exc:
        return f"could not resume paused process group {pid}: {exc}"
    return f"resumed paused process group {pid}"
