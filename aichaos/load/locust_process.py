"""The load process: Locust drives the target and streams per-second samples as JSON lines.

Run as ``python -m aichaos.load.locust_process`` (local runner, or master with ``--workers``) or
``python -m aichaos.load.locust_process --worker --master HOST:PORT``. Locust monkey-patches the
process with gevent (anything importing ``requests`` or the docker SDK first would break), so it
never runs inside aichaos itself.

Protocol with aichaos, one JSON object per line:

- stdin, first line: the load spec (see ``aichaos.load.generator.load_spec``); later lines:
  ``{"t0": EPOCH}`` (the plan's second 0, once aichaos knows it) and ``stop`` (or end of input,
  e.g. when aichaos dies), which stops the load and flushes.
- stdout: ``{"type": "ready"}`` once users are spawning; every second
  ``{"type": "samples", "users": N, "buckets": [...], "cpu": F}`` (F: the busiest load process's
  share of a core over the last second) with the partial buckets completed since the
  last line (a bucket is keyed by the second its requests *started*, so one second may arrive in
  several lines: the receiver adds them); at the end ``{"type": "done", "locust_total": N,
  "collected_total": N, "llm_total": {...}}`` (LLM requests, streams, output tokens, ITL samples).

Distributed: request events fire on the workers. Each worker attaches its partial buckets to the
stats report it sends the master anyway (``report_to_master``), so Locust's counts and aichaos's
buckets travel in the same message and cannot disagree. At stop the master asks every worker to
flush (one last report, then an acknowledgement on the same ordered connection) and waits for all
of them before it reports its totals, so no second is lost. Workers get the spec from the master
(a custom message answering their hello), so a remote ``aichaos worker`` needs nothing but the
master's address (and the locustfile, when the experiment uses one).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from bisect import bisect  # noqa: E402
from itertools import accumulate  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import locust.runners  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.socket import wait_read  # noqa: E402
from locust import FastHttpUser, LoadTestShape, User, events  # noqa: E402
from locust.env import Environment  # noqa: E402

from aichaos.load.openai import LLM_ERROR_KINDS, Goodput, StreamResult  # noqa: E402
from aichaos.load.templates import compile_template  # noqa: E402
from aichaos.metrics.histogram import bucket_of  # noqa: E402
from aichaos.metrics.llm import LlmStats  # noqa: E402

USER_CLASS = "AichaosUser"
log = logging.getLogger("aichaos.load")


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


MAX_DISTINCT_ERRORS = 8  # distinct errors kept per second (their counts, and one example of each)


def describe_error(kind: str, exception: BaseException | None, response: Any) -> tuple[str, str]:
    """(signature, example) of a failed request: errors with one signature are the same error. The
    example is the status and the first 200 bytes of the body, or the exception's message."""
    status = getattr(response, "status_code", 0) or 0
    if status:
        try:
            body = " ".join(str(getattr(response, "text", "") or "").split())
        except Exception:  # a body that cannot be decoded: the status says enough
            body = ""
        return f"{kind} {status} {body[:60]}", f"{status} {body[:200]}".strip()
    message = " ".join(f"{type(exception).__name__}: {exception}".split())[:200]
    return f"{kind} {message[:80]}", message


def count_error(examples: dict[str, list[Any]], signature: str, kind: str, example: str, n: int = 1) -> None:
    entry = examples.get(signature)
    if entry is not None:
        entry[1] += n
    elif len(examples) < MAX_DISTINCT_ERRORS:
        examples[signature] = [kind, n, example]


