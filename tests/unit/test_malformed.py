"""Generated malformed experiment files: `aichaos validate` exits 2 naming file and line, never a traceback."""

from __future__ import annotations

import random
import re

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
