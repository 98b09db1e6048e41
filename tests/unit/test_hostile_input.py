"""Hostile input (issue 15): every case is refused with the file, a line and the key (or the
``--set`` argument), before it can take unbounded time or memory; nothing clearly invalid passes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from aichaos.cli.app import app
from aichaos.errors import ExperimentError
from aichaos.experiment.durations import parse_duration
from aichaos.experiment.loader import load_experiment
from aichaos.experiment.model import FaultSpec
from aichaos.experiment.yamlpos import MAX_DEPTH, MAX_FILE_BYTES, parse_yaml
from tests.conftest import EXPERIMENT, STACK, line_of, problems

runner = CliRunner()




def bomb(width: int, depth: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- YAML structure
def test_alias_bomb_is_refused_at_its_line_before_expansion(files):
    text = EXPERIMENT + bomb(10, 9)  # a billion values once expanded
    [p] = problems(files(text))
    assert p.line == line_of(text, "a4:")  # the first level past 100,000 values
    assert "expands to more than 100,000 values through its aliases" in p.message


def test_recursive_alias_is_refused(files):
    text = EXPERIMENT + "rec: &r [1, *r]\n"
    [p] = problems(files(text))
    assert p.line == line_of(text, "rec:")
    assert "recursive alias" in p.message and "column 13" in p.message


def test_long_text_repeated_through_aliases_is_refused(files):
    text = EXPERIMENT + f"x: &x {'y' * 900_000}\nz: [*x, *x, *x, *x, *x]\n"
    [p] = problems(files(text))
    assert "characters through its aliases" in p.message and p.line == line_of(text, "z:")


def test_harmless_aliases_still_work(files):
    text = EXPERIMENT.replace("users: 2", "users: &n 2").replace("latency_ms: 100", "latency_ms: *n")
    assert load_experiment(files(text)).experiment.phases[1].faults[0].latency_ms == 2


@pytest.mark.parametrize("nested", [
    "[" * 5000 + "]" * 5000,
    "{a: " * 5000 + "1" + "}" * 5000,
    "\n" + "".join("  " * (i + 1) + "a:\n" for i in range(200)) + "  " * 201 + "1",
])
def test_deep_nesting_is_refused_with_a_position(files, nested):
    text = EXPERIMENT + "deep: " + nested + "\n"
    [p] = problems(files(text))
    assert p.line is not None and p.line >= line_of(text, "deep:")
    assert f"nested deeper than {MAX_DEPTH} levels" in p.message and "column" in p.message


def test_nesting_through_aliases_counts_too():
    chain = ["a0: &a0 " + "[" * 40 + "]" * 40]
    chain += [f"a{i}: &a{i} " + "[" * 40 + f"*a{i - 1}" + "]" * 40 for i in range(1, 3)]
    with pytest.raises(ExperimentError) as info:
        parse_yaml("\n".join(chain), "f.yaml")
    assert "deeper than 64 levels through its aliases" in str(info.value)


def test_non_utf8_byte_has_line_and_column(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_bytes(EXPERIMENT.encode().replace(b"name: unit", b"name: un\xe9it"))
    [p] = problems(path)
    assert (p.line, p.key) == (2, "")
    assert "byte 0xe9 at column 9" in p.message


def test_utf16_is_named(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_bytes(EXPERIMENT.encode("utf-16"))
    [p] = problems(path)
    assert p.line == 1 and "UTF-16" in p.message


def test_utf8_bom_is_fine(files, tmp_path):
    files(EXPERIMENT)
    path = tmp_path / "exp.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + EXPERIMENT.encode())
    assert load_experiment(path).experiment.name == "unit"


def test_nul_character_has_line_and_column(files):
    text = EXPERIMENT.replace("name: unit", "name: u\x00nit")
    [p] = problems(files(text))
    assert p.line == 2 and "U+0000 (column 8)" in p.message


def test_unreadable_tagged_value_has_its_line(files):
    text = EXPERIMENT.replace("name: unit", "name: !!timestamp 2024-99-99")
    [p] = problems(files(text))
    assert p.line == 2 and p.key == "name" and "month" in p.message


# ---------------------------------------------------------------- paths that are not regular files
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "exp.yaml"
    os.mkfifo(fifo)
    [p] = problems(fifo)
    assert "FIFO" in p.message and "not a regular file" in p.message


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_devices_are_refused(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    [p] = problems(device)
    assert p.file == device and "character device" in p.message


def test_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "exp.yaml"
    link.symlink_to("/dev/zero")
    [p] = problems(link)
    assert "character device" in p.message


def test_socket_and_directory_are_refused(tmp_path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "s.yaml"))
        [p] = problems(tmp_path / "s.yaml")
        assert "socket" in p.message
    [p] = problems(tmp_path)
    assert "directory" in p.message


def test_oversize_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "exp.yaml"
    with path.open("wb") as f:
        f.truncate(10 * 1024**3)  # sparse: 10 GiB that would take minutes to read
    [p] = problems(path)
    assert f"at most {MAX_FILE_BYTES:,}" in p.message and "10,737,418,240 bytes" in p.message


def test_stack_path_that_is_a_device_is_named_at_the_stack_key(files):
    text = EXPERIMENT.replace("stack: stack.yaml", "stack: /dev/zero")
    [p] = problems(files(text))
    assert (p.key, p.line) == ("stack", 3) and "not a regular file" in p.message


# ---------------------------------------------------------------- numbers
@pytest.mark.parametrize("value", ["9" * 400, "9" * 400 + "s", "99999999999h", "25h", "86401", "1e400s", "1h2h",
                                   "30m1h", ".inf", ".nan", "true", "-1s"])
def test_clearly_invalid_durations_are_refused(files, value):
    text = EXPERIMENT.replace("{name: baseline, duration: 5s}", f"{{name: baseline, duration: {value}}}")
    [p] = problems(files(text))
    assert (p.key, p.line) == ("phases[0].duration", line_of(text, "baseline"))


def test_durations_have_a_ceiling_of_a_day():
    assert parse_duration("24h") == 86400
    assert parse_duration("1h30m") == 5400
    for bad in ("24h1s", 10**400, "1m1h", "1s1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_a_run_lasts_at_most_a_day(files):
    text = EXPERIMENT.replace("duration: 5s}", "duration: 12h}").replace("duration: 5s\n", "duration: 12h1s\n")
    [p] = problems(files(text))
    assert "a run lasts at most 24h" in p.message


@pytest.mark.parametrize(("old", "new", "key"), [
    ("users: 2", "users: true", "load.users"),
    ("latency_ms: 100", "latency_ms: false", "phases[1].faults[0].latency_ms"),
    ("users: 2", "users: 2\n  spawn_rate: true", "load.spawn_rate"),
    ("users: 2", "users: 2\n  shape: {type: step, levels: [1, true], every: 1s}", "load.shape.levels[1]"),
    ("{max: 100}", "{max: true}", "steady_state.slo.p95_ms.max"),
])
def test_a_boolean_is_not_a_number(files, old, new, key):
    text = EXPERIMENT.replace(old, new)
    [p] = problems(files(text))
    assert p.key == key and "expected a number, got" in p.message


@pytest.mark.parametrize(("slo", "key", "words"), [
    ("{p95_ms: {max: -1}}", "steady_state.slo.p95_ms", "must not be negative"),
    ("{p95_ms: {max: 100}, error_rate: {max: -1e9}}", "steady_state.slo.error_rate", "must not be negative"),
    ("{p95_ms: {max: 100}, error_rate: {max: 2}}", "steady_state.slo.error_rate", "from 0 to 1"),
    ("{p95_ms: {max: 100, min: 200}}", "steady_state.slo.p95_ms", "min is above max"),
    ("{rps: {min: -5}}", "steady_state.slo.rps", "must not be negative"),
])
def test_impossible_slo_bounds_are_refused(files, slo, key, words):
    text = EXPERIMENT.replace("{p95_ms: {max: 100}}", slo)
    [p] = problems(files(text))
    assert p.key == key and words in p.message and p.line == line_of(text, "slo:")


def test_negative_stop_condition_is_refused(files):
    text = EXPERIMENT + "stop_when:\n  - {error_rate: {above: -1}}\n"
    [p] = problems(files(text))
    assert (p.key, p.line) == ("stop_when[0].error_rate", line_of(text, "above"))


@pytest.mark.parametrize(("old", "new", "words"), [
    ("users: 2", "users: 20000", "at most 10000"),
    ("users: 2", "users: 2\n  spawn_rate: 1e9", "at most 10000"),
    ("users: 2", "users: 2\n  shape: {type: ramp, from: 1, to: 900000}", "peaks at 900000 users"),
    ("latency_ms: 100", "latency_ms: " + "9" * 400, "at most 3600000"),
    ("{max: 100}", "{max: " + "9" * 400 + "}", "too large"),
    ("users: 2", "users: 5000", None),
])
def test_counts_have_upper_bounds(files, old, new, words):
    text = EXPERIMENT.replace(old, new)
    if words is None:
        assert load_experiment(files(text)).experiment.load.users == 5000
        return
    [p] = problems(files(text))
    assert words in p.message


def test_traffic_spike_cannot_take_the_load_past_its_bound(files):
    text = EXPERIMENT.replace("users: 2", "users: 5000").replace(
        "{type: latency, edge: frontend->backend, latency_ms: 100}", "{type: traffic_spike, factor: 1000}")
    [p] = problems(files(text))
    assert "peaks at 5000000 users" in p.message


# ---------------------------------------------------------------- messages in the user's words
@pytest.mark.parametrize(("old", "new", "words"), [
    ("  - {name: baseline, duration: 5s}", "  - 5", "expected a mapping with name and duration, got a number"),
    ("{type: latency, edge: frontend->backend, latency_ms: 100}", "latency",
     "expected a mapping with type (latency, bandwidth, timeout or "
     f"{len(FaultSpec.MODELS) - 3} more) and its settings, got 'latency'"),
    ("{p95_ms: {max: 100}}", "{p95_ms: 100}",
     "expected a mapping of max, min, baseline_ratio or baseline_delta, got a number"),
    ("users: 2", "users: [2]", "expected an integer, got a list"),
    ("name: unit", "name: [unit]", "expected text, got a list"),
])
def test_type_errors_say_what_was_expected(files, old, new, words):
    text = EXPERIMENT.replace(old, new)
    [p] = problems(files(text))
    assert words in p.message
    assert "Input should" not in p.message and "instance of" not in p.message


# ---------------------------------------------------------------- --set and several files
def test_set_errors_name_the_set_argument(files):
    path = files(EXPERIMENT)
    [p] = problems(path, ["loadd.users=5"])
    assert p.file == "--set loadd.users=5" and p.line is None and p.key == "loadd"
    [p] = problems(path, ["load.target=nowhere"])
    assert p.file == "--set load.target=nowhere" and "no service 'nowhere'" in p.message
    [p] = problems(path, ["load.users=&a [1, *a]"])
    assert p.file == "--set load.users=&a [1, *a]" and "recursive alias" in p.message
    [p] = problems(path, ["phases.99999999999999999999.name=x"])
    assert p.file.startswith("--set") or p.file == "--set"


def test_validate_gives_each_file_its_verdict(files, write, tmp_path):
    good = files(EXPERIMENT)
    bad = write("bad.yaml", EXPERIMENT + "rec: &r [1, *r]\n")
    result = runner.invoke(app, ["validate", str(bad), str(tmp_path / "nope.yaml"), "/dev/zero", str(good)])
    assert result.exit_code == 2
    assert f"ok {good}" in result.output
    assert f"{bad}:{line_of(EXPERIMENT + 'rec: x', 'rec:')}:" in result.output
    assert "no such file" in result.output and "character device" in result.output
    assert "Traceback" not in result.output and "bug in aichaos" not in result.output


def test_hostile_files_stay_within_time_and_memory(tmp_path):
    """The worst cases in a process of their own, under a 1 GiB address-space limit and a deadline."""
    write = lambda name, text: (tmp_path / name).write_text(text)  # noqa: E731
    write("stack.yaml", STACK)
    cases = {
        "bomb.yaml": EXPERIMENT + bomb(10, 12),
        "rec.yaml": EXPERIMENT + "rec: &r [1, *r]\n",
        "deep.yaml": EXPERIMENT + "deep: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "wide.yaml": "x: [" + ", ".join(["1"] * 300_000) + "]\n",
        "long.yaml": EXPERIMENT + f"x: &x {'y' * 1_000_000}\n",
        "dur.yaml": EXPERIMENT.replace("duration: 5s}", "duration: 99999999999h}"),
    }
    for name, text in cases.items():
        write(name, text)
    code = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from aichaos.cli.app import main
        sys.argv = ["aichaos", "validate", *sys.argv[1:]]
        main()
    """)
    paths = [str(tmp_path / name) for name in cases]
    result = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert {line.split(":")[1].strip() for line in errors} >= set(paths), result.stderr
    assert all(line.split(":")[2].isdigit() for line in errors), result.stderr


def test_a_file_that_crashes_the_loader_costs_no_other_file_its_verdict(files, write, monkeypatch):
    import aichaos.experiment.loader as loader

    good = files(EXPERIMENT)
    cursed = write("cursed.yaml", EXPERIMENT)
    real = loader.load_experiment

    def load(path, overrides=None):
        if str(path) == str(cursed):
            raise RecursionError("maximum recursion depth exceeded")
        return real(path, overrides)

    monkeypatch.setattr(loader, "load_experiment", load)
    result = runner.invoke(app, ["validate", str(cursed), str(good)])
    assert result.exit_code == 2
    assert f"ok {good}" in result.output
    assert f"{cursed}: could not be checked (RecursionError" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_stack_path_with_a_nul_character_is_refused_at_its_line(files):
    """Found by the property test: it reached the file system and read as a bug in aichaos."""
    text = EXPERIMENT.replace("stack: stack.yaml", 'stack: "stack\\0.yaml"')
    (problem,) = problems(files(text))
    assert problem.key == "stack" and "NUL" in problem.message
    assert problem.line == line_of(text, "stack:")
