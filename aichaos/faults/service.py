"""Faults on a stack service's processes and on every edge into it: a paused pipeline, a cold
start, an unreachable dependency, and a co-tenant that takes the model's device memory."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aichaos import clock
from aichaos.errors import AichaosError, FaultInjectionError, FaultRevertError
from aichaos.experiment.model import ColdStartFault, DependencyDownFault, DeviceMemoryPressureFault, PipelineStallFault
from aichaos.experiment.stack import Stack
from aichaos.faults.base import AppliedFault
from aichaos.faults.container import pause_service
from aichaos.faults.network import proxies_down
from aichaos.faults.registry import FaultContext, FaultKind, RunCheck, register_fault
from aichaos.interrupts import deferred
from aichaos.runtime.base import Runtime, StackHandle


def _spec(fault: Any) -> dict[str, Any]:
    return dict(fault.model_dump(mode="json", by_alias=True))


@register_fault
class PipelineStall(FaultKind):
    model = PipelineStallFault
    target = "service"

    def check_run(self, fault: PipelineStallFault, run: RunCheck) -> None:
        from aichaos.runtime.external import refuse_unattended

        refuse_unattended(run.capabilities, run.allow_external, f"a {fault.type} fault")

    def apply(self, fault: PipelineStallFault, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        return pause_service(fault, phase, fault.service, ctx, f"{fault.service} paused (its processes stopped)")


@register_fault
class ColdStart(FaultKind):
    model = ColdStartFault
    target = "service"

    def check_run(self, fault: ColdStartFault, run: RunCheck) -> None:
        from aichaos.runtime.external import refuse_unattended

        refuse_unattended(run.capabilities, run.allow_external, f"a {fault.type} fault")

    def apply(self, fault: ColdStartFault, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        return cold_start(fault, phase, ctx.runtime, ctx.handle, ctx.stack, ctx.save_state)


@register_fault
class DependencyDown(FaultKind):
    model = DependencyDownFault
    target = "service"

    def check_stack(self, fault: DependencyDownFault, stack: Stack) -> Iterator[tuple[str, str]]:
        problems = list(super().check_stack(fault, stack))
        yield from problems
        if not problems and not stack.edges_into(fault.service):
            yield "service", f"no service depends on {fault.service!r}: nothing to cut off"

    def apply(self, fault: DependencyDownFault, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        edges = ctx.stack.edges_into(fault.service)
        return proxies_down(fault, phase, ctx, fault.service, edges,
                            f"{fault.service} unreachable ({', '.join(edges)} down)")


@register_fault
class DeviceMemoryPressure(FaultKind):
    model = DeviceMemoryPressureFault
    target = "service"

    def apply(self, fault: DeviceMemoryPressureFault, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        label = f"co-tenant {phase}.{index}"

        def record(pid: int | None) -> None:  # the co-tenant is in the state file while it lives
            if pid is None:
                ctx.helpers.pop(label, None)
            else:
                ctx.helpers[label] = pid
            ctx.save_state()

        return memory_pressure(fault, phase, ctx.log_dir, record)


def cold_start(fault: ColdStartFault, phase: str, runtime: Runtime, handle: StackHandle, stack: Stack,
               on_restarted: Callable[[], None]) -> AppliedFault:
    """Kill the service and start it again at once; it becomes ready in the background while the
    phase goes on, and the revert waits for it (up to its readiness timeout)."""
    service = stack.services[fault.service]
    killed_at = time.time()
    try:
        running = runtime.restart_service(fault.service)
    except AichaosError as exc:
        raise FaultInjectionError(f"could not restart {fault.service}: {exc.message}", hint=exc.hint) from exc
    handle.services[fault.service] = running
    on_restarted()
    detail: dict[str, Any] = {}
    done = threading.Event()

    def wait() -> None:
        try:
            runtime.wait_ready(running, service)
            detail["ready_after_s"] = round(time.time() - killed_at, 3)
        except AichaosError as exc:
            detail["error"] = exc.message
        finally:
            done.set()

    threading.Thread(target=wait, name=f"aichaos-cold-start-{fault.service}", daemon=True).start()
    applied = AppliedFault(phase, fault.type, fault.service, f"{fault.service} killed and started again",
                           _spec(fault), clock.now(), revert_action=lambda: None, detail=detail)

    def revert() -> None:
        if not done.wait(service.ready.timeout + 5):
            raise FaultRevertError(f"{fault.service} was not ready again after {service.ready.timeout:g}s")
        if "error" in detail:
            raise FaultRevertError(f"{fault.service} did not come back: {detail['error']}")
        applied.description = f"{fault.service} killed and started again, ready after {detail['ready_after_s']:.1f}s"

    applied.revert_action = revert
    return applied


def memory_pressure(fault: DeviceMemoryPressureFault, phase: str, log_dir: Path,
                    on_started: Callable[[int | None], None], timeout: float = 60.0) -> AppliedFault:
    """Start the co-tenant (``aichaos.faults.cotenant``) and wait until it holds its memory."""
    amount = ["--mb", str(fault.mb)] if fault.mb is not None else ["--share", str(fault.share)]
    log_path = log_dir / f"cotenant-{phase}.log"
    with open(log_path, "ab") as log, deferred():
        try:
            process = subprocess.Popen([sys.executable, "-m", "aichaos.faults.cotenant", *amount],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                       start_new_session=True)
        except OSError as exc:
            raise FaultInjectionError(f"could not start the memory co-tenant: {exc}") from exc
        on_started(process.pid)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        on_started(None)

    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    line = process.stdout.readline() if selector.select(timeout) else b""
    selector.close()
    try:
        held = json.loads(line)
    except ValueError:
        held = {"error": f"no answer within {timeout:g}s" if not line else line.decode(errors="replace")}
    if "error" in held:
        stop()
        raise FaultInjectionError(f"the memory co-tenant could not take its memory: {held['error']}",
                                  hint=f"see {log_path}")
    where = f"GPU memory ({held['device']})" if held["device"] != "host" else "host memory (no CUDA device)"
    return AppliedFault(phase, fault.type, fault.service,
                        f"{fault.service}: co-tenant holds {held['mb']} MiB of {where}", _spec(fault), clock.now(),
                        revert_action=stop, detail={"device": held["device"], "mb": held["mb"]})
