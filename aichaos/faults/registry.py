"""The fault registry: from a fault's ``type`` to its kind, and from an undo record's ``kind`` to the
function that reverts it.

A fault kind says what a fault targets (an edge, a service, a container, the load plan), how it is
checked against the stack and the run before anything starts, and how it is applied. Applying it
gives an :class:`~aichaos.faults.base.AppliedFault` that reverts itself within the run, and, where a
run killed with ``kill -9`` would leave something behind, an undo record: a plain dict whose
``kind`` names an undoer registered here, so that ``aichaos cleanup`` reverts it without guessing.

Adding a fault type takes two files: its model (a ``FaultSpec`` subclass in
``aichaos/experiment/model.py``) and a module in ``aichaos/faults/`` that defines its kind with
``@register_fault`` (and any undoer with ``@register_undo``). The modules of this package are found
and imported the first time the registry is asked, so nothing else needs to list them.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from aichaos.errors import UsageError
from aichaos.experiment.model import FaultSpec
from aichaos.experiment.stack import Stack

if TYPE_CHECKING:
    from aichaos.faults.base import AppliedFault
    from aichaos.proxy.client import ToxiproxyClient
    from aichaos.runtime.base import Runtime, StackHandle

Target = Literal["edge", "service", "container", "load"]


@dataclass
class FaultContext:
    """What applying a fault may use: the run's proxy client, runtime and stack."""

    client: ToxiproxyClient
    runtime: Runtime
    handle: StackHandle
    stack: Stack
    log_dir: Path
    save_state: Callable[[], None]  # records new pids (a restarted service) in the state file
    helpers: dict[str, int]  # the state file's helper processes (co-tenants), by label
    expected_down: set[str] = field(default_factory=set)  # services down on purpose: not watched


@dataclass(frozen=True)
class RunCheck:
    """What the run knows before it starts anything, for a fault to refuse what cannot run."""

    capabilities: frozenset[str]  # of the chosen runtime (see aichaos.runtime.registry)
    runtime: str
    allow_external: bool
    # the fault proxy, once it is known (the run checks again right after it starts, before the stack):
    # its kind (aichaos.proxy.backend.ProxyBackend.kind) and the version it reports
    proxy: str | None = None
    proxy_version: str = ""


class Closeable(ABC):
    """Something a fault kind starts before the load (a probe), stopped at teardown."""

    @abstractmethod
    def stop(self) -> None: ...


class FaultKind(ABC):
    """How one fault type is checked, applied and reverted. Subclass, set ``model`` and ``target``,
    implement ``apply``, decorate with ``@register_fault``."""

    model: ClassVar[type[FaultSpec]]
    target: ClassVar[Target]

    def check_stack(self, fault: Any, stack: Stack) -> Iterator[tuple[str, str]]:
        """Problems of ``fault`` against the stack, as (key, message); the loader adds file and line.

        The default checks that the edge or service the fault names is in the stack."""
        if self.target == "edge" and fault.edge not in stack.edges:
            hint = _close(fault.edge, stack.edges) or f"; edges: {', '.join(stack.edges) or 'none'}"
            yield "edge", f"no edge {fault.edge!r} in the stack{hint}"
        service = getattr(fault, "service", None) if self.target in ("service", "container") else None
        if service is not None and service not in stack.services:
            hint = _close(service, list(stack.services)) or f"; services: {', '.join(stack.services)}"
            yield "service", f"no service {service!r} in the stack{hint}"

    def check_run(self, fault: Any, run: RunCheck) -> None:
        """Refuse, with a UsageError, a fault that this run cannot inject (checked before it starts)."""
        return None

    def before_load(self, fault: Any, ctx: FaultContext, scrapes: Any) -> Closeable | None:
        """Anything to start once the stack is up and before the load (e.g. a reference probe)."""
        return None

    @abstractmethod
    def apply(self, fault: Any, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        """Inject ``fault``; the AppliedFault reverts it. Raises FaultInjectionError when it cannot."""


def _close(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# ------------------------------------------------------------------ registration
_KINDS: dict[str, FaultKind] = {}
Undoer = Callable[[dict[str, Any], "UndoContext"], str]
_UNDOERS: dict[str, Undoer] = {}
_discovered = False
K = TypeVar("K", bound=type[FaultKind])


def register_fault(cls: K) -> K:
    """Class decorator: make ``cls`` the kind of its model's fault type."""
    name = cls.model.type_name()
    if name in _KINDS and type(_KINDS[name]) is not cls:
        raise RuntimeError(f"fault type {name!r} is registered twice ({type(_KINDS[name]).__name__}, {cls.__name__})")
    _KINDS[name] = cls()
    return cls


def register_undo(kind: str) -> Callable[[Undoer], Undoer]:
    """Decorator: the function that reverts undo records of ``kind`` (after a ``kill -9``)."""

    def decorate(fn: Undoer) -> Undoer:
        _UNDOERS[kind] = fn
        return fn

    return decorate


def undo_record(kind: str, **fields: Any) -> dict[str, Any]:
    """An undo record for the state file: ``kind`` names its undoer."""
    return {"kind": kind, **fields}


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import aichaos.faults as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    _discovered = True


def kinds() -> dict[str, FaultKind]:
    """Every registered fault kind, by type."""
    _discover()
    return dict(_KINDS)


def kind_of(fault: FaultSpec | str) -> FaultKind:
    """The kind of a fault (or of a type name)."""
    _discover()
    name = fault if isinstance(fault, str) else type(fault).type_name()
    try:
        return _KINDS[name]
    except KeyError:
        raise UsageError(f"fault type {name!r} has no registered kind") from None


@dataclass(frozen=True)
class UndoContext:
    """What an undoer may consult: whether a pid is still the process the run recorded."""

    is_ours: Callable[[int], bool]


def revert_undo(record: dict[str, Any], ctx: UndoContext) -> str:
    """Revert one undo record; says what was done (or why it could not be)."""
    _discover()
    kind = record.get("kind")
    undoer = _UNDOERS.get(kind) if isinstance(kind, str) else None
    if undoer is None:
        return f"could not revert {record}: no undoer for kind {kind!r} (written by another version of aichaos?)"
    return undoer(record, ctx)


def check_faults(phases: list[Any], run: RunCheck) -> None:
    """Each fault's ``check_run``, before anything starts."""
    for phase in phases:
        for fault in phase.faults:
            try:
                kind_of(fault).check_run(fault, run)
            except UsageError as exc:
                raise UsageError(f"phases.{phase.name}: {fault.type} {exc.message}", hint=exc.hint) from exc