class Collector:
    """Per-second partial buckets, swapped out once a second (or once per report on a worker)."""

    def __init__(self) -> None:
        self.buckets: dict[int, dict[str, Any]] = {}
        self.total = 0
        # LLM requests, successful streams, their output tokens and ITL samples, for the done line
        self.llm_total = {"requests": 0, "streams": 0, "output_tokens": 0, "itl": 0}

    def _bucket(self, second: int) -> dict[str, Any]:
        bucket = self.buckets.get(second)
        if bucket is None:
            bucket = self.buckets[second] = {"second": second, "count": 0, "errors": {}, "hist": {}}
        return bucket

    def on_request(self, response_time: float, exception: BaseException | None, response: Any = None,
                   start_time: float | None = None, llm: StreamResult | None = None, **_: Any) -> None:
        started = start_time if start_time else time.time() - (response_time or 0) / 1000
        bucket = self._bucket(int(started))
        bucket["count"] += 1
        self.total += 1
        if exception is not None:
            kind = llm.error if llm is not None and llm.error in LLM_ERROR_KINDS else classify(exception, response)
            bucket["errors"][kind] = bucket["errors"].get(kind, 0) + 1
            signature, example = describe_error(kind, exception, response)
            count_error(bucket.setdefault("examples", {}), signature, kind, example)
        else:
            key = bucket_of(response_time or 0.0)
            bucket["hist"][key] = bucket["hist"].get(key, 0) + 1
        if llm is not None:
            stats = bucket.get("llm")
            if stats is None:
                stats = bucket["llm"] = LlmStats()
            stats.record(llm)
            totals = self.llm_total
            totals["requests"] += 1
            if llm.ok:
                totals["streams"] += 1
                totals["output_tokens"] += llm.output_tokens
                totals["itl"] += len(llm.itl_ms)

    def add(self, partial: dict[str, Any]) -> None:
        """Merge a partial bucket from a worker (JSON keys are strings after the trip)."""
        bucket = self._bucket(int(partial["second"]))
        bucket["count"] += int(partial["count"])
        self.total += int(partial["count"])
        for kind, n in partial["errors"].items():
            bucket["errors"][kind] = bucket["errors"].get(kind, 0) + n
        for key, n in partial["hist"].items():
            bucket["hist"][int(key)] = bucket["hist"].get(int(key), 0) + n
        for signature, (kind, n, example) in (partial.get("examples") or {}).items():
            count_error(bucket.setdefault("examples", {}), signature, kind, example, int(n))
        if partial.get("llm") is not None:
            theirs = LlmStats.from_json(partial["llm"])
            stats = bucket.get("llm")
            if stats is None:
                stats = bucket["llm"] = LlmStats()
            stats.add(theirs)
            totals = self.llm_total
            totals["requests"] += theirs.requests
            totals["streams"] += theirs.streams
            totals["output_tokens"] += theirs.output_tokens
            totals["itl"] += sum(theirs.itl.values())

    def take(self) -> list[dict[str, Any]]:
        """The buckets so far, as JSON (they travel to the master or to aichaos), and start anew."""
        taken, self.buckets = self.buckets, {}
        out = []
        for second in sorted(taken):
            bucket = taken[second]
            if bucket.get("llm") is not None:
                bucket["llm"] = bucket["llm"].to_json()
            out.append(bucket)
        return out


class CpuMeter:
    """This process's CPU time per wall second since the last reading (1.0: a whole core)."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.monotonic()

    def share(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        share = (cpu - self.cpu) / max(wall - self.wall, 1e-3)
        self.cpu, self.wall = cpu, wall
        return share


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Plan:
    """The spec's per-second plan (see ``aichaos.load.schedule``), with ``t0`` once it is known."""

    def __init__(self) -> None:
        self.ready = Event()
        self.t0: float | None = None
        self.levels: list[list[Any]] = [[1, None, 0]]
        self.mixes: list[tuple[list[Any], list[int]]] = []  # (tasks, cumulative weights)
        self.spawn_rate = 1.0
        self.timeout = 10.0
        self.host = ""
        self.wait = (0.0, 0.0)
        self.arrival = "paced"  # with a rate: "paced" (even gaps) or "poisson" (exponential gaps)
        self.goodput = Goodput()

    def load(self, spec: dict[str, Any]) -> None:
        self.levels = spec["levels"] or [[spec["users"], spec.get("rate"), 0]]
        self.arrival = spec.get("arrival") or "paced"
        self.goodput = Goodput.from_json(spec.get("goodput"))
        self.spawn_rate = spec["spawn_rate"]
        self.timeout, self.host = spec["timeout"], spec["host"]
        self.wait = (spec["wait_min"], spec["wait_max"])
        self.mixes = []
        for mix in spec["mixes"]:
            tasks = [make_request(req) for req in mix]
            self.mixes.append((tasks, list(accumulate(req["weight"] for req in mix))))
        if spec.get("t0") is not None:
            self.t0 = float(spec["t0"])
        self.ready.set()

    def level(self) -> list[Any]:
        offset = 0 if self.t0 is None else int(time.time() - self.t0)
        return self.levels[min(max(0, offset), len(self.levels) - 1)]


PLAN = Plan()


def make_request(req: dict[str, Any]) -> Any:
    if req.get("llm") is not None:
        from aichaos.load.llm_client import make_llm_request

        return make_llm_request(req, PLAN.goodput)
    draw = compile_template(req["json"]) if req.get("json") is not None else None
    method, path, name, headers = req["method"], req["path"], req["name"], req.get("headers") or None

    def send(user: Any) -> None:
        kwargs: dict[str, Any] = {"name": name}
        if headers:
            kwargs["headers"] = headers
        if draw is not None:
            kwargs["json"] = draw(user.rng)
        user.client.request(method, path, **kwargs)

    return send


