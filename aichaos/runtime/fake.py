"""An in-package fake stack for unit tests of the run loop, in the spirit of httpx's MockTransport.

Nothing here starts a process or opens a socket. A :class:`FakeWorld` stands for the stack: which
services run, which proxies are enabled and which toxics they carry, and a log of every operation in
order. A *scenario* (a function of the second and the world) says which requests start in each
second and how each one ends; :class:`FakeLoad` turns that into the per-second buckets the real load
would have collected. :class:`FakeClock` advances only when slept on, so a run of minutes takes
milliseconds. Failures are injected by name (``world.fail["add_toxic"] = ProxyError(...)``).

    world = FakeWorld(scenario=steady(count=50, latency_ms=5.0))
    with clock.using(FakeClock()):
        journal = run_experiment(loaded, RunOptions(runtime_kind=FakeKind(world)), load_factory=world.load)

The integration tests run the same loop on the real runtimes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aichaos import clock
from aichaos.errors import StackStartError
from aichaos.experiment.stack import Service
from aichaos.metrics.histogram import bucket_of
from aichaos.metrics.samples import Bucket, SampleStore
from aichaos.proxy.backend import ProxyBackend
from aichaos.proxy.client import ProxyInfo, ToxiproxyClient
from aichaos.runtime.base import RunningService
from aichaos.runtime.registry import RuntimeKind, RuntimeSetup


@dataclass(frozen=True)
class FakeRequest:
    """One request of a scenario: its latency, and the kind of error it ended in (None: success)."""

    latency_ms: float
    error: str | None = None  # timeout, connection, 5xx, 4xx, other


Scenario = Callable[[int, "FakeWorld"], list[FakeRequest]]


def steady(count: int = 50, latency_ms: float = 5.0) -> Scenario:
    """A scenario: ``count`` requests a second, each ``latency_ms`` plus the latency toxics of every
    enabled proxy; every request fails with a connection error while any proxy is disabled, or a
    service is down, paused or not ready again."""

    def scenario(second: int, world: FakeWorld) -> list[FakeRequest]:
        down = world.started - world.running
        if world.disabled or down or world.paused or world.starting:
            return [FakeRequest(1.0, "connection")] * count
        extra = sum(t["attributes"].get("latency", 0) for toxics in world.toxics.values() for t in toxics.values()
                    if t["type"] == "latency")
        return [FakeRequest(latency_ms + extra)] * count

    return scenario


@dataclass
class FakeWorld:
    scenario: Scenario = field(default_factory=steady)
    toxics: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # proxy -> toxic name -> toxic
    disabled: set[str] = field(default_factory=set)  # proxies
    running: set[str] = field(default_factory=set)  # services
    paused: set[str] = field(default_factory=set)
    started: set[str] = field(default_factory=set)  # every service the stack started
    starting: set[str] = field(default_factory=set)  # started again, not ready yet
    ready_delay: dict[str, float] = field(default_factory=dict)  # seconds a service takes to be ready again
    events: list[str] = field(default_factory=list)  # every operation on the fake, in order
    fail: dict[str, Exception] = field(default_factory=dict)  # operation -> error it raises (once)
    on_second: Callable[[int], None] | None = None  # called as each second of load completes (to act mid-run)
    quiet: set[str] = field(default_factory=set)  # proxies through which no traffic goes (an attached stack)

    def op(self, name: str, detail: str = "") -> None:
        self.events.append(f"{name} {detail}".strip())
        error = self.fail.pop(name, None)
        if error is not None:
            raise error

    def load(self, spec: dict[str, Any], log_path: Path, store: SampleStore) -> FakeLoad:
        """A load factory for ``run_experiment``."""
        return FakeLoad(self, store, log_path)


class FakeClock:
    """A wall clock that moves only when slept on."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.listeners: list[Callable[[float], None]] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)  # a zero sleep still moves on: the loop never spins forever
        for listener in list(self.listeners):
            listener(self.now)


