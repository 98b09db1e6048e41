"""AI faults without a stack: hook bodies and their exact revert, the loader's checks, and how
load-side faults enter the plan."""

from __future__ import annotations

from typing import Any

import pytest

from aichaos.errors import ExperimentError, FaultInjectionError
from aichaos.experiment.loader import load_experiment
from aichaos.experiment.model import Experiment, InferenceErrorsFault, ModelSwapFault
from aichaos.faults.hooks import apply_hook_fault
from aichaos.load.schedule import plan_load
from tests.conftest import EXPERIMENT, STACK


class FakeHooks:
    """A hook endpoint in memory (unit tests only; the integration tests use the model server's)."""

    url = "http://127.0.0.1:1/admin/faults"
    token = "t"

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)
        self.posts: list[dict[str, Any]] = []

    def get(self) -> dict[str, Any]:
        return dict(self.state)

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        self.posts.append(body)
        self.state.update(body)
        return dict(self.state)


def test_hook_fault_reverts_to_the_values_it_found_not_to_defaults():
    hooks = FakeHooks({"slowdown": 1.0, "error_fraction": 0.1, "error_status": 503, "hang": False, "version": "v1"})
    fault = InferenceErrorsFault(type="inference_errors", service="m", fraction=0.5, status=500)
    applied = apply_hook_fault(fault, "fault", hooks)  # type: ignore[arg-type]
    assert hooks.state["error_fraction"] == 0.5 and hooks.state["error_status"] == 500
    assert applied.undo_record["restore"] == {"error_fraction": 0.1, "error_status": 503}
    applied.revert()
    assert hooks.state["error_fraction"] == 0.1 and hooks.state["error_status"] == 503
    assert hooks.state["version"] == "v1"  # untouched keys stay untouched


def test_model_swap_names_both_versions_and_a_hook_that_hides_a_key_is_refused():
    hooks = FakeHooks({"version": "v1"})
    applied = apply_hook_fault(ModelSwapFault(type="model_swap", service="m", version="v2"), "p", hooks)  # type: ignore[arg-type]
    assert applied.description == "m: model version v1 → v2"
    applied.revert()
    assert hooks.state["version"] == "v1"
    with pytest.raises(FaultInjectionError, match="cannot restore"):
        apply_hook_fault(InferenceErrorsFault(type="inference_errors", service="m", fraction=0.5),
                         "p", FakeHooks({"version": "v1"}))  # type: ignore[arg-type]


def with_fault(fault: str) -> str:
    return EXPERIMENT.replace("      - {type: latency, edge: frontend->backend, latency_ms: 100}", f"      - {fault}")


@pytest.mark.parametrize("fault, message", [
    ("{type: inference_slowdown, service: frontnd, factor: 2}", "did you mean 'frontend'"),
    ("{type: inference_slowdown, service: frontend, factor: 2}", "needs the fault hooks"),
    ("{type: dependency_down, service: frontend}", "no service depends on 'frontend'"),
    ("{type: inference_slowdown, service: frontend, factor: 0.5}", "greater than 1"),
    ("{type: device_memory_pressure, service: backend}", "exactly one of mb and share"),
    ("{type: retry_storm, edge: frontend->backnd, latency_ms: 10}", "did you mean 'frontend->backend'"),
    ("{type: model_swap, service: frontend, version: v2, probe: {cuont: 3}}", "did you mean 'count'"),
])
def test_ai_fault_errors_name_line_and_key(write, fault, message):
    write("stack.yaml", STACK)
    text = with_fault(fault)
    path = write("exp.yaml", text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    [problem] = info.value.problems
    assert message in problem.message
    assert problem.key.startswith("phases[1].faults[0]")
    assert problem.line == next(i for i, line in enumerate(text.splitlines(), 1) if "type: " in line
                                and fault.split(",")[0] in line)


def test_load_faults_enter_the_plan_for_their_phase_only():
    e = Experiment.model_validate({
        "version": 1, "name": "x", "stack": "s", "steady_state": {"slo": {"p95_ms": {"max": 1}}},
        "load": {"target": "t", "users": 4, "requests": [
            {"name": "a", "path": "/", "json": {"text": "{{ words(5) }}", "id": 1}}, {"name": "b", "path": "/b"}]},
        "phases": [{"name": "base", "duration": 2},
                   {"name": "surge", "duration": 2, "faults": [
                       {"type": "traffic_spike", "factor": 2.5},
                       {"type": "input_surge", "json": {"text": "{{ words(300) }}"}}]},
                   {"name": "after", "duration": 1}]})
    plan = plan_load(e.load, e.phases)
    assert [level.users for level in plan.levels] == [4, 4, 10, 10, 4]
    assert [level.mix for level in plan.levels] == [0, 0, 1, 1, 0]
    surged = plan.mixes[1]
    assert surged[0].json_body == {"text": "{{ words(300) }}", "id": 1}  # the field replaced, the rest kept
    assert surged[1].json_body is None  # no body: nothing to surge
