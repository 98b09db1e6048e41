"""Dynamic batching: requests wait at most ``max_wait`` for company, up to ``max_batch`` per batch.

The queue is bounded: when it is full a request is refused at once (the server answers 503)
rather than piling up. Each request has a deadline; one that expires while queued is dropped
before inference, so a backlog cannot make the model work for clients that already gave up.

Results reach waiters through ``deliver``, called once per batch on the batcher's thread. The
default resolves each job's ``concurrent.futures.Future``; an asyncio server passes its own so
that a whole batch wakes its event loop once (one ``call_soon_threadsafe`` per batch rather than
one per request, which at 32 clients was most of the loop's overhead).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol


class Waiter(Protocol):
    """What a job's result goes to: a ``concurrent.futures.Future`` or an ``asyncio.Future``."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class QueueFull(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


@dataclass
class Job:
    payload: Any
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    future: Waiter = field(default_factory=Future)
    abandoned: bool = False

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


BatchFn = Callable[[Sequence[Any]], Sequence[Any]]
# deliver(jobs, results, error): exactly one of results and error is given
DeliverFn = Callable[[Sequence[Job], Sequence[Any] | None, BaseException | None], None]


def finish_each(jobs: Sequence[Job], results: Sequence[Any] | None, error: BaseException | None) -> None:
    """The default delivery: resolve every job's future on the calling thread."""
    if error is not None:
        for job in jobs:
            job.finish(error=error)
        return
    assert results is not None
    for job, result in zip(jobs, results, strict=True):
        job.finish(result)


class Batcher:
    def __init__(self, run_batch: BatchFn, *, max_batch: int = 32, max_wait: float = 0.005,
                 max_queue: int = 256, on_batch: Callable[[int, float], None] | None = None,
                 deliver: DeliverFn = finish_each) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self.deliver = deliver
        self.expired = 0
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._stopped = False
        self._thread.start()

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def enqueue(self, payload: Any, timeout: float, future: Waiter | None = None) -> Job:
        """Queue ``payload``; its ``future`` (a new concurrent Future unless given) resolves with the
        result or the batch's error. Raises QueueFull at once when the queue is full. Set
        ``abandoned`` on a job nobody waits for."""
        job = Job(payload, deadline=time.monotonic() + timeout)
        if future is not None:
            job.future = future
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"queue full ({self.queue.maxsize} waiting)") from None
        return job

    def submit(self, payload: Any, timeout: float) -> Any:
        """Run ``payload`` in a batch and wait; raises QueueFull, DeadlineExceeded or the batch's error."""
        future: Future[Any] = Future()
        job = self.enqueue(payload, timeout, future)
        try:
            return future.result(timeout)
        except FutureTimeout:
            job.abandoned = True
            raise DeadlineExceeded(f"no answer within {timeout:g}s") from None

    def _collect(self, first: Job) -> list[Job]:
        batch = [first]
        until = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = until - time.monotonic()
            try:
                job = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._stopped = True
                break
            batch.append(job)
        return batch

    def _loop(self) -> None:
        while not self._stopped:
            first = self.queue.get()
            if first is None:
                return
            batch = self._collect(first)
            now = time.monotonic()
            live = [job for job in batch if not job.abandoned and job.deadline > now]
            if len(live) < len(batch):
                expired = [job for job in batch if job not in live]
                self.expired += len(expired)
                self.deliver(expired, None, DeadlineExceeded("deadline passed while queued"))
            if not live:
                continue
            started = time.perf_counter()
            try:
                results = self.run_batch([j.payload for j in live])
            except BaseException as exc:  # the batch fails, every request in it learns why
                self.deliver(live, None, exc)
                continue
            elapsed = time.perf_counter() - started
            if self.on_batch is not None:
                self.on_batch(len(live), elapsed)
            self.deliver(live, results, None)

    def stop(self) -> None:
        self._stopped = True
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(5)
