"""Generated malformed experiment files: `aichaos validate` exits 2 naming file and line, never a traceback."""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import socket
import time

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aichaos.cli.app import app
from tests.conftest import EXPERIMENT, STACK

runner = CliRunner()
BASE = yaml.safe_load(EXPERIMENT)

scalars = st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats(allow_nan=True) | st.text(max_size=12)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                      max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated_documents(draw) -> str:
    """The valid experiment with one to three mutations: a value replaced, a key renamed or dropped,
    a key added; or the text itself cut or corrupted."""
    doc = yaml.safe_load(EXPERIMENT)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
        except (KeyError, IndexError, TypeError):
            continue
        last = path[-1]
        if not isinstance(parent, dict | list):
            continue
        action = draw(st.sampled_from(["replace", "rename", "drop", "add"]))
        try:
            if action == "replace":
                parent[last] = draw(values)
            elif action == "rename" and isinstance(parent, dict) and last in parent:
                parent[draw(st.text(min_size=1, max_size=10))] = parent.pop(last)
            elif action == "drop" and isinstance(parent, dict):
                parent.pop(last, None)
            elif action == "add" and isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    corruption = draw(st.sampled_from(["none", "none", "cut", "garbage", "indent"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    if corruption == "cut":
        text = text[: rng.randrange(1, len(text))]
    elif corruption == "garbage":
        at = rng.randrange(len(text))
        junk = draw(st.sampled_from([":", "- ", "{", "]", "\t", "'", "&a", "*b", "!!python/object x", "\x00"]))
        text = text[:at] + junk + text[at:]
    elif corruption == "indent":
        lines = text.splitlines()
        i = rng.randrange(len(lines))
        lines[i] = "   " + lines[i]
        text = "\n".join(lines)
    return text


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(text=mutated_documents())
def test_malformed_experiments_exit_2_with_file_and_line(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("m")
    (folder / "stack.yaml").write_text(STACK)
    path = folder / "exp.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["validate", str(path)])
    if result.exit_code == 0:
        return  # the mutations happened to keep it valid (e.g. a value replaced by an equal one)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors, result.output
    for line in errors:
        # every problem names the file and a line (a --set would name itself instead)
        assert re.match(rf"error: {re.escape(str(path))}:\d+", line) or \
            re.match(rf"error: {re.escape(str(folder / 'stack.yaml'))}:\d+", line), line


# ---------------------------------------------------------------- structurally hostile input (issue 15)
# Beside the value mutations above: aliases, nesting, encodings, paths that are not files, huge and
# impossible numbers, in the file or in a --set. Each case runs under a deadline and a memory ceiling.
PLACEHOLDER = "__HOSTILE__"
CASE_SECONDS = 5.0
CASE_MEMORY = 256 * 1024  # KiB of peak RSS a case may add

FULL = yaml.safe_load(EXPERIMENT)  # every numeric key the generator aims at, set to a valid value
FULL["load"].update(spawn_rate=2, timeout="10s")
FULL["steady_state"].update(window="5s", min_requests=5)
FULL["steady_state"]["slo"]["error_rate"] = {"max": 0.01}
FULL["gates"] = {"recovery_time": {"max": "15s"}}
FULL["stop_when"] = [{"error_rate": {"above": 0.5}}]

COUNTS = [("load", "users"), ("load", "spawn_rate"), ("steady_state", "min_requests"),
          ("phases", 1, "faults", 0, "latency_ms")]
DURATIONS = [("load", "timeout"), ("steady_state", "window"), ("phases", 0, "duration"), ("phases", 1, "duration"),
             ("gates", "recovery_time", "max")]
BOUNDS = [("steady_state", "slo", "p95_ms", "max"), ("steady_state", "slo", "error_rate", "max"),
          ("stop_when", 0, "error_rate", "above")]
huge = st.integers(20, 600).map(lambda n: "9" * n)
negative = st.sampled_from(["-1", "-1e9", "-0.5", "-" + "9" * 30, "-.inf"])
everywhere = st.sampled_from(["true", "false", ".inf", ".nan", "[1]", "{a: 1}"])
INVALID = {  # values that no key of the kind may take
    "count": huge | negative | everywhere | st.sampled_from(["1e12", "1.0e+12"]),
    "duration": huge | negative | everywhere | st.sampled_from(
        ["99999999999h", "1h2h", "30m1h", "1s1s", "25h", "86401", "9" * 400 + "s", "1e400s", "5 x"]),
    "bound": negative | everywhere | st.sampled_from(["1e400", "9" * 400]),
}


def _set(doc, path, value):
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def _dump(doc) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10**9)


@st.composite
def structures(draw) -> str:
    """A YAML fragment that must be refused wherever it stands."""
    kind = draw(st.sampled_from(["bomb", "recursive", "nesting", "nesting", "alias_nesting"]))
    if kind == "bomb":  # width ** depth past 100,000 values
        width = draw(st.integers(2, 12))
        depth = next(d for d in range(2, 40) if width**d > 100_000) + draw(st.integers(0, 3))
        parts = [f"&a0 [{', '.join(['x'] * width)}]"]
        parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
        return "[" + ", ".join(parts) + "]"
    if kind == "recursive":
        return draw(st.sampled_from(["&r [1, *r]", "&r {a: *r}", "&r [[[*r]]]", "&r {a: [1, {b: *r}]}"]))
    if kind == "nesting":
        n = draw(st.integers(65, 3000))
        opener = draw(st.sampled_from(["[", "{a: ", "[{a: "]))
        closer = {"[": "]", "{a: ": "}", "[{a: ": "}]"}[opener]
        return opener * n + "1" + closer * n
    # each anchor nests 30 deep around the previous one: shallow in the file, deep once expanded
    fragment = "&b0 " + "[" * 30 + "]" * 30
    for i in range(1, draw(st.integers(3, 6))):
        fragment = f"[{fragment}, &b{i} " + "[" * 30 + f"*b{i - 1}" + "]" * 30 + "]"
    return fragment


@st.composite
def hostile_cases(draw):
    """(kind, file bytes or a special path, --set arguments, key expected in the message or None)."""
    kind = draw(st.sampled_from(["number", "number", "structure", "encoding", "not_a_file", "set_number",
                                 "set_structure"]))
    doc = yaml.safe_load(_dump(FULL))
    if kind in ("number", "set_number"):
        family = draw(st.sampled_from(sorted(INVALID)))
        path = draw(st.sampled_from({"count": COUNTS, "duration": DURATIONS, "bound": BOUNDS}[family]))
        value = draw(INVALID[family])
        key = format_key(path)
        if kind == "set_number":
            return kind, _dump(FULL).encode(), [f"{'.'.join(map(str, path))}={value}"], key
        _set(doc, path, PLACEHOLDER)
        return kind, _dump(doc).replace(PLACEHOLDER, value).encode(), [], key
    if kind in ("structure", "set_structure"):
        fragment = draw(structures())
        path = draw(st.sampled_from(PATHS))
        if kind == "set_structure":
            return kind, _dump(FULL).encode(), [f"{'.'.join(map(str, path))}={fragment}"], None
        _set(doc, path, PLACEHOLDER)
        return kind, _dump(doc).replace(PLACEHOLDER, fragment).encode(), [], None
    if kind == "encoding":
        text = _dump(doc).replace("name: unit", "name: unité")
        how = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "bad_byte"]))
        if how != "bad_byte":
            return kind, text.encode(how), [], None
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80\x80"]))
        return kind, raw[:at] + junk + raw[at:], [], None
    return kind, draw(st.sampled_from(["fifo", "/dev/zero", "/dev/urandom", "directory", "socket", "symlink",
                                       "oversize"])), [], None