class FakeLoad:
    """Fills the sample store second by second from the world's scenario as the clock moves."""

    def __init__(self, world: FakeWorld, store: SampleStore, log_path: Path) -> None:
        self.world, self.store, self.log_path = world, store, log_path
        self.t0: float | None = None
        self.filled = 0  # seconds below this are in the store
        self.running = False
        self.locust_total: int | None = None
        self.collected_total: int | None = None
        self._clock: FakeClock | None = None

    @property
    def pid(self) -> int | None:
        return None

    def start(self) -> None:
        self.world.op("load start")
        self.running = True
        self.filled = int(clock.now())
        fake = clock._clock  # the clock in use: the load follows a fake one, second by second
        if isinstance(fake, FakeClock):
            self._clock = fake
            fake.listeners.append(self._advance)

    def set_t0(self, t0: float) -> None:
        self.t0 = t0

    def _advance(self, now: float) -> None:
        while self.running and self.filled < int(now):
            second = self.filled
            bucket = Bucket(second)
            for request in self.world.scenario(second, self.world):
                bucket.count += 1
                if request.error is None:
                    key = bucket_of(request.latency_ms)
                    bucket.hist[key] = bucket.hist.get(key, 0) + 1
                else:
                    bucket.errors[request.error] = bucket.errors.get(request.error, 0) + 1
            if bucket.count:
                self.store.add(bucket)
            self.store.set_users(second, 1)
            self.filled += 1
            if self.world.on_second is not None:
                self.world.on_second(second)

    def alive(self) -> bool:
        return self.running

    def stop(self, timeout: float = 15.0) -> None:
        if self._clock is not None and self._advance in self._clock.listeners:
            self._clock.listeners.remove(self._advance)
        if self.running:
            self.world.op("load stop")
        self.running = False
        self.locust_total = self.collected_total = self.store.total


