"""Every loader error names the file, the line and the key path."""

from __future__ import annotations

from aichaos.experiment.loader import json_schema, load_experiment
from tests.conftest import EXPERIMENT, STACK, line_of, problems


def test_valid_experiment_loads(files):
    loaded = load_experiment(files(EXPERIMENT))
    exp = loaded.experiment
    assert exp.name == "unit"
    assert exp.phases[1].duration == 5.0
    assert exp.phases[1].faults[0].latency_ms == 100
    assert exp.duration == 10.0
    assert loaded.stack.edges == ["frontend->backend"]


def test_unknown_top_level_key_suggests(files):
    text = EXPERIMENT.replace("load:", "laod: {}\nload:")
    path = files(text)
    [p] = problems(path)
    assert p.file == str(path)
    assert p.line == line_of(text, "laod")
    assert p.key == "laod"
    assert "did you mean 'load'" in p.message


def test_unknown_key_inside_fault_names_path_and_line(files):
    text = EXPERIMENT.replace("latency_ms: 100", "latency_ms: 100, jiter_ms: 5")
    [p] = problems(files(text))
    assert p.key == "phases[1].faults[0].jiter_ms"
    assert p.line == line_of(text, "jiter_ms")
    assert "did you mean 'jitter_ms'" in p.message


def test_wrong_type_names_key_and_line(files):
    text = EXPERIMENT.replace("users: 2", "users: many")
    [p] = problems(files(text))
    assert p.key == "load.users"
    assert p.line == line_of(text, "users: many")
    assert "integer" in p.message


def test_missing_key(files):
    text = EXPERIMENT.replace("name: unit\n", "")
    [p] = problems(files(text))
    assert p.key == "name"
    assert "missing" in p.message


def test_bad_duration(files):
    text = EXPERIMENT.replace("duration: 5s}", "duration: 5x}", 1)
    [p] = problems(files(text))
    assert p.key == "phases[0].duration"
    assert p.line == line_of(text, "5x")
    assert "30s" in p.message  # says how to write it


def test_unknown_fault_type(files):
    text = EXPERIMENT.replace("type: latency", "type: latncy")
    [p] = problems(files(text))
    assert p.key == "phases[1].faults[0]"
    assert p.line == line_of(text, "latncy")
    assert "latency" in p.message


def test_edge_must_exist_in_stack(files):
    text = EXPERIMENT.replace("edge: frontend->backend", "edge: frontend->backnd")
    [p] = problems(files(text))
    assert p.key == "phases[1].faults[0].edge"
    assert p.line == line_of(text, "backnd")
    assert "did you mean 'frontend->backend'" in p.message


def test_load_target_must_exist(files):
    text = EXPERIMENT.replace("target: frontend", "target: gateway")
    [p] = problems(files(text))
    assert p.key == "load.target"
    assert "gateway" in p.message


def test_yaml_syntax_error_has_line(files):
    text = EXPERIMENT.replace("users: 2", "users: [2")
    [p] = problems(files(text))
    assert p.line is not None and p.line >= line_of(text, "users: [2")
    assert "invalid YAML" in p.message


def test_duplicate_key_is_an_error_not_data_loss(files):
    text = EXPERIMENT.replace("users: 2", "users: 2\n  users: 3")
    [p] = problems(files(text))
    assert p.key == "load.users"
    assert "duplicate" in p.message
    assert p.line == line_of(text, "users: 3")


def test_baseline_may_not_inject(files):
    text = EXPERIMENT.replace("- {name: baseline, duration: 5s}",
                              "- {name: baseline, duration: 5s, faults: [{type: down, edge: frontend->backend}]}")
    [p] = problems(files(text))
    assert "baseline" in p.message


def test_bad_template_is_caught_at_load(files):
    text = EXPERIMENT.replace("words(5)", "wordz(5)")
    [p] = problems(files(text))
    assert p.key == "load.requests[0].json"
    assert "wordz" in p.message


def test_missing_stack_file(files, tmp_path):
    text = EXPERIMENT.replace("stack: stack.yaml", "stack: nope.yaml")
    [p] = problems(files(text))
    assert p.key == "stack" and p.line == line_of(text, "stack: nope")


def test_stack_file_errors_name_the_stack(files, write):
    stack = write("stack.yaml", STACK.replace("ready: {http: /health}\n  frontend",
                                              "redy: {http: /health}\n  frontend"))
    found = problems(files(EXPERIMENT))
    assert any(p.file == str(stack) and "redy" in p.key and "did you mean 'ready'" in p.message for p in found)


