"""The run's clock: wall time and sleeping, behind one seam so that unit tests of the run loop can
use a clock that advances only when slept on (``aichaos.runtime.fake``). Everything that stamps the
run's timeline (phases, fault applied/reverted times) reads it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_clock: Clock = SystemClock()


def now() -> float:
    """Wall-clock seconds since the epoch, on the run's clock."""
    return _clock.time()


def sleep(seconds: float) -> None:
    _clock.sleep(seconds)


@contextmanager
def using(clock: Clock) -> Iterator[Clock]:
    """Run with ``clock`` instead of the system's (tests)."""
    global _clock
    before, _clock = _clock, clock
    try:
        yield clock
    finally:
        _clock = before
