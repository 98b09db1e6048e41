"""The stack file: which services make up the AI stack, how to start them, and their dependencies.

Each dependency (``depends_on``) is an *edge*. aichaos puts a fault proxy on every edge and hands
the dependent the proxied address in the environment variable the edge names, so any edge can carry
network faults. Edges are named ``<dependent>-><dependency>``, e.g. ``gateway->model-server``.

A service may listen on several named ports (``ports: {http: null, metrics: null}``: each allocated
at run time, or a fixed number the service always listens on); ``{port.NAME}`` in its command and
environment is that port (``{port}`` the first one), readiness and ``metrics`` may name one, and an
edge may name the dependency's port it proxies. A Compose file is read into the same model
(``aichaos.experiment.compose``); ``runtime: external`` reads each service's ``address``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from aichaos.experiment.types import Duration, Strict

SERVICE_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
PORT_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
ADDRESS = r"^[^\s:/]+:\d{1,5}$"  # host:port
PROXY_ALIAS = "aichaos-fault-proxy"  # the fault proxy's name on a run's own docker network


class Readiness(Strict):
    """How to tell that a service is ready: an HTTP path that answers 2xx, or a TCP port that accepts."""

    http: str | None = Field(None, description="HTTP path that answers 2xx when ready, e.g. /ready")
    tcp: bool = Field(False, description="ready when the service's port accepts connections")
    health: bool = Field(False, description="docker runtime: ready when the container's healthcheck says healthy "
                                            "(a Compose healthcheck)")
    running: bool = Field(False, description="ready as soon as it runs (a service that listens on no port)")
    port: str | None = Field(None, pattern=PORT_NAME, description="the named port probed (default: the first)")
    timeout: Duration = Field(120.0, description="how long to wait for readiness")

    @model_validator(mode="after")
    def _one_probe(self) -> Readiness:
        chosen = [k for k in ("http", "tcp", "health", "running") if getattr(self, k) not in (None, False)]
        if not chosen:
            raise ValueError("give one of http: /path, tcp: true, health: true or running: true")
        if len(chosen) > 1:
            raise ValueError(f"give only one probe, not {' and '.join(chosen)}")
        if self.http is not None and not self.http.startswith("/"):
            raise ValueError("http must be a path starting with /")
        return self


class Edge(Strict):
    env: str = Field(pattern=ENV_NAME,
                     description="environment variable of the dependent that receives the proxied address")
    scheme: Literal["http", "https", "redis", "grpc", "tcp"] = Field("tcp", description="URL scheme of that address")
    port: str | None = Field(None, pattern=PORT_NAME, description="the dependency's named port it goes to "
                                                                  "(default: its first)")
    listen: int | None = Field(None, ge=1, le=65535,
                               description="runtime external: the port the fault proxy listens on for this edge, "
                                           "where the running dependent is configured to call its dependency")
    replace: str | None = Field(None, min_length=1,
                                description="rewrite, not set: the variable keeps its value from env with this "
                                            "text (the dependency's host:port) replaced by the proxied address")


class Build(Strict):
    """A docker build: the context (relative to the stack file), and optionally its Dockerfile and args."""

    context: str = "."
    dockerfile: str | None = Field(None, description="relative to the context")
    args: dict[str, str] = Field(default_factory=dict, description="build args (--build-arg adds to them)")


class Mount(Strict):
    """A volume of a container (docker runtime), as Compose defines them."""

    type: Literal["bind", "volume", "tmpfs"] = "volume"
    source: str | None = Field(None, description="bind: a host path (relative to the stack file); volume: a name "
                                                 "in the stack's volumes (none: an anonymous volume)")
    target: str = Field(pattern=r"^/", description="the path in the container")
    read_only: bool = False


class VolumeSpec(Strict):
    external: bool = Field(False, description="an existing volume, never made or removed by aichaos")
    name: str | None = Field(None, description="the volume's name in the engine (default: made per run)")


class NetworkSpec(Strict):
    external: bool = Field(False, description="an existing network, never made or removed by aichaos")
    name: str | None = Field(None, description="the network's name in the engine (default: made per run)")
    internal: bool = Field(False, description="no route out of the network")


class DeviceRequest(Strict):
    """Devices a container asks the engine for (Compose's deploy.resources.reservations.devices)."""

    driver: str | None = Field(None, description="e.g. nvidia")
    count: int | Literal["all"] | None = Field(None, description="how many (all: every one); or give device_ids")
    device_ids: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=lambda: ["gpu"])
    options: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _count_or_ids(self) -> DeviceRequest:
        if self.count is not None and self.device_ids:
            raise ValueError("give either count or device_ids, not both")
        return self