def test_stack_dependency_cycle(write, files):
    write("stack.yaml", STACK.replace("ready: {http: /health}\n  frontend",
                                      "ready: {http: /health}\n    depends_on: {frontend: {env: X}}\n  frontend"))
    found = problems(files(EXPERIMENT))
    assert any("cycle" in p.message for p in found)


def test_set_overrides_apply_and_validate(files):
    path = files(EXPERIMENT)
    loaded = load_experiment(path, ["load.users=7", "phases.1.faults.0.latency_ms=250"])
    assert loaded.experiment.load.users == 7
    assert loaded.experiment.phases[1].faults[0].latency_ms == 250
    [p] = problems(path, ["load.users=lots"])
    assert p.file == "--set load.users=lots"
    assert p.key == "load.users"
    [p] = problems(path, ["load.userz=3"])
    assert "did you mean 'users'" in p.message
    [p] = problems(path, ["nonsense"])
    assert "key.path=value" in p.message
    [p] = problems(path, ["phases.9.name=x"])
    assert "past the end" in p.message


def test_empty_and_non_mapping_files(files):
    [p] = problems(files(""))
    assert "mapping" in p.message
    [p] = problems(files("- a\n- b\n"))
    assert "mapping" in p.message


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    [p] = problems(path)
    assert "UTF-8" in p.message


def test_schema_describes_the_format():
    schema = json_schema()
    assert schema["title"] == "aichaos experiment"
    assert {"version", "name", "stack", "load", "steady_state", "phases"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
    assert "latency" in str(schema["$defs"]["LatencyFault"])


def test_slo_on_metrics_of_an_unknown_service_suggests_one(files):
    text = EXPERIMENT.replace("slo: {p95_ms: {max: 100}}",
                              "slo:\n    p95_ms: {max: 100}\n    metrics:\n      frontnd: {q: {max: 1}}")
    [p] = problems(files(text))
    assert p.key == "steady_state.slo.metrics.frontnd"
    assert p.line == line_of(text, "frontnd")
    assert "did you mean 'frontend'" in p.message


def test_slo_on_metrics_of_a_service_that_exports_none(files):
    text = EXPERIMENT.replace("slo: {p95_ms: {max: 100}}",
                              "slo:\n    p95_ms: {max: 100}\n    metrics:\n      backend: {q: {max: 1}}")
    [p] = problems(files(text))
    assert p.key == "steady_state.slo.metrics.backend"
    assert "no metrics path" in p.message


def test_bad_metric_selector_names_its_line(files):
    text = EXPERIMENT.replace("slo: {p95_ms: {max: 100}}",
                              "slo:\n    p95_ms: {max: 100}\n    metrics:\n      frontend: {'q{a=1}': {max: 1}}")
    [p] = problems(files(text))
    assert p.key.startswith("steady_state.slo.metrics")
    assert p.line == line_of(text, "q{a=1}")
    assert "not a metric selector" in p.message


def test_stop_condition_on_a_scraped_metric_is_checked_too(files):
    text = EXPERIMENT + "stop_when:\n  - metrics: {gatway: {q: {above: 1}}}\n"
    [p] = problems(files(text))
    assert p.key == "stop_when[0].metrics.gatway"


def test_missing_locustfile_is_an_error_with_its_line(files):
    requests = EXPERIMENT[EXPERIMENT.index("  requests:"):EXPERIMENT.index("steady_state:")]
    text = EXPERIMENT.replace(requests, "  locustfile: nowhere.py\n")
    [p] = problems(files(text))
    assert p.key == "load.locustfile"
    assert p.line == line_of(text, "locustfile")
    assert "not found" in p.message


def test_misspelled_shape_key_suggests(files):
    text = EXPERIMENT.replace("users: 2", "users: 2\n  shape: {type: spike, peak: 5, fro: 2s}")
    found = problems(files(text))
    assert any("fro" in p.key and "did you mean 'for'" in p.message for p in found)


def test_stack_network_is_run_by_default_and_checked(files, write):
    assert load_experiment(files(EXPERIMENT)).stack.network == "run"
    write("stack.yaml", "network: host\n" + STACK)
    assert load_experiment(files(EXPERIMENT)).stack.network == "host"
    stack = write("stack.yaml", "network: bridge\n" + STACK)
    [p] = problems(files(EXPERIMENT))
    assert p.file == str(stack) and p.key == "network" and p.line == 1 and "'run'" in p.message


def test_the_fault_proxys_name_is_not_a_service_name(files, write):
    write("stack.yaml", STACK.replace("  frontend:", "  aichaos-fault-proxy:").replace("target: frontend",
                                                                                      "target: aichaos-fault-proxy"))
    found = problems(files(EXPERIMENT.replace("target: frontend", "target: aichaos-fault-proxy")))
    assert any("taken by aichaos's fault proxy" in p.message for p in found)