class FakeProxyClient(ToxiproxyClient):
    """The Toxiproxy API over the world's proxies, in memory."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self.url = "http://fake-proxy.invalid"
        self.timeout = 0.0
        self.created: dict[str, ProxyInfo] = {}

    def version(self) -> str:
        return "fake"

    def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> ProxyInfo:
        self.world.op("create_proxy", name)
        info = ProxyInfo(name, listen, upstream, True)
        self.created[name] = info
        self.world.toxics[name] = {}
        return info

    def delete_proxy(self, name: str) -> None:
        self.world.op("delete_proxy", name)
        self.created.pop(name, None)
        self.world.toxics.pop(name, None)

    def proxies(self) -> dict[str, Any]:
        return {n: {"name": n, "listen": p.listen, "upstream": p.upstream, "enabled": n not in self.world.disabled}
                for n, p in self.created.items()}

    def set_enabled(self, name: str, enabled: bool) -> None:
        self.world.op("enable" if enabled else "disable", name)
        (self.world.disabled.discard if enabled else self.world.disabled.add)(name)

    def add_toxic(self, proxy: str, kind: str, attributes: dict[str, Any], *, stream: str = "downstream",
                  toxicity: float = 1.0, name: str | None = None) -> str:
        self.world.op("add_toxic", f"{proxy} {name}")
        toxic_name = name or f"{kind}_{stream}"
        self.world.toxics.setdefault(proxy, {})[toxic_name] = {
            "name": toxic_name, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": dict(attributes)}
        return toxic_name

    def update_toxic(self, proxy: str, name: str, attributes: dict[str, Any], toxicity: float | None = None) -> None:
        self.world.op("update_toxic", f"{proxy} {name}")
        self.world.toxics[proxy][name]["attributes"].update(attributes)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self.world.op("remove_toxic", f"{proxy} {name}")
        self.world.toxics.get(proxy, {}).pop(name, None)

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return list(self.world.toxics.get(proxy, {}).values())

    def stats(self, proxy: str) -> dict[str, int] | None:
        seen = proxy not in self.world.quiet  # an edge the world marks quiet carries no traffic
        return {"connections": int(seen), "bytes_upstream": 100 * seen, "bytes_downstream": 100 * seen}


@dataclass
class FakeProxyBackend(ProxyBackend):
    world: FakeWorld = field(default_factory=FakeWorld, repr=False)

    def __post_init__(self) -> None:
        self._client = FakeProxyClient(self.world)

    @property
    def client(self) -> ToxiproxyClient:
        return self._client

    def alive(self) -> bool:
        return True

    def close(self) -> list[str]:
        self.world.op("proxy close")
        return []


class FakeRuntime:
    name = "fake"
    proxy_host = "127.0.0.1"

    def __init__(self, world: FakeWorld, run_dir: Path) -> None:
        self.world = world
        self.run_dir = run_dir
        self.logs: dict[str, Path] = {}
        self.ports: dict[str, int] = {}

    def prepare(self, report: Callable[[str], None]) -> dict[str, Any]:
        self.world.op("network open")
        return {"network": "fake"}

    def start_fault_proxy(self, url: str | None) -> ProxyBackend:
        self.world.op("proxy start")
        return FakeProxyBackend("fake", "http://fake-proxy.invalid", "fake", world=self.world)

    def stack_facts(self) -> tuple[dict[str, Any], str]:
        return {}, " (fake)"

    def proxy_listen_address(self) -> str:
        return f"127.0.0.1:{20000 + len(self.world.toxics)}"

    def peer_address(self, name: str, port: int) -> str:
        return f"127.0.0.1:{port}"

    def start_service(self, name: str, service: Service, port: int, env: dict[str, str],
                      ports: dict[str, int] | None = None) -> RunningService:
        self.world.op("start", name)
        self.world.running.add(name)
        self.world.started.add(name)
        self.ports[name] = port
        self.logs[name] = self.run_dir / "logs" / f"{name}.log"
        return RunningService(name=name, host="127.0.0.1", port=port, log_path=self.logs[name])

    def wait_ready(self, running: RunningService, service: Service) -> None:
        self.world.op("ready", running.name)
        if running.name not in self.world.running:
            raise StackStartError(f"service {running.name!r} is not running")
        delay = self.world.ready_delay.get(running.name, 0.0) if running.name in self.world.starting else 0.0
        deadline = clock.now() + delay
        while clock.now() < deadline:  # on the fake clock: the load goes on meanwhile
            clock.sleep(min(0.1, deadline - clock.now()))
        self.world.starting.discard(running.name)

    def exit_reason(self, name: str) -> str | None:
        return None if name in self.world.running else "was stopped"

    def is_alive(self, name: str) -> bool:
        return name in self.world.running

    def kill_service(self, name: str) -> None:
        self.world.op("kill", name)
        self.world.running.discard(name)

    def signal_service(self, name: str, signal_name: str) -> None:
        self.world.op("signal", f"{name} {signal_name}")
        self.world.running.discard(name)

    def stop_service(self, name: str) -> None:
        self.world.op("stop", name)
        self.world.running.discard(name)

    def restart_service(self, name: str) -> RunningService:
        self.world.op("restart", name)
        self.world.running.add(name)
        self.world.starting.add(name)
        return RunningService(name=name, host="127.0.0.1", port=self.ports[name], log_path=self.logs.get(name))

    def pause_service(self, name: str) -> None:
        self.world.op("pause", name)
        self.world.paused.add(name)

    def resume_service(self, name: str) -> None:
        self.world.op("resume", name)
        self.world.paused.discard(name)

    def container_of(self, name: str) -> None:
        return None

    def teardown(self, hurry: bool = False) -> list[str]:
        self.world.op("teardown", "hurried" if hurry else "")
        self.world.running.clear()
        return []

    def close_network(self) -> list[str]:
        self.world.op("network close")
        return []


class FakeKind(RuntimeKind):
    """The fake runtime's kind; hidden from users (``aichaos.runtime.registry.HIDDEN``)."""

    name = "fake"
    summary = "a fake stack"

    def __init__(self, world: FakeWorld | None = None) -> None:
        self.world = world or FakeWorld()

    def open(self, setup: RuntimeSetup) -> FakeRuntime:
        return FakeRuntime(self.world, setup.run_dir)
