"""The load process: Locust drives the target and streams per-second samples as JSON lines.

Run as ``python -m aichaos.load.locust_process``. Locust monkey-patches the process with gevent
(anything importing ``requests`` or the docker SDK first would break), so it never runs inside
aichaos itself. Protocol, one JSON object per line:

- stdin, first line: the load spec (see ``aichaos.load.generator.load_spec``); later lines:
  ``stop`` (or end of input, e.g. when aichaos dies) stops the load and flushes.
- stdout: ``{"type": "ready"}`` once users are spawning; every second
  ``{"type": "samples", "users": N, "buckets": [...]}`` with the partial buckets completed since the
  last line (a bucket is keyed by the second its requests *started*, so one second may arrive in
  several lines: the receiver adds them); at the end ``{"type": "done", "locust_total": N}``.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.socket import wait_read  # noqa: E402
from locust import FastHttpUser, between, constant, events  # noqa: E402
from locust.env import Environment  # noqa: E402

from aichaos.load.templates import compile_template  # noqa: E402
from aichaos.metrics.histogram import bucket_of  # noqa: E402


def classify(exception: BaseException | None, response: Any) -> str:
    status = getattr(response, "status_code", 0) or 0
    if status >= 500:
        return "5xx"
    if status >= 400:
        return "4xx"
    text = f"{type(exception).__name__} {exception}".lower()
    if "timeout" in text or "timed out" in text:
        return "timeout"
    if isinstance(exception, ConnectionError | OSError) or "connection" in text or "refused" in text \
            or "reset" in text or "closed" in text:
        return "connection"
    return "other"


class Collector:
    """Per-second partial buckets, swapped out once a second."""

    def __init__(self) -> None:
        self.buckets: dict[int, dict[str, Any]] = {}
        self.total = 0

    def on_request(self, response_time: float, exception: BaseException | None, response: Any = None,
                   start_time: float | None = None, **_: Any) -> None:
        started = start_time if start_time else time.time() - (response_time or 0) / 1000
        second = int(started)
        bucket = self.buckets.get(second)
        if bucket is None:
            bucket = self.buckets[second] = {"second": second, "count": 0, "errors": {}, "hist": {}}
        bucket["count"] += 1
        self.total += 1
        if exception is not None:
            kind = classify(exception, response)
            bucket["errors"][kind] = bucket["errors"].get(kind, 0) + 1
        else:
            key = bucket_of(response_time or 0.0)
            bucket["hist"][key] = bucket["hist"].get(key, 0) + 1

    def take(self) -> list[dict[str, Any]]:
        taken, self.buckets = self.buckets, {}
        return [taken[s] for s in sorted(taken)]


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def build_user(spec: dict[str, Any]) -> type[FastHttpUser]:
    wait_min, wait_max = spec["wait_min"], spec["wait_max"]

    class AichaosUser(FastHttpUser):
        abstract = False
        host = spec["host"]
        network_timeout = spec["timeout"]
        connection_timeout = spec["timeout"]
        wait_time = between(wait_min, wait_max) if wait_max > 0 else constant(0)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.rng = random.Random(random.getrandbits(64))

    tasks: dict[Any, int] = {}
    for req in spec["requests"]:
        tasks[make_task(req)] = req["weight"]
    AichaosUser.tasks = tasks  # type: ignore[assignment]
    return AichaosUser


def make_task(req: dict[str, Any]) -> Any:
    draw = compile_template(req["json"]) if req.get("json") is not None else None
    method, path, name, headers = req["method"], req["path"], req["name"], req.get("headers") or None

    def run(user: Any) -> None:
        kwargs: dict[str, Any] = {"name": name}
        if headers:
            kwargs["headers"] = headers
        if draw is not None:
            kwargs["json"] = draw(user.rng)
        user.client.request(method, path, **kwargs)

    run.__name__ = f"request_{name}"
    return run


def main() -> int:
    line = sys.stdin.readline()
    try:
        spec = json.loads(line)
    except ValueError:
        emit({"type": "error", "message": "the first input line must be the load spec as JSON"})
        return 2
    random.seed(spec.get("seed"))
    collector = Collector()
    user_class = build_user(spec)
    env = Environment(user_classes=[user_class], events=events)
    env.events.request.add_listener(collector.on_request)
    runner = env.create_local_runner()
    stop = Event()

    def watch_stdin() -> None:
        fd = sys.stdin.fileno()
        pending = b""
        while not stop.is_set():
            wait_read(fd)
            chunk = os.read(fd, 4096)
            if not chunk:
                stop.set()
                return
            pending += chunk
            while b"\n" in pending:
                command, _, pending = pending.partition(b"\n")
                if command.strip() == b"stop":
                    stop.set()

    def stream() -> None:
        while not stop.is_set():
            gevent.sleep(1.0 - (time.time() % 1.0))
            emit({"type": "samples", "users": runner.user_count, "buckets": collector.take()})

    gevent.spawn(watch_stdin)
    streamer = gevent.spawn(stream)
    runner.start(spec["users"], spawn_rate=spec["spawn_rate"])
    emit({"type": "ready", "time": time.time()})
    stop.wait()
    streamer.kill()
    runner.quit()
    gevent.sleep(0)
    emit({"type": "samples", "users": 0, "buckets": collector.take()})
    emit({"type": "done", "locust_total": env.stats.total.num_requests, "collected_total": collector.total})
    return 0


if __name__ == "__main__":
    sys.exit(main())