class Metrics(Strict):
    path: str = Field("/metrics", pattern=r"^/")
    port: str | None = Field(None, pattern=PORT_NAME, description="the named port it is served on (default: "
                                                                  "the first)")


class LocalOverride(Strict):
    """Settings used only by the local (process) runtime."""

    command: list[str] = Field(min_length=1)


class Healthcheck(Strict):
    """A container healthcheck as Compose gives it (run by the engine inside the container)."""

    test: list[str] = Field(min_length=1, description='["CMD", argv...], ["CMD-SHELL", "cmd"] or ["NONE"]')
    interval: Duration = 5.0
    timeout: Duration = 5.0
    retries: int = Field(3, ge=1, le=1000)
    start_period: Duration = 0.0


class Hooks(Strict):
    """The service's fault hooks (the protocol in sample_stack/README.md): POST a JSON object of
    faults to ``path``, GET the current ones, with ``Authorization: Bearer <token>``."""

    path: str = Field("/admin/faults", pattern=r"^/")
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                  description="the service's environment variable that holds the token")


class Service(Strict):
    command: list[str] | None = Field(None, min_length=1,
                                      description="argv; {port} is replaced by the service's (first) port, "
                                                  "{port.NAME} by its port NAME, {host} by the address to listen "
                                                  "on; required except under docker (the image's own) and external")
    entrypoint: list[str] | None = Field(None, min_length=1, description="docker: replaces the image's entrypoint")
    image: str | None = Field(None, description="image for the docker runtime")
    build: str | Build | None = Field(None, description="docker build context relative to the stack file, or "
                                                        "{context, dockerfile, args}")
    env: dict[str, str] = Field(default_factory=dict, description="environment; {port}, {port.NAME} and {host} "
                                                                  "are filled in")
    env_file: list[str] = Field(default_factory=list, description="files of KEY=VALUE lines (relative to the stack "
                                                                  "file), read before env")
    workdir: str | None = Field(None, description="working directory: relative to the stack file for a local "
                                                  "process, a path in the container under docker")
    ports: dict[str, int | None] = Field(default_factory=dict,
                                         description="named ports: null for one allocated at run time, or the "
                                                     "number the service always listens on (under docker on the "
                                                     "run's network: the container's port, published on a free "
                                                     "one of 127.0.0.1); default one allocated port, 'port'")
    ready: Readiness
    depends_on: dict[str, Edge] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list, description="services started first, with no edge through the "
                                                               "fault proxy (Compose depends_on not proxied)")
    local: LocalOverride | None = None
    stop_timeout: Duration = 5.0
    hooks: Hooks | None = Field(None, description="fault hooks for AI faults (inference_*, model_swap, oom)")
    metrics: str | Metrics | None = Field(None, description="Prometheus metrics path (e.g. /metrics), or {path, "
                                                            "port}: scraped every second into the run's time line")
    gpus: Literal["all"] | int | list[str] | None = Field(None, description="docker: GPUs the container gets: "
                                                                            "all, a count, or device ids")
    devices: list[DeviceRequest] = Field(default_factory=list, description="docker: device requests (Compose's "
                                                                           "deploy.resources.reservations.devices)")
    healthcheck: Healthcheck | None = Field(None, description="docker: the container's healthcheck (ready: "
                                                              "{health: true} waits for it)")
    volumes: list[Mount] = Field(default_factory=list, description="docker: mounts")
    networks: list[str] = Field(default_factory=list, description="docker: networks of the stack's networks it is "
                                                                  "on (default: the run's network)")
    address: str | dict[str, str] | None = Field(
        None, description="runtime external: where the running service is, host:port (its first port), or "
                          "{port name: host:port}")
    container: str | None = Field(None, description="runtime external: its docker container, for container faults "
                                                    "(with --allow-external)")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: object) -> object:
        if isinstance(value, bool) or (isinstance(value, int) and value < 1):
            raise ValueError("gpus is all, a count of at least 1, or a list of device ids")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        for text in ([value] if isinstance(value, str) else list((value or {}).values())):
            if not re.match(ADDRESS, text):
                raise ValueError(f"{text!r} is not host:port")
        if isinstance(value, dict):
            for name in value:
                if not re.match(PORT_NAME, name):
                    raise ValueError(f"port name {name!r} must match {PORT_NAME}")
        return value

    @field_validator("ports")
    @classmethod
    def _port_names(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        for name, number in value.items():
            if not re.match(PORT_NAME, name):
                raise ValueError(f"port name {name!r} must match {PORT_NAME}")
            if number is not None and not 1 <= number <= 65535:
                raise ValueError(f"port {name}: {number} is not a port number (1 to 65535)")
        return value

    @model_validator(mode="after")
    def _named_ports_exist(self) -> Service:
        names = self.port_names
        for what, name in (("ready.port", self.ready.port), ("metrics.port", self.metrics_port)):
            if name is not None and name not in names:
                raise ValueError(f"{what} {name!r} is not one of the service's ports ({', '.join(names)})")
        if isinstance(self.address, dict):
            missing = [n for n in names if n not in self.address]
            if self.ports and missing:
                raise ValueError(f"address names no host:port for port(s) {', '.join(missing)}")
        return self

    @property
    def port_names(self) -> list[str]:
        """The service's named ports, the first one the main one (``{port}``, the load's, the default)."""
        if self.ports:
            return list(self.ports)
        if isinstance(self.address, dict):
            return list(self.address)
        return ["port"]

    @property
    def metrics_path(self) -> str | None:
        return self.metrics.path if isinstance(self.metrics, Metrics) else self.metrics

    @property
    def metrics_port(self) -> str | None:
        return self.metrics.port if isinstance(self.metrics, Metrics) else None

    @property
    def build_context(self) -> str | None:
        return self.build.context if isinstance(self.build, Build) else self.build

    def addresses(self) -> dict[str, str]:
        """runtime external: host:port of each named port."""
        if isinstance(self.address, str):
            return {self.port_names[0]: self.address}
        return dict(self.address or {})


class Stack(Strict):
    services: dict[str, Service] = Field(min_length=1)
    network: Literal["run", "host"] = Field(
        "run", description="docker runtime only: 'run' puts the stack on a network of its own, made for the run "
                           "and removed after it (services reach each other by name, ports published on "
                           "127.0.0.1); 'host' uses the host's network (every port on 127.0.0.1)")
    volumes: dict[str, VolumeSpec | None] = Field(default_factory=dict, description="docker: named volumes, made "
                                                                                   "for the run and removed after it")
    networks: dict[str, NetworkSpec | None] = Field(default_factory=dict,
                                                    description="docker, network: run: more networks, made for the "
                                                                "run (the fault proxy is on each)")
    proxy_listen: str = Field("127.0.0.1", description="runtime external: the address the fault proxy's listeners "
                                                       "bind (0.0.0.0 to be reached from other machines)")
    proxy_host: str | None = Field(None, description="runtime external: the proxy's host as the services reach it "
                                                     "(default: proxy_listen, or this machine's name)")

    @model_validator(mode="after")
    def _references(self) -> Stack:
        for name, service in self.services.items():
            if not re.match(SERVICE_NAME, name):
                raise ValueError(f"service name {name!r} must match {SERVICE_NAME}")
            for dep in [*service.depends_on, *service.after]:
                if dep not in self.services:
                    raise ValueError(f"service {name!r} depends on {dep!r}, which is not in services")
                if dep == name:
                    raise ValueError(f"service {name!r} depends on itself")
            for dep, edge in service.depends_on.items():
                if edge.port is not None and edge.port not in self.services[dep].port_names:
                    raise ValueError(f"the edge {name}->{dep} names port {edge.port!r}, which {dep!r} does not have "
                                     f"({', '.join(self.services[dep].port_names)})")
                if edge.replace is not None and edge.env not in service.env:
                    raise ValueError(f"the edge {name}->{dep} rewrites {edge.env}, which {name!r} does not set in env")
            for mount in service.volumes:
                if mount.type == "volume" and mount.source is not None and mount.source not in self.volumes:
                    raise ValueError(f"service {name!r} mounts volume {mount.source!r}, which is not in volumes")
            for network in service.networks:
                if network not in self.networks:
                    raise ValueError(f"service {name!r} is on network {network!r}, which is not in networks")
            if name == PROXY_ALIAS:
                raise ValueError(f"service name {name!r} is taken by aichaos's fault proxy")
        self.start_order()  # raises on a cycle
        return self

    def edges_into(self, dependency: str) -> list[str]:
        return [f"{name}->{dependency}" for name, s in self.services.items() if dependency in s.depends_on]

    @property
    def edges(self) -> list[str]:
        return [f"{name}->{dep}" for name, s in self.services.items() for dep in s.depends_on]

    def start_order(self) -> list[str]:
        """Services ordered so that every dependency starts before its dependents."""
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ValueError("dependency cycle: " + " -> ".join((*trail, name)))
            state[name] = 1
            for dep in [*self.services[name].depends_on, *self.services[name].after]:
                visit(dep, (*trail, name))
            state[name] = 2
            order.append(name)

        for name in self.services:
            visit(name, ())
        return order
