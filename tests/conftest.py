from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI explores the same examples on every run (a red CI must mean a regression, not a new draw);
# by hand, each run draws new ones and may find new bugs
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own XDG state directory (the index of live runs), inherited by the aichaos processes it
    starts: never the real home's."""
    path = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    return path


@pytest.fixture
def write(tmp_path: Path):
    """Write a file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write


STACK = """\
services:
  backend:
    command: [python, -m, sample_stack.echo, backend, --port, "{port}"]
    ready: {http: /health}
  frontend:
    command: [python, -m, sample_stack.echo, frontend, --port, "{port}"]
    ready: {http: /health}
    depends_on:
      backend: {env: BACKEND_URL, scheme: http}
"""

EXPERIMENT = """\
version: 1
name: unit
stack: stack.yaml
load:
  target: frontend
  users: 2
  requests:
    - {name: work, method: POST, path: /work, json: {text: "{{ words(5) }}"}}
steady_state:
  slo: {p95_ms: {max: 100}}
phases:
  - {name: baseline, duration: 5s}
  - name: fault
    duration: 5s
    faults:
      - {type: latency, edge: frontend->backend, latency_ms: 100}
"""


@pytest.fixture
def files(write):
    """Write the unit stack, and return a function that writes an experiment beside it."""
    write("stack.yaml", STACK)
    return lambda text: write("exp.yaml", text)


def problems(path, overrides=None):
    """The problems loading ``path`` (with ``overrides``) reports; fails when it loads."""
    from aichaos.errors import ExperimentError
    from aichaos.experiment.loader import load_experiment

    with pytest.raises(ExperimentError) as info:
        load_experiment(path, overrides)
    return info.value.problems


def line_of(text: str, needle: str) -> int:
    """The 1-based line of ``text`` holding ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)
