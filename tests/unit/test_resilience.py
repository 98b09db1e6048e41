"""The gateway's batcher, circuit breaker and retry budget, driven with a fake clock."""

from __future__ import annotations

import random
import threading
import time

import pytest

from sample_stack.batcher import Batcher, DeadlineExceeded, QueueFull
from sample_stack.resilience import BreakerState, CircuitBreaker, RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_recovers_through_half_open():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=2.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 1.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # one trial call
    assert not breaker.allow()  # and only one
    breaker.record_failure()  # the trial failed: open again
    assert breaker.state is BreakerState.OPEN and breaker.opened_count == 2
    clock.now += 2.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_retry_budget_caps_retries_to_a_share_of_requests():
    clock = Clock()
    budget = RetryBudget(ratio=0.1, window=10, min_retries=2, max_retries=5, clock=clock)
    for _ in range(100):
        budget.record_request()
    granted = sum(budget.try_retry(1) for _ in range(50))
    assert granted == 12  # 2 + 0.1 × 100
    clock.now += 10.5  # the window slides: old requests and retries no longer count
    assert budget.try_retry(1)
    assert not budget.try_retry(6)  # past max_retries regardless of budget


def test_backoff_is_jittered_and_bounded():
    budget = RetryBudget(base_backoff=0.1, max_backoff=0.3, rng=random.Random(3))
    waits = [budget.backoff(3) for _ in range(1000)]
    assert all(0 <= w <= 0.3 for w in waits)
    assert len({round(w, 6) for w in waits}) > 900  # jitter, not a fixed sleep
    assert max(budget.backoff(1) for _ in range(1000)) <= 0.1


def test_batcher_groups_concurrent_requests():
    sizes: list[int] = []

    def run(items):
        sizes.append(len(items))
        time.sleep(0.02)
        return [x * 2 for x in items]

    batcher = Batcher(run, max_batch=8, max_wait=0.05, max_queue=64)
    results: dict[int, int] = {}

    def call(i: int) -> None:
        results[i] = batcher.submit(i, timeout=5)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.stop()
    assert results == {i: i * 2 for i in range(32)}
    assert max(sizes) == 8 and sum(sizes) == 32
    assert len(sizes) < 32 / 2  # batched, not one by one


def test_batcher_full_queue_refuses_at_once():
    gate = threading.Event()

    def run(items):
        gate.wait(5)
        return items

    batcher = Batcher(run, max_batch=1, max_wait=0, max_queue=2)
    workers = [threading.Thread(target=lambda: batcher.submit(1, timeout=5)) for _ in range(3)]
    for w in workers:
        w.start()
        time.sleep(0.05)  # one running, two queued
    started = time.monotonic()
    with pytest.raises(QueueFull):
        batcher.submit(1, timeout=5)
    assert time.monotonic() - started < 0.5
    gate.set()
    for w in workers:
        w.join()
    batcher.stop()


def test_batcher_deadline_and_expired_jobs_are_skipped():
    seen: list[int] = []
    gate = threading.Event()

    def run(items):
        seen.extend(items)
        gate.wait(5)
        return items

    batcher = Batcher(run, max_batch=1, max_wait=0, max_queue=8)
    first = threading.Thread(target=lambda: batcher.submit(1, timeout=5))
    first.start()
    time.sleep(0.05)
    with pytest.raises(DeadlineExceeded):
        batcher.submit(2, timeout=0.1)  # waits behind the first, gives up
    gate.set()
    first.join()
    time.sleep(0.1)
    batcher.stop()
    assert seen == [1]  # the abandoned request never reached the model
    assert batcher.expired == 1


def test_batcher_error_reaches_every_request_in_the_batch():
    def run(items):
        raise RuntimeError("boom")

    batcher = Batcher(run, max_batch=4, max_wait=0.01)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit(1, timeout=2)
    batcher.stop()