def paced_wait(user: Any) -> float:
    """Constant pacing: start requests 1/(rate/users) apart; a slow answer delays, never bursts."""
    users, rate, _ = PLAN.level()
    if not rate or not users:
        return 1.0
    interval = users / rate
    return max(0.0, user.last_start + interval - time.time())


def poisson_wait(user: Any) -> float:
    """Poisson arrivals: each user's gaps are exponential with mean users/rate, so together they
    arrive as one Poisson stream of ``rate``; a user still busy when its next arrival is due sends
    as soon as it is free (``users`` caps the requests in flight, and achieved < offered says so)."""
    users, rate, _ = PLAN.level()
    if not rate or not users:
        return 1.0
    return max(0.0, user.last_start + user.rng.expovariate(rate / users) - time.time())


class AichaosUser(FastHttpUser):
    """Sends the plan's current request mix (weights as declared) at the plan's pace."""

    abstract = True  # made concrete by configure(), once host and timeouts are known

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = random.Random(random.getrandbits(64))
        self.last_start = time.time()

    def wait_time(self) -> float:
        if PLAN.level()[1] is not None:
            return poisson_wait(self) if PLAN.arrival == "poisson" else paced_wait(self)
        low, high = PLAN.wait
        return self.rng.uniform(low, high) if high > 0 else 0.0

    def on_start(self) -> None:
        PLAN.ready.wait()
        users, rate, _ = PLAN.level()
        if rate and users:
            # users spawned together would fire together every interval: start each at a random phase
            gevent.sleep(self.rng.random() * users / rate)
        self.last_start = time.time()

    def on_stop(self) -> None:
        client = getattr(self, "llm_client", None)
        if client is not None:
            client.close()

    def send_one(self) -> None:
        self.last_start = time.time()
        tasks, cumulative = PLAN.mixes[PLAN.level()[2]]
        pick = bisect(cumulative, self.rng.random() * cumulative[-1]) if len(tasks) > 1 else 0
        tasks[min(pick, len(tasks) - 1)](self)

    tasks = [send_one]


def user_classes(spec: dict[str, Any], locustfile: str | None) -> list[type[User]]:
    if locustfile:
        from locust.util.load_locustfile import load_locustfile

        found, _shapes = load_locustfile(locustfile)  # its own shapes are ignored: aichaos's plan rules
        classes = [c for c in found.values() if not getattr(c, "abstract", False)]
        if not classes:
            raise SystemExit(f"{locustfile}: no User class found")
        for c in classes:
            c.host = c.host or spec.get("host")
        return classes
    AichaosUser.abstract = False
    AichaosUser.host = spec.get("host") or "http://127.0.0.1"
    AichaosUser.network_timeout = spec.get("timeout", 10.0)
    AichaosUser.connection_timeout = spec.get("timeout", 10.0)
    return [AichaosUser]


class PlanShape(LoadTestShape):
    """Locust's shape hook, following the plan: users of the current second, never ending by itself."""

    def tick(self) -> tuple[int, float]:
        users = PLAN.level()[0]
        return users, PLAN.spawn_rate


def watch_stdin(stop: Event, runner: Any) -> None:
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
            line, _, pending = pending.partition(b"\n")
            line = line.strip()
            if line == b"stop":
                stop.set()
            elif line.startswith(b"{"):
                message = json.loads(line)
                if "t0" in message:
                    PLAN.t0 = float(message["t0"])
                    if runner is not None and hasattr(runner, "clients"):
                        runner.send_message("aichaos_t0", {"t0": PLAN.t0})


