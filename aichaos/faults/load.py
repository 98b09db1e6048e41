"""Load-side faults: a traffic spike and an input-length surge. They are part of the load plan
(``aichaos.load.schedule``), which changes the load for their phase and returns to the base load
when it ends; applying one records it, and there is nothing to revert outside the plan."""

from __future__ import annotations

from typing import Any

from aichaos import clock
from aichaos.experiment.model import InputSurgeFault, TrafficSpikeFault
from aichaos.faults.base import AppliedFault
from aichaos.faults.registry import FaultContext, FaultKind, register_fault


def _planned(fault: Any, phase: str, what: str) -> AppliedFault:
    return AppliedFault(phase, fault.type, "load", what, fault.model_dump(mode="json", by_alias=True), clock.now(),
                        revert_action=lambda: None)


@register_fault
class TrafficSpike(FaultKind):
    model = TrafficSpikeFault
    target = "load"

    def apply(self, fault: TrafficSpikeFault, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        return _planned(fault, phase, f"load x{fault.factor:g} (traffic spike)")


@register_fault
class InputSurge(FaultKind):
    model = InputSurgeFault
    target = "load"

    def apply(self, fault: InputSurgeFault, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        fields = ", ".join(f"{k}: {v}" for k, v in fault.json_body.items())
        return _planned(fault, phase, f"load inputs surge ({fields})")
