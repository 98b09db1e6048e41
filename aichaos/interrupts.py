"""SIGINT and SIGTERM during a run: raised as ``Interrupted`` in the main thread, at safe points.

While a run is active, the first SIGINT/SIGTERM raises ``Interrupted`` (unless it arrives inside a
``deferred()`` section, such as starting a child and recording its pid, in which case it is raised
when the section ends). Later signals only mark the run as hurried: teardown skips graceful waits
but still reverts every fault.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from aichaos.errors import Interrupted

log = logging.getLogger(__name__)


@dataclass
class SignalGate:
    received: list[str] = field(default_factory=list)
    raising: bool = True
    depth: int = 0
    pending: str | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        if not self.raising:
            log.warning("%s received again: skipping graceful waits, still reverting faults", name)
            return
        if self.depth:
            self.pending = self.pending or name
            return
        self.raising = False
        raise Interrupted(name)

    @property
    def hurried(self) -> bool:
        return len(self.received) > 1


_active: SignalGate | None = None


@contextmanager
def signals_raise() -> Iterator[SignalGate]:
    """Install the gate for the duration of a run; restores the previous handlers after."""
    global _active
    gate = SignalGate()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, gate.handler)
    _active = gate
    try:
        yield gate
    finally:
        _active = None
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def deferred() -> Iterator[None]:
    """A section that an interrupt must not cut in half; the interrupt is raised when it ends."""
    gate = _active
    if gate is None:
        yield
        return
    gate.depth += 1
    try:
        yield
    finally:
        gate.depth -= 1
        if gate.depth == 0 and gate.pending and gate.raising:
            name, gate.pending = gate.pending, None
            gate.raising = False
            raise Interrupted(name)
