"""The stack file: which services make up the AI stack, how to start them, and their dependencies.

Each dependency (``depends_on``) is an *edge*. aichaos puts a fault proxy on every edge and hands
the dependent the proxied address in the environment variable the edge names, so any edge can carry
network faults. Edges are named ``<dependent>-><dependency>``, e.g. ``gateway->model-server``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from aichaos.experiment.types import Duration, Strict

SERVICE_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
PROXY_ALIAS = "aichaos-fault-proxy"  # the fault proxy's name on a run's own docker network


class Readiness(Strict):
    """How to tell that a service is ready: an HTTP path that answers 2xx, or a TCP port that accepts."""

    http: str | None = Field(None, description="HTTP path that answers 2xx when ready, e.g. /ready")
    tcp: bool = Field(False, description="ready when the service's port accepts connections")
    timeout: Duration = Field(120.0, description="how long to wait for readiness")

    @model_validator(mode="after")
    def _one_probe(self) -> Readiness:
        if self.http is None and not self.tcp:
            raise ValueError("give either http: /path or tcp: true")
        if self.http is not None and self.tcp:
            raise ValueError("give only one of http and tcp")
        if self.http is not None and not self.http.startswith("/"):
            raise ValueError("http must be a path starting with /")
        return self


class Edge(Strict):
    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                     description="environment variable of the dependent that receives the proxied address")
    scheme: Literal["http", "redis", "tcp"] = Field("tcp", description="URL scheme of that address")


class LocalOverride(Strict):
    """Settings used only by the local (process) runtime."""

    command: list[str] = Field(min_length=1)


class Hooks(Strict):
    """The service's fault hooks (the protocol in sample_stack/README.md): POST a JSON object of
    faults to ``path``, GET the current ones, with ``Authorization: Bearer <token>``."""

    path: str = Field("/admin/faults", pattern=r"^/")
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                  description="the service's environment variable that holds the token")


class Service(Strict):
    command: list[str] = Field(min_length=1, description="argv; {port} is replaced by the service's port")
    image: str | None = Field(None, description="image for the docker runtime")
    build: str | None = Field(None, description="docker build context, relative to the stack file")
    env: dict[str, str] = Field(default_factory=dict)
    ready: Readiness
    depends_on: dict[str, Edge] = Field(default_factory=dict)
    local: LocalOverride | None = None
    stop_timeout: Duration = 5.0
    hooks: Hooks | None = Field(None, description="fault hooks for AI faults (inference_*, model_swap, oom)")
    metrics: str | None = Field(None, pattern=r"^/", description="Prometheus metrics path, scraped every second "
                                                               "into the run's time line, e.g. /metrics")


class Stack(Strict):
    services: dict[str, Service] = Field(min_length=1)
    network: Literal["run", "host"] = Field(
        "run", description="docker runtime only: 'run' puts the stack on a network of its own, made for the run "
                           "and removed after it (services reach each other by name, ports published on "
                           "127.0.0.1); 'host' uses the host's network (every port on 127.0.0.1)")

    @model_validator(mode="after")
    def _references(self) -> Stack:
        import re

        for name, service in self.services.items():
            if not re.match(SERVICE_NAME, name):
                raise ValueError(f"service name {name!r} must match {SERVICE_NAME}")
            for dep in service.depends_on:
                if dep not in self.services:
                    raise ValueError(f"service {name!r} depends on {dep!r}, which is not in services")
                if dep == name:
                    raise ValueError(f"service {name!r} depends on itself")
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
            for dep in self.services[name].depends_on:
                visit(dep, (*trail, name))
            state[name] = 2
            order.append(name)

        for name in self.services:
            visit(name, ())
        return order
