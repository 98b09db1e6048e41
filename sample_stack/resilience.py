"""The gateway's resilience pieces: a retry budget with jittered backoff and a circuit breaker.

Both are plain, thread-safe objects with an injectable clock so that unit tests can drive time.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import Enum

Clock = Callable[[], float]


class RetryBudget:
    """Retries may add at most ``ratio`` × the requests of the last ``window`` seconds (plus
    ``min_retries`` per window), so a slow dependency cannot turn into a retry storm.
    Each request may retry at most ``max_retries`` times, waiting a jittered exponential backoff."""

    def __init__(self, *, ratio: float = 0.2, window: float = 10.0, min_retries: int = 3, max_retries: int = 2,
                 base_backoff: float = 0.025, max_backoff: float = 0.5, clock: Clock = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.ratio, self.window, self.min_retries = ratio, window, min_retries
        self.max_retries, self.base_backoff, self.max_backoff = max_retries, base_backoff, max_backoff
        self.clock = clock
        self.rng = rng or random.Random()
        self._lock = threading.Lock()
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        for q in (self._requests, self._retries):
            while q and q[0] <= now - self.window:
                q.popleft()

    def record_request(self) -> None:
        with self._lock:
            now = self.clock()
            self._trim(now)
            self._requests.append(now)

    def try_retry(self, attempt: int) -> bool:
        """May attempt number ``attempt`` (1 = first retry) go ahead? Spends budget if so."""
        if attempt > self.max_retries:
            return False
        with self._lock:
            now = self.clock()
            self._trim(now)
            allowed = self.min_retries + self.ratio * len(self._requests)
            if len(self._retries) + 1 > allowed:
                return False
            self._retries.append(now)
            return True

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base × 2^(attempt-1))]."""
        return self.rng.uniform(0, min(self.max_backoff, self.base_backoff * 2 ** (attempt - 1)))


class BreakerState(int, Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``cooldown`` seconds lets one trial call
    through (half-open); the trial's success closes it, its failure opens it again."""

    def __init__(self, *, failures: int = 5, cooldown: float = 2.0, clock: Clock = time.monotonic) -> None:
        self.threshold, self.cooldown, self.clock = failures, cooldown, clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._advance()
            return self._state

    def _advance(self) -> None:
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.cooldown:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = False

    def allow(self) -> bool:
        with self._lock:
            self._advance()
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._state = BreakerState.CLOSED
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._state is BreakerState.HALF_OPEN or (
                    self._state is BreakerState.CLOSED and self._consecutive >= self.threshold):
                self._state = BreakerState.OPEN
                self._opened_at = self.clock()
                self._trial_in_flight = False
                self.opened_count += 1
