"""The per-second load plan: shapes, phase overrides, request mixes, pacing."""

from __future__ import annotations

import pytest

from aichaos.experiment.model import Experiment
from aichaos.load.schedule import offered_rate, plan_load

REQUEST = {"name": "a", "path": "/a"}


def experiment(load: dict, phases: list[dict]) -> Experiment:
    return Experiment.model_validate({
        "version": 1, "name": "x", "stack": "s.yaml",
        "load": {"target": "t", "requests": [REQUEST], **load},
        "steady_state": {"slo": {"p95_ms": {"max": 1}}}, "phases": phases})


def users(plan) -> list[int]:
    return [level.users for level in plan.levels]


def test_constant_closed_loop_has_one_level_per_second():
    e = experiment({"users": 7}, [{"name": "a", "duration": "3s"}, {"name": "b", "duration": "2s"}])
    plan = plan_load(e.load, e.phases)
    assert users(plan) == [7] * 5
    assert all(level.rate is None and level.mix == 0 for level in plan.levels)
    assert offered_rate(plan, 0, 5) is None


def test_run_ramp_spans_the_whole_run_end_to_end():
    e = experiment({"users": 1, "shape": {"type": "ramp", "from": 0, "to": 40}},
                   [{"name": "a", "duration": "3s"}, {"name": "b", "duration": "2s"}])
    assert users(plan_load(e.load, e.phases)) == [0, 10, 20, 30, 40]


def test_step_and_spike_shapes():
    e = experiment({"users": 5, "shape": {"type": "step", "levels": [2, 4, 8], "every": "2s"}},
                   [{"name": "a", "duration": "7s"}])
    assert users(plan_load(e.load, e.phases)) == [2, 2, 4, 4, 8, 8, 8]
    e = experiment({"users": 5}, [{"name": "a", "duration": "2s"},
                                  {"name": "spike", "duration": "6s",
                                   "load": {"shape": {"type": "spike", "peak": 50, "at": "2s", "for": "3s"}}}])
    assert users(plan_load(e.load, e.phases)) == [5, 5, 5, 5, 50, 50, 50, 5]


def test_phase_override_applies_to_its_phase_only_and_swaps_the_mix():
    long_request = {"name": "long", "path": "/a", "json": {"text": "{{ words(500) }}"}}
    e = experiment({"users": 4}, [{"name": "base", "duration": "2s"},
                                  {"name": "surge", "duration": "2s", "load": {"users": 9, "requests": [long_request]}},
                                  {"name": "after", "duration": "2s"}])
    plan = plan_load(e.load, e.phases)
    assert users(plan) == [4, 4, 9, 9, 4, 4]
    assert [level.mix for level in plan.levels] == [0, 0, 1, 1, 0, 0]
    assert [r.name for r in plan.mixes[1]] == ["long"]


def test_paced_levels_are_rates_and_users_stay_the_pool():
    e = experiment({"users": 10, "rate": 100}, [
        {"name": "base", "duration": "2s"},
        {"name": "spike", "duration": "2s", "load": {"rate": 300}},
        {"name": "ramp", "duration": "3s", "load": {"shape": {"type": "ramp", "from": 100, "to": 200}}}])
    plan = plan_load(e.load, e.phases)
    assert [level.rate for level in plan.levels] == [100, 100, 300, 300, 100, 150, 200]
    assert users(plan) == [10] * 7
    assert offered_rate(plan, 0, 4) == pytest.approx(200)
    assert plan.level_at(-5).rate == 100 and plan.level_at(99).rate == 200  # before t0, after the end


@pytest.mark.parametrize("load, phases, message", [
    ({"users": 2}, [{"name": "a", "duration": "1s"}, {"name": "b", "duration": "1s", "load": {"rate": 5}}],
     "closed-loop"),
    ({"users": 2}, [{"name": "a", "duration": "1s", "load": {"users": 3}}], "baseline"),
    ({"users": 2, "rate": 5, "wait": {"min": "1s", "max": "2s"}}, [{"name": "a", "duration": "1s"}], "not both"),
])
def test_inconsistent_load_is_refused(load, phases, message):
    with pytest.raises(ValueError, match=message):
        experiment(load, phases)