def format_key(path) -> str:
    from aichaos.experiment.yamlpos import format_path

    return format_path(path)


class _Deadline(Exception):
    pass


def _on_deadline(signum, frame):
    raise _Deadline(f"a case ran past {CASE_SECONDS * 2}s")


def _place(folder, kind, content) -> str:
    """Write the case under ``folder``; return the path to validate."""
    path = folder / "exp.yaml"
    if kind != "not_a_file":
        path.write_bytes(content)
    elif content == "fifo":
        os.mkfifo(path)
    elif content == "directory":
        path.mkdir()
    elif content == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()  # the socket file stays
    elif content == "symlink":
        path.symlink_to("/dev/zero")
    elif content == "oversize":
        with path.open("wb") as f:
            f.truncate(64 * 1024**3)  # sparse
    else:
        return content
    return str(path)


def test_hostile_settings_start_from_a_valid_experiment(tmp_path):
    (tmp_path / "stack.yaml").write_text(STACK)
    (tmp_path / "exp.yaml").write_text(_dump(FULL))
    result = runner.invoke(app, ["validate", str(tmp_path / "exp.yaml")])
    assert result.exit_code == 0, result.output  # so that every refusal below is the mutation's doing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=hostile_cases())
def test_hostile_input_is_refused_in_bounded_time_and_memory(tmp_path_factory, case):
    kind, content, overrides, key = case
    folder = tmp_path_factory.mktemp("h")
    (folder / "stack.yaml").write_text(STACK)
    path = _place(folder, kind, content)
    args = ["validate", path] + [a for o in overrides for a in ("--set", o)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    previous = signal.signal(signal.SIGALRM, _on_deadline)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS * 2)
    started = time.monotonic()
    try:
        result = runner.invoke(app, args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.monotonic() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert elapsed < CASE_SECONDS, f"{elapsed:.1f}s"
    assert grown < CASE_MEMORY, f"peak memory grew by {grown} KiB"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output  # every case is clearly invalid
    assert "Traceback" not in result.output and "bug in aichaos" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors, result.output
    for line in errors:
        if overrides:
            assert line.startswith(f"error: --set {overrides[0]}"), line
        elif kind == "not_a_file":
            assert line.startswith(f"error: {path}: "), line
        else:
            assert re.match(rf"error: {re.escape(path)}:\d+: ", line), line
    if key is not None:
        parent = key.rsplit(".", 1)[0] if key.endswith((".max", ".above")) else key
        assert any(parent in line for line in errors), (key, result.output)
