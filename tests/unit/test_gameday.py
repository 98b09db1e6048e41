"""Game days without processes: faults from the command line, the keeper on the fake runtime and its
control API, the game-day journal, and what `aichaos watch` draws."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aichaos.cli.app import app
from aichaos.errors import ExitCode, ExperimentError, UsageError
from aichaos.experiment.fault_args import fault_from_args, fault_types
from aichaos.experiment.loader import load_stack
from aichaos.faults.registry import kinds
from aichaos.gameday.control import Control, GameDay, KeeperError, find_game_day
from aichaos.gameday.keeper import Keeper, serve_control
from aichaos.gameday.record import Action, game_day_journal, measurement_line, read_measurements
from aichaos.gameday.watch import Watcher, default_queries, faults_in, watch_line
from aichaos.metrics.histogram import bucket_of
from aichaos.metrics.samples import Bucket, SampleStore
from aichaos.metrics.scrape import ScrapeStore, parse_selector
from aichaos.report.formats import FORMATS
from aichaos.report.journal import read_journal
from aichaos.runtime.fake import FakeKind, FakeWorld
from aichaos.runtime.state import RunState
from tests.conftest import STACK

runner = CliRunner()


@pytest.fixture
def stack_file(write) -> Path:
    return write("stack.yaml", STACK)


def problems(exc: pytest.ExceptionInfo[ExperimentError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


# ---------------------------------------------------------------- faults from the command line
def test_every_fault_type_of_the_experiment_format_can_be_injected_by_hand():
    assert set(kinds()) <= set(fault_types())
    for name in fault_types():  # each type is known; what a bare one lacks is named as its arguments
        try:
            fault_from_args(name)
        except ExperimentError as exc:
            assert not any("no fault type" in str(p) for p in exc.problems), name
            assert all(p.file in ("--set", "--edge", "--service") for p in exc.problems), (name, exc.problems)


def test_a_fault_from_arguments_is_the_experiments_model(stack_file):
    fault = fault_from_args("latency", edge="frontend->backend", sets=["latency_ms=300", "jitter_ms=20"],
                            stack=load_stack(stack_file))
    assert (fault.type, fault.edge, fault.latency_ms, fault.jitter_ms) == ("latency", "frontend->backend", 300, 20)
    pause = fault_from_args("pause", service="backend", stack=load_stack(stack_file))
    assert pause.service == "backend"


@pytest.mark.parametrize(("args", "expected"), [
    (dict(type_="latency", edge="frontend->backend", sets=["latency_ms=abc"]),
     "--set latency_ms=abc: latency_ms: expected an integer, got 'abc'"),
    (dict(type_="latency", edge="frontend->backend", sets=["latency_ms=-1"]),
     "--set latency_ms=-1: latency_ms: must be at least 0"),
    (dict(type_="latency", edge="frontend->backend"), "--set: latency_ms: required: give --set latency_ms=VALUE"),
    (dict(type_="latency", sets=["latency_ms=1"]), "--edge: edge: required: give --edge DEPENDENT->DEPENDENCY"),
    (dict(type_="latency", edge="frontend->backedn", sets=["latency_ms=1"]),
     "--edge: edge: no edge 'frontend->backedn' in the stack; did you mean 'frontend->backend'?"),
    (dict(type_="latency", edge="frontend->backend", sets=["latency=1", "latency_ms=1"]),
     "--set latency=1: latency: unknown key 'latency'; did you mean 'latency_ms'?"),
    (dict(type_="pause", service="gateway"), "--service: service: no service 'gateway' in the stack"),
    (dict(type_="cold_start"), "--service: service: required: give --service NAME"),
    (dict(type_="latncy"), "TYPE: no fault type 'latncy'; did you mean 'latency'?"),
])
def test_a_bad_fault_names_the_argument_that_made_it_bad(stack_file, args, expected):
    with pytest.raises(ExperimentError) as exc:
        fault_from_args(stack=load_stack(stack_file), **args)
    assert any(p.startswith(expected) for p in problems(exc)), problems(exc)


def test_fault_commands_without_a_stack_up_say_so_and_exit_2():
    result = runner.invoke(app, ["fault", "inject", "latency", "--edge", "a->b", "--set", "latency_ms=1"])
    assert result.exit_code == ExitCode.INVALID and "no game-day stack is up" in result.output
    result = runner.invoke(app, ["fault", "inject", "latency", "--for", "soon"])
    assert result.exit_code == ExitCode.INVALID and "--for soon" in result.output
    assert runner.invoke(app, ["stack", "status"]).exit_code == ExitCode.INVALID


# ---------------------------------------------------------------- the keeper, on the fake runtime
@pytest.fixture
def keeper(tmp_path, stack_file):
    world = FakeWorld()
    folder = tmp_path / "gameday"
    (folder / "logs").mkdir(parents=True)
    day = GameDay("20250101-000000-abcdef", folder, str(stack_file), str(stack_file), "fake")
    day.save()
    keeper = Keeper(day, load_stack(stack_file), kind=FakeKind(world))
    keeper.up(lambda text: None)
    keeper.world = world  # type: ignore[attr-defined]
    yield keeper
    keeper.down()


def test_the_keeper_injects_clears_and_records_every_action(keeper):
    world, state_path = keeper.world, keeper.day.state_path
    assert set(RunState.read(state_path).services) == set() and world.running == {"backend", "frontend"}
    f1 = keeper.inject({"type": "latency", "edge": "frontend->backend", "latency_ms": 200}, None)
    assert f1["id"] == "f1" and world.toxics["frontend__backend"]["aichaos_f1_0"]["attributes"]["latency"] == 200
    assert RunState.read(state_path).faults == [{"kind": "toxic", "proxy_url": "http://fake-proxy.invalid",
                                                 "proxy": "frontend__backend", "toxic": "aichaos_f1_0"}]
    keeper.inject({"type": "down", "edge": "frontend->backend"}, None)
    assert world.disabled == {"frontend__backend"}
    assert [f["id"] for f in keeper.clear("f2")] == ["f2"] and world.disabled == set()
    with pytest.raises(UsageError, match="no active fault 'f9' \\(active: f1\\)"):
        keeper.clear("f9")
    with pytest.raises(UsageError, match="load plan"):
        keeper.inject({"type": "traffic_spike", "factor": 2}, None)
    with pytest.raises(UsageError, match="no edge"):
        keeper.inject({"type": "down", "edge": "backend->frontend"}, None)
    with pytest.raises(UsageError, match="docker"):
        keeper.inject({"type": "cpu", "service": "backend", "cpus": 0.5}, None)
    answer = keeper.down()
    assert answer["leftovers"] == [] and world.toxics.get("frontend__backend", {}) == {}
    assert world.events[-3:] == ["teardown", "proxy close", "network close"]
    assert not state_path.exists()
    journal = json.loads((keeper.day.folder / "journal.json").read_text())
    assert [e["kind"] for e in journal["events"]] == ["up", "inject", "inject", "clear", "revert", "down"]
    assert [p["name"] for p in journal["phases"]] == ["up", "inject f1", "inject f2", "clear f2", "revert f1"]
    assert [f["phase"] for f in journal["faults"]] == ["inject f1", "inject f2"]
    assert all(f["reverted_at"] is not None for f in journal["faults"])


def test_a_fault_with_a_time_limit_is_reverted_by_the_keeper_when_it_is_up(keeper):
    keeper.inject({"type": "latency", "edge": "frontend->backend", "latency_ms": 200}, 0.05)
    deadline = time.monotonic() + 5
    while len(keeper.actions) < 3 and time.monotonic() < deadline:  # the expiry is recorded last
        time.sleep(0.01)
    assert keeper.faults == {} and keeper.world.toxics["frontend__backend"] == {}
    assert [a.kind for a in keeper.actions] == ["up", "inject", "expire"]
    assert RunState.read(keeper.day.state_path).faults == []


def test_the_control_api_answers_with_the_token_only(keeper):
    server = serve_control(keeper, "secret")
    try:
        keeper.day.control_url = f"http://127.0.0.1:{server.server_address[1]}"
        keeper.day.token = "secret"
        control = Control(keeper.day)
        assert control.inject({"type": "latency", "edge": "frontend->backend", "latency_ms": 5}, 30)["id"] == "f1"
        status = control.status()
        assert set(status["services"]) == {"backend", "frontend"} and status["faults"][0]["until"] is not None
        assert "frontend->backend" in status["edges"]
        with pytest.raises(KeeperError) as exc:
            control.clear("f7")
        assert exc.value.exit_code == ExitCode.INVALID
        assert [f["id"] for f in control.clear(None)["cleared"]] == ["f1"]
        keeper.day.token = "guess"
        with pytest.raises(KeeperError, match="not authorised"):
            control.status()
    finally:
        server.shutdown()


def test_a_stack_is_found_by_id_through_the_index(keeper):
    assert find_game_day(None).stack_id == keeper.day.stack_id == find_game_day(keeper.day.stack_id).stack_id
    with pytest.raises(UsageError, match="no game-day stack 'other' is up"):
        find_game_day("other")


# ---------------------------------------------------------------- the game-day journal
def _bucket(second: int, count: int, ms: float, errors: int = 0) -> Bucket:
    return Bucket(second, count + errors, {"5xx": errors} if errors else {}, {bucket_of(ms): count})


def test_the_game_day_journal_has_a_phase_per_span_between_actions_and_renders_like_a_run(tmp_path):
    t = 1_800_000_000.0
    actions = [Action(t + 0.3, "up", "stack up"), Action(t + 10.5, "inject", "f1: +100 ms", "f1"),
               Action(t + 20.2, "clear", "f1 cleared", "f1"), Action(t + 25.0, "down", "stack down")]
    samples = {s: _bucket(s, 50, 5.0) for s in range(int(t), int(t) + 25)}
    samples.update({s: _bucket(s, 50, 105.0, errors=1) for s in range(int(t) + 11, int(t) + 20)})
    fault = {"phase": "f1", "type": "latency", "target": "frontend->backend", "description": "+100 ms",
             "spec": {}, "applied_at": t + 10.5, "reverted_at": t + 20.2, "revert_error": None, "detail": {}}
    journal = game_day_journal(stack_id="s1", folder=tmp_path, source="plain.yaml", stack_file="plain.yaml",
                               actions=actions, faults=[("f1", fault)], samples=samples, scrapes=ScrapeStore(),
                               environment={}, services={}, proxies={}, ready_s=1.0, errors=[], leftovers=[],
                               now=t + 30)
    assert [(p.name, p.metrics.count) for p in journal.phases] == [("up", 450), ("inject f1", 459),
                                                                    ("clear f1", 200)]
    assert journal.phases[1].metrics.p50_ms == pytest.approx(105, rel=0.01)
    assert journal.status == "completed" and journal.experiment["game_day"]["actions"] == 4
    journal.write()
    again = read_journal(tmp_path)
    text = FORMATS["text"](again)
    assert "inject f1" in text and "+100 ms" in text
    assert "game day on plain.yaml: 4 actions (status completed)" in text and "verdict" not in text
    assert FORMATS["md"](again).startswith("# aichaos game day s1") and "inject f1" in FORMATS["md"](again)


def test_measurements_are_read_back_summed_by_second_and_a_torn_line_is_skipped():
    lines = [measurement_line(bucket=_bucket(5, 10, 3.0)), measurement_line(bucket=_bucket(5, 2, 3.0)),
             measurement_line(scrape={"second": 5, "service": "f", "values": {"x": 1.0}, "kinds": {"x": "gauge"}}),
             '{"bucket": {"sec']
    buckets, scrapes = read_measurements(lines)
    assert buckets[5].count == 12 and scrapes.series[5]["f"] == {"x": 1.0}


# ---------------------------------------------------------------- what watch shows
def test_the_faults_of_a_second_are_those_active_at_any_moment_of_it():
    status = {"faults": [{"id": "f2", "until": 130.0}],
              "history": [{"id": "f1", "description": "a", "applied_at": 100.5, "reverted_at": 110.2},
                          {"id": "f2", "description": "b", "applied_at": 110.9, "reverted_at": None}]}
    assert [f["id"] for f in faults_in(status, 99)] == []
    assert [f["id"] for f in faults_in(status, 100)] == ["f1"]
    assert [f["id"] for f in faults_in(status, 110)] == ["f1", "f2"]
    assert [(f["id"], f["until"]) for f in faults_in(status, 111)] == [("f2", 130.0)]


def test_watch_gathers_complete_seconds_draws_a_line_each_and_records_them(tmp_path):
    store = SampleStore()
    store.add(_bucket(100, 40, 5.0, errors=2))
    scrapes = ScrapeStore()
    for second, total in ((99, 10.0), (100, 30.0)):
        scrapes.add(second, "frontend", {"echo_in_flight": 3.0, 'echo_requests_total{status="200"}': total,
                                         "python_gc_objects_collected_total": 1.0},
                    {"echo_in_flight": "gauge", 'echo_requests_total{status="200"}': "counter",
                     "python_gc_objects_collected_total": "counter"})
    status = {"faults": [], "history": [{"id": "f1", "description": "latency +100 ms", "applied_at": 100.2,
                                         "reverted_at": None}]}
    measurements = tmp_path / "measurements.jsonl"
    watcher = Watcher(store, scrapes, ["frontend"], lambda: status, measurements)
    assert [w.second for w in watcher.tick(101.5)] == [99]
    [watched] = watcher.tick(102.1)
    assert watched.second == 100 and watched.figures.requests == 42
    assert watched.metrics == {"frontend/echo_in_flight": 3.0, 'frontend/echo_requests_total{status="200"}': 20.0}
    line = watch_line(watched)
    assert line.startswith(time.strftime("%H:%M:%S", time.localtime(100)) + " 42 req/s · p50 5.0")
    assert "errors 4.76% (5xx 2)" in line and "frontend/echo_in_flight 3" in line
    assert line.endswith("| faults: f1 latency +100 ms")
    buckets, recorded = read_measurements(measurements.read_text().splitlines())
    assert buckets[100].count == 42 and recorded.series[100]["frontend"]["echo_in_flight"] == 3.0


def test_without_named_metrics_watch_shows_each_services_own_series_gauges_first():
    scrapes = ScrapeStore()
    scrapes.add(1, "s", {"b_total": 1.0, "a_gauge": 1.0, "process_cpu_seconds_total": 1.0},
                {"b_total": "counter", "a_gauge": "gauge", "process_cpu_seconds_total": "counter"})
    assert list(default_queries(scrapes, ["s"])) == ["s/a_gauge", "s/b_total"]
    assert default_queries(scrapes, ["s"])["s/a_gauge"] == ("s", parse_selector("a_gauge"))


def test_stack_up_takes_a_stack_file_or_an_experiments_stack(write, stack_file):
    from aichaos.cli.cmd_stack import _stack_of
    from tests.conftest import EXPERIMENT

    assert _stack_of(stack_file) == (stack_file.resolve(), "auto", None)
    experiment = write("experiment.yaml", EXPERIMENT.replace("stack: stack.yaml", "stack: stack.yaml\nruntime: local"))
    assert _stack_of(experiment) == (stack_file.resolve(), "local", None)
    with pytest.raises(ExperimentError):
        _stack_of(write("bad.yaml", "services: {}\n"))


def test_watch_refuses_bad_options_with_exit_2():
    assert runner.invoke(app, ["watch", "--mode", "fancy"]).exit_code == ExitCode.INVALID
    result = runner.invoke(app, ["watch", "--duration", "soon"])
    assert result.exit_code == ExitCode.INVALID and "--duration soon" in result.output


def test_watch_shows_the_latest_distinct_errors():
    from rich.console import Console

    from aichaos.gameday.watch import WatchedSecond, watch_line, watch_table

    examples = {"5xx 502 x": ["5xx", 12, '502 {"error": "backend failed"}'], "timeout t": ["timeout", 3, "ReadTimeout"]}
    watched = WatchedSecond(1_800_000_000, None, {}, [], examples)
    assert watch_line(watched).endswith('| error: 5xx: 502 {"error": "backend failed"}')
    console = Console(width=140, record=True, no_color=True)
    console.print(watch_table("watch", [watched]))
    text = console.export_text()
    assert "latest distinct errors:" in text and '12 x 5xx: 502 {"error": "backend failed"}' in text
    assert "3 x timeout: ReadTimeout" in text
