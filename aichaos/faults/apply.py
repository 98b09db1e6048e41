"""One entry point for every fault type: what it needs from the run, and which module applies it.

Network faults go through the fault proxy, AI faults through the service's fault hooks or a
co-tenant process, service faults through the runtime, and load-side faults (traffic_spike,
input_surge) are already in the load plan (``aichaos.load.schedule``): applying one records it, and
the plan returns to the base load when its phase ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aichaos.experiment.model import (
    CONTAINER_FAULTS,
    HOOK_FAULTS,
    NETWORK_FAULTS,
    ColdStartFault,
    DependencyDownFault,
    DeviceMemoryPressureFault,
    InputSurgeFault,
    PipelineStallFault,
    TrafficSpikeFault,
)
from aichaos.experiment.stack import Stack
from aichaos.faults import service as service_faults
from aichaos.faults.base import AppliedFault
from aichaos.faults.container import apply_container_fault
from aichaos.faults.hooks import HookClient, apply_hook_fault
from aichaos.faults.network import apply_network_fault
from aichaos.proxy.client import ToxiproxyClient
from aichaos.runtime.base import Runtime, StackHandle


@dataclass
class FaultContext:
    client: ToxiproxyClient
    runtime: Runtime
    handle: StackHandle
    stack: Stack
    log_dir: Path
    save_state: Callable[[], None]  # records new pids (a restarted service) in the state file
    helpers: dict[str, int]  # the state file's helper processes (co-tenants), by label
    expected_down: set[str]  # services a fault took down on purpose: the run's liveness watch skips them


def hook_client(ctx: FaultContext, service: str) -> HookClient:
    spec = ctx.stack.services[service]
    hooks = spec.hooks
    assert hooks is not None  # the loader refuses a hook fault on a service without hooks
    token = None
    if hooks.token_env:
        token = spec.env.get(hooks.token_env) or os.environ.get(hooks.token_env)
    running = ctx.handle.services[service]
    return HookClient(f"http://{running.host}:{running.port}{hooks.path}", token)


def apply_fault(fault: Any, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
    """Inject ``fault``; the AppliedFault reverts it. Raises FaultInjectionError when it cannot."""
    spec = fault.model_dump(mode="json", by_alias=True)
    if isinstance(fault, NETWORK_FAULTS):
        return apply_network_fault(fault, phase, index, ctx.client)
    if isinstance(fault, CONTAINER_FAULTS):
        return apply_container_fault(fault, phase, ctx.runtime, ctx.handle, ctx.stack, ctx.expected_down,
                                     ctx.save_state)
    if isinstance(fault, HOOK_FAULTS):
        return apply_hook_fault(fault, phase, hook_client(ctx, fault.service))
    if isinstance(fault, PipelineStallFault):
        return service_faults.pause(fault, phase, ctx.runtime, ctx.handle)
    if isinstance(fault, ColdStartFault):
        return service_faults.cold_start(fault, phase, ctx.runtime, ctx.handle, ctx.stack, ctx.save_state)
    if isinstance(fault, DependencyDownFault):
        return service_faults.dependency_down(fault, phase, ctx.stack, ctx.client)
    if isinstance(fault, DeviceMemoryPressureFault):
        label = f"co-tenant {phase}.{index}"

        def record(pid: int | None) -> None:
            if pid is None:
                ctx.helpers.pop(label, None)
            else:
                ctx.helpers[label] = pid
            ctx.save_state()

        return service_faults.memory_pressure(fault, phase, ctx.log_dir, record)
    if isinstance(fault, TrafficSpikeFault):
        return AppliedFault(phase, fault.type, "load", f"load x{fault.factor:g} (traffic spike)", spec, time.time(),
                            revert_action=lambda: None)
    if isinstance(fault, InputSurgeFault):
        fields = ", ".join(f"{k}: {v}" for k, v in fault.json_body.items())
        return AppliedFault(phase, fault.type, "load", f"load inputs surge ({fields})", spec, time.time(),
                            revert_action=lambda: None)
    raise TypeError(f"no way to apply {fault!r}")  # pragma: no cover - the model admits no other type