def run_main(spec: dict[str, Any]) -> int:
    """The local runner, or the master of ``spec["workers"]`` local and ``spec["remote_workers"]``
    remote workers; either way the one process that talks to aichaos."""
    random.seed(spec.get("seed"))
    PLAN.load(spec)
    collector = Collector()
    classes = user_classes(spec, spec.get("locustfile"))
    env = Environment(user_classes=classes, shape_class=PlanShape(), events=events)
    expected = spec.get("workers", 0) + spec.get("remote_workers", 0)
    children: list[subprocess.Popen[bytes]] = []
    flushed: set[str] = set()
    worker_cpu: dict[str, float] = {}  # each worker's CPU share, from its last report
    if expected:
        locust.runners.WORKER_REPORT_INTERVAL = 1.0  # buckets reach aichaos within about a second
        runner: Any = env.create_master_runner(spec["master_bind"], spec["master_port"])

        def on_worker_report(client_id: str, data: dict[str, Any]) -> None:
            for partial in data.get("aichaos_buckets", []):
                collector.add(partial)
            if "aichaos_cpu" in data:
                worker_cpu[client_id] = float(data["aichaos_cpu"])

        def on_hello(environment: Any, msg: Any, **_: Any) -> None:
            runner.send_message("aichaos_spec", {**spec, "t0": PLAN.t0}, client_id=msg.node_id)

        def on_flushed(environment: Any, msg: Any, **_: Any) -> None:
            flushed.add(msg.node_id)

        env.events.worker_report.add_listener(on_worker_report)
        runner.register_message("aichaos_hello", on_hello)
        runner.register_message("aichaos_flushed", on_flushed)
        command = [sys.executable, "-m", "aichaos.load.locust_process", "--worker",
                   "--master", f"127.0.0.1:{spec['master_port']}"]
        if spec.get("locustfile"):
            command += ["--locustfile", spec["locustfile"]]
        for _ in range(spec.get("workers", 0)):  # same process group: killing the master's kills them
            children.append(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sys.stderr))
        deadline = time.monotonic() + spec.get("worker_timeout", 60.0)
        while len(runner.clients.ready) < expected:
            if time.monotonic() > deadline:
                emit({"type": "error", "message": f"{len(runner.clients.ready)} of {expected} load workers "
                                                  f"connected to the master at {spec['master_bind']}:"
                                                  f"{spec['master_port']}"})
                for child in children:
                    child.kill()
                    child.wait(5)
                return 3
            gevent.sleep(0.1)
    else:
        runner = env.create_local_runner()
        env.events.request.add_listener(collector.on_request)
    stop = Event()

    meter = CpuMeter()

    def stream() -> None:
        while not stop.is_set():
            gevent.sleep(1.0 - (time.time() % 1.0))
            # the busiest load process: near 1.0 it may be the bottleneck, and the gaps it times read short
            cpu = max([meter.share(), *worker_cpu.values()])
            emit({"type": "samples", "users": runner.user_count, "buckets": collector.take(), "cpu": round(cpu, 3)})

    gevent.spawn(watch_stdin, stop, runner)
    streamer = gevent.spawn(stream)
    runner.start_shape()
    emit({"type": "ready", "time": time.time()})
    stop.wait()
    streamer.kill()
    if expected:
        runner.stop()  # workers stop their users and report
        runner.send_message("aichaos_flush")
        deadline = time.monotonic() + 15
        while len(flushed) < len(runner.clients) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if len(flushed) < len(runner.clients):
            emit({"type": "error", "message": f"only {len(flushed)} of {len(runner.clients)} workers flushed"})
        runner.quit()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
    else:
        runner.quit()
    gevent.sleep(0)
    emit({"type": "samples", "users": 0, "buckets": collector.take(), "final": True})
    emit({"type": "done", "locust_total": env.stats.total.num_requests, "collected_total": collector.total,
          "llm_total": collector.llm_total})
    return 0


def run_worker(master: str, locustfile: str | None) -> int:
    """A worker: its requests are measured here and shipped to the master with its reports."""
    host, _, port = master.rpartition(":")
    if not host or not port.isdigit():
        print(f"--master must be HOST:PORT, not {master!r}", file=sys.stderr)
        return 2
    collector = Collector()
    env = Environment(user_classes=user_classes({}, locustfile), events=events)
    locust.runners.WORKER_REPORT_INTERVAL = 1.0
    runner: Any = env.create_worker_runner(host, int(port))
    env.events.request.add_listener(collector.on_request)

    meter = CpuMeter()

    def attach(client_id: str, data: dict[str, Any]) -> None:
        data["aichaos_buckets"] = collector.take()
        data["aichaos_cpu"] = meter.share()

    def on_spec(environment: Any, msg: Any, **_: Any) -> None:
        if not locustfile:
            AichaosUser.host = msg.data["host"]
            AichaosUser.network_timeout = AichaosUser.connection_timeout = msg.data["timeout"]
        random.seed(msg.data.get("seed"))
        PLAN.load(msg.data)

    def on_t0(environment: Any, msg: Any, **_: Any) -> None:
        PLAN.t0 = float(msg.data["t0"])

    def on_flush(environment: Any, msg: Any, **_: Any) -> None:
        runner._send_stats()  # the last buckets, in a report like the others
        runner.send_message("aichaos_flushed", {"total": collector.total})

    env.events.report_to_master.add_listener(attach)
    runner.register_message("aichaos_spec", on_spec)
    runner.register_message("aichaos_t0", on_t0)
    runner.register_message("aichaos_flush", on_flush)
    runner.send_message("aichaos_hello")
    runner.greenlet.join()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="aichaos load process")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--master", default="")
    parser.add_argument("--locustfile")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.worker:
        return run_worker(args.master, args.locustfile)
    line = sys.stdin.readline()
    try:
        spec = json.loads(line)
    except ValueError:
        emit({"type": "error", "message": "the first input line must be the load spec as JSON"})
        return 2
    return run_main(spec)


if __name__ == "__main__":
    sys.exit(main())
