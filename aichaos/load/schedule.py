"""The load plan of a run, second by second: how many users, at what paced rate, with which requests.

Pure functions of the experiment, so the plan can be checked without starting anything. The load
process receives the plan as JSON and looks up the current second (Locust's ``LoadTestShape``), so
every process of a distributed load, on any machine, follows the same plan from the same ``t0``.

A *level* is users for a closed-loop load and requests per second for a paced one (``rate``). The
run's level is ``load.users`` (or ``load.rate``), shaped over the whole run by ``load.shape``; a
phase's ``load`` replaces it for that phase (its shape spans the phase), and may swap the request
mix, which is how load-side faults (a traffic spike, an input-length surge) are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aichaos.experiment.llm import LlmRequest
from aichaos.experiment.model import (
    InputSurgeFault,
    Load,
    Phase,
    RampShape,
    RequestSpec,
    Shape,
    SpikeShape,
    StepShape,
    TrafficSpikeFault,
)


@dataclass(frozen=True)
class Level:
    users: int
    rate: float | None  # requests/s in all when paced; None: closed loop
    mix: int  # index of the request mix: 0 is load.requests, others come from phases

    def to_json(self) -> list[Any]:
        return [self.users, self.rate, self.mix]


def shape_level(shape: Shape, t: float, span: float, base: float) -> float:
    """The level ``t`` seconds into a span of ``span`` seconds, with ``base`` as the level around it."""
    if isinstance(shape, RampShape):
        if span <= 1:
            return shape.to
        return shape.from_ + (shape.to - shape.from_) * min(1.0, t / (span - 1))
    if isinstance(shape, StepShape):
        return shape.levels[min(int(t // shape.every), len(shape.levels) - 1)]
    if isinstance(shape, SpikeShape):
        inside = shape.at <= t < shape.at + shape.for_
        return shape.peak if inside else (shape.base if shape.base is not None else base)
    raise TypeError(f"unknown shape {shape!r}")


@dataclass(frozen=True)
class Plan:
    levels: list[Level]  # one per second from t0; the first also holds before t0, the last after the end
    mixes: list[list[RequestSpec]]

    def level_at(self, offset: float) -> Level:
        index = min(max(0, int(offset)), len(self.levels) - 1)
        return self.levels[index]

    @property
    def peak_users(self) -> int:
        return max(level.users for level in self.levels)


def plan_load(load: Load, phases: list[Phase]) -> Plan:
    """The per-second plan of a run (see the module's docstring)."""
    total = int(sum(p.duration for p in phases))
    mixes: list[list[RequestSpec]] = [list(load.requests)]
    paced = load.rate is not None
    run_base = float(load.rate if paced else load.users)  # type: ignore[arg-type]
    levels: list[Level] = []
    start = 0
    for phase in phases:
        override = phase.load
        spike = next((f.factor for f in phase.faults if isinstance(f, TrafficSpikeFault)), 1.0)
        surge = next((f for f in phase.faults if isinstance(f, InputSurgeFault)), None)
        mix = 0
        if override is not None and override.requests is not None:
            mixes.append(list(override.requests))
            mix = len(mixes) - 1
        elif surge is not None:
            mixes.append([surged(r, surge) for r in load.requests])
            mix = len(mixes) - 1
        for k in range(int(phase.duration)):
            second = start + k
            level = shape_level(load.shape, second, total, run_base) if load.shape else run_base
            users = load.users
            if override is not None:
                if override.users is not None:
                    users = override.users
                    if not paced:
                        level = float(override.users)
                if override.rate is not None:
                    level = override.rate
                if override.shape is not None:
                    level = shape_level(override.shape, k, phase.duration, level)
            level *= spike
            if paced:
                levels.append(Level(users=users, rate=max(0.0, level), mix=mix))
            else:
                levels.append(Level(users=max(0, round(level)), rate=None, mix=mix))
        start += int(phase.duration)
    return Plan(levels=levels, mixes=mixes)


def surged(request: RequestSpec, surge: InputSurgeFault) -> RequestSpec:
    """``request`` with the surge's body fields in place of its own (a body that is not an object
    is left alone: there is no field to replace). For an llm request, ``prompt``, ``messages``,
    ``prompts`` and ``max_tokens`` replace its own, and other fields go into its ``extra``."""
    if request.llm is not None:
        return request.model_copy(update={"llm": _surged_llm(request.llm, surge.json_body)})
    if not isinstance(request.json_body, dict):
        return request
    return request.model_copy(update={"json_body": {**request.json_body, **surge.json_body}})


def _surged_llm(llm: LlmRequest, fields: dict[str, Any]) -> LlmRequest:
    data = llm.model_dump(exclude_none=True)
    for key, value in fields.items():
        if key in ("prompt", "messages", "prompts"):
            for other in ("prompt", "messages", "prompts"):
                data.pop(other, None)
            data[key] = value
        elif key == "max_tokens":
            data[key] = value
        else:
            data["extra"] = {**data.get("extra", {}), key: value}
    return LlmRequest.model_validate(data)


def offered_rate(plan: Plan, start: int, end: int) -> float | None:
    """Mean paced rate over plan seconds [start, end) (offsets from t0); None for a closed loop."""
    rates = [plan.level_at(s).rate for s in range(start, end)]
    if not rates or any(r is None for r in rates):
        return None
    return sum(r for r in rates if r is not None) / len(rates)
