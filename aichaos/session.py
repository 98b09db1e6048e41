"""A run session: everything one run started, torn down in the reverse order of its start.

Each thing the run starts (the runtime's network, the fault proxy, the stack, the scraper, probes,
the load, each fault) is registered here the moment it exists, with the function that stops it.
Teardown stops them last-first on every exit path, records what could not be stopped, and goes on
with the others whatever one of them raises. ``--keep-stack`` leaves the parts that belong to the
stack (and the fault proxy its edges go through) running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aichaos.faults.base import AppliedFault
    from aichaos.proxy.backend import ProxyBackend
    from aichaos.runtime.base import Runtime, StackHandle

log = logging.getLogger(__name__)


class LoadDriver(Protocol):
    """What the run needs of its load (``aichaos.load.generator.LoadGenerator``, or a fake)."""

    log_path: Any
    locust_total: int | None
    collected_total: int | None

    @property
    def pid(self) -> int | None: ...

    def start(self) -> None: ...

    def set_t0(self, t0: float) -> None: ...

    def alive(self) -> bool: ...

    def stop(self, timeout: float = 15.0) -> None: ...


@dataclass
class Part:
    name: str
    stop: Callable[[bool], list[str]] = field(repr=False)  # hurry -> what could not be stopped
    of_stack: bool = False  # left running by --keep-stack


@dataclass
class RunSession:
    """The typed record of what a run started; ``teardown`` undoes it."""

    runtime: Runtime | None = None
    backend: ProxyBackend | None = None
    handle: StackHandle | None = None
    load: LoadDriver | None = None
    applied: list[AppliedFault] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # names, in the order torn down (for tests and logs)

    def started(self, name: str, stop: Callable[[bool], list[str]], *, of_stack: bool = False) -> None:
        """Register something that now exists and how to stop it."""
        self.parts.append(Part(name, stop, of_stack))

    def teardown(self, *, hurry: bool = False, keep_stack: bool = False) -> list[str]:
        """Stop every part, last started first; returns what could not be stopped."""
        leftovers: list[str] = []
        while self.parts:
            part = self.parts.pop()
            if keep_stack and part.of_stack:
                continue
            try:
                leftovers += part.stop(hurry)
            except Exception as exc:  # one part failing to stop must not keep the others running
                log.debug("stopping %s failed", part.name, exc_info=True)
                leftovers.append(f"{part.name} ({getattr(exc, 'message', None) or exc!r})")
            self.stopped.append(part.name)
        return leftovers
