"""The runtime registry: every runtime by name, and the choice ``auto`` makes.

A runtime kind knows whether it can run a stack, whether it is available here, what options it
refuses, how to open a runtime for one run, and what ``aichaos cleanup`` must do for a run of its
that was killed. The experiment model, the CLI's choices, the state file and cleanup all read this
table; the run loop never branches on a runtime's name.

Adding a runtime takes its module (a ``RuntimeKind`` and a ``Runtime``) and one line in ``_TABLE``.
Modules are imported only when a runtime is asked for, so ``aichaos --help`` imports none of them.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from aichaos.errors import UsageError

if TYPE_CHECKING:
    from aichaos.experiment.stack import Stack
    from aichaos.runtime.base import Runtime

# name -> "module:class"; the order is auto's preference. Hidden ones are not offered to users.
_TABLE: dict[str, str] = {
    "docker": "aichaos.runtime.docker:DockerKind",
    "local": "aichaos.runtime.local:LocalKind",
    "external": "aichaos.runtime.external:ExternalKind",
    "fake": "aichaos.runtime.fake:FakeKind",
}
HIDDEN = frozenset({"fake"})  # the in-package fake for unit tests
RUNTIME_NAMES: tuple[str, ...] = tuple(n for n in _TABLE if n not in HIDDEN)
RUNTIME_CHOICES: tuple[str, ...] = ("auto", *RUNTIME_NAMES)  # what an experiment and --runtime accept


@dataclass(frozen=True)
class RuntimeSetup:
    """What a runtime is opened with for one run."""

    run_id: str
    run_dir: Path
    stack: Stack
    stack_dir: Path
    stack_name: str = "stack"
    build_args: dict[str, str] = field(default_factory=dict)
    network: str | None = None  # overrides the stack file's network, where the runtime has networks
    toxiproxy_url: str | None = None


class RuntimeKind(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]  # what auto says it is using: "local processes", "containers"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def unsuitable(self, stack: Stack) -> str | None:
        """Why this runtime cannot run ``stack`` (auto skips it and says so), or None."""
        return None

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here now (auto skips it and says so), or None."""
        return None

    def require(self) -> None:
        """Raise an EnvironmentFailure when asked for by name and not available here."""
        return None

    def check(self, setup: RuntimeSetup) -> None:
        """Refuse, with a UsageError, options this runtime cannot run (before anything starts)."""
        return None

    @abstractmethod
    def open(self, setup: RuntimeSetup) -> Runtime:
        """A runtime for one run; nothing is started yet (``Runtime.prepare`` does that)."""

    def clean(self, run_id: str) -> list[str]:
        """After a ``kill -9``: remove what this runtime made for the run beyond the processes the
        state file names. Says what was done."""
        return []


def runtime_kind(name: str) -> RuntimeKind:
    try:
        module, _, attr = _TABLE[name].partition(":")
    except KeyError:
        raise UsageError(f"no runtime {name!r}; runtimes: {', '.join(RUNTIME_CHOICES)}") from None
    kind: RuntimeKind = getattr(importlib.import_module(module), attr)()
    return kind


def choose_runtime(requested: str, stack: Stack, report: Callable[[str], None]) -> RuntimeKind:
    """The runtime named, or for ``auto`` the first in order of preference that can run the stack here."""
    if requested != "auto":
        kind = runtime_kind(requested)
        kind.require()
        return kind
    kinds = [runtime_kind(n) for n in RUNTIME_NAMES]
    skipped: list[str] = []
    for kind in kinds:
        why = kind.unsuitable(stack)
        if why is None and (why := kind.unavailable()) is None:
            said = f"; {'; '.join(skipped)}" if skipped else ""
            report(f"runtime auto: using {kind.summary}{said}")
            return kind
        skipped.append(f"not {kind.name}: {why}")
    raise UsageError("runtime auto: no runtime can run this stack here (" + "; ".join(skipped) + ")")
