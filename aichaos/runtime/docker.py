"""The docker runtime: each stack service is a container, built from its build context or pulled.

Every container and network is labelled with the run id (``aichaos.run``), containers with their
service too (``aichaos.service``), so that teardown and ``aichaos cleanup`` find exactly what a run
started, and never anything else.

Two ways to network (the stack file's ``network:``):

- ``run`` (the default): a bridge network made for the run, ``aichaos-<run id>``, removed after it.
  Each service is on it under its own name, and so is the fault proxy (``aichaos-fault-proxy``):
  a dependent's proxied address reads ``aichaos-fault-proxy:<port>``, and the proxy reaches the
  dependency as ``<service>:<port>``. Each service's port is also published on 127.0.0.1 (same
  number), for the load, readiness checks, scraping and hooks, which run on the host.
- ``host``: the host's network, every port on 127.0.0.1 (what aichaos's own tests mostly use).

Services listen on the port aichaos allocates (``{port}`` and ``$PORT``) either way. Each
container's output is saved to ``<run dir>/logs/<service>.log`` when it stops, and shown when it
fails to become ready.

This is the only module that imports the docker SDK; its errors are translated here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aichaos.errors import EnvironmentFailure, StackStartError, UsageError
from aichaos.experiment.stack import PROXY_ALIAS, Service, Stack
from aichaos.ports import free_port
from aichaos.proxy.backend import ProxyBackend, start_proxy_backend
from aichaos.runtime.base import RunningService, service_environment, substitute
from aichaos.runtime.readiness import wait_ready
from aichaos.runtime.registry import RuntimeKind, RuntimeSetup

log = logging.getLogger(__name__)

RUN_LABEL = "aichaos.run"
SERVICE_LABEL = "aichaos.service"


def engine(timeout: float = 5.0) -> Any:
    """A docker client whose engine answered a ping; EnvironmentFailure when none does."""
    try:
        import docker

        client = docker.from_env(timeout=int(max(timeout, 1)))
        client.ping()
    except Exception as exc:  # the SDK raises several kinds for "no engine here"
        raise EnvironmentFailure(f"no Docker engine answers ({type(exc).__name__}: {exc})",
                                 hint="start the Docker engine, or use runtime: local") from exc
    return client


def engine_answers() -> bool:
    try:
        engine(timeout=2.0)
    except EnvironmentFailure:
        return False
    return True


class DockerKind(RuntimeKind):
    """Services in containers (docker SDK), images built from the stack's build contexts, every object
    labelled with the run id."""

    name = "docker"
    summary = "containers"
    capabilities = frozenset({"container_limits"})

    def unsuitable(self, stack: Stack) -> str | None:
        imageless = [n for n, s in stack.services.items() if s.image is None and s.build is None]
        return f"{', '.join(imageless)} has no image or build" if imageless else None

    def unavailable(self) -> str | None:
        return None if engine_answers() else "no Docker engine answers"

    def require(self) -> None:
        engine()

    def check(self, setup: RuntimeSetup) -> None:
        if (setup.network or setup.stack.network) == "run" and setup.toxiproxy_url:
            raise UsageError("a fault proxy at a URL cannot reach the services on the run's own docker network: "
                             "use network: host in the stack file (or --network host) with toxiproxy_url")

    def open(self, setup: RuntimeSetup) -> DockerRuntime:
        return DockerRuntime(setup.run_id, setup.run_dir, setup.stack_dir, setup.build_args, setup.stack_name,
                             network=setup.network or setup.stack.network)

    def clean(self, run_id: str) -> list[str]:
        try:
            return remove_labelled(run_id)
        except EnvironmentFailure as exc:
            return [f"could not remove the run's containers: {exc.message}"]


class DockerRuntime:
    name = "docker"

    def __init__(self, run_id: str, run_dir: Path, stack_dir: Path, build_args: dict[str, str] | None = None,
                 stack_name: str = "stack", network: str = "run") -> None:
        self.client = engine()
        self.run_id = run_id
        self.network_mode = network
        self.run_dir = run_dir
        self.stack_dir = stack_dir
        self.build_args = dict(build_args or {})
        self.stack_name = stack_name
        self.containers: dict[str, Any] = {}
        self.services: dict[str, Service] = {}
        self.logs: dict[str, Path] = {}
        self.launch: dict[str, tuple[Service, int, dict[str, str]]] = {}
        self.images: dict[str, str] = {}  # build context -> tag built in this run
        self.build_seconds = 0.0

    # ------------------------------------------------------------ network
    @property
    def network_name(self) -> str | None:
        """The run's own network (``network: run``), or None on the host's network."""
        return f"aichaos-{self.run_id}" if self.network_mode == "run" else None

    @property
    def proxy_host(self) -> str:
        return PROXY_ALIAS if self.network_name else "127.0.0.1"

    @property
    def bind_host(self) -> str:
        """Where services and the fault proxy listen: every address inside the run's own network
        (only the published ports reach the host, on 127.0.0.1), else loopback."""
        return "0.0.0.0" if self.network_name else "127.0.0.1"

    def proxy_listen_address(self) -> str:
        """Inside the run's network the proxy container has its ports to itself: any will do. On
        the host's network, one from aichaos.ports, like the services'."""
        return "0.0.0.0:0" if self.network_name else f"127.0.0.1:{free_port()}"

    def peer_address(self, name: str, port: int) -> str:
        return f"{name if self.network_name else '127.0.0.1'}:{port}"

    def prepare(self, report: Callable[[str], None]) -> dict[str, Any]:
        """Make the run's network (``network: run``); nothing to do on the host's."""
        self.open_network()
        report(f"docker network {self.network_name}: services reach each other by name, ports are published "
               "on 127.0.0.1" if self.network_name else "docker network: the host's")
        return {"network": self.network_name or "host"}

    def start_fault_proxy(self, url: str | None) -> ProxyBackend:
        if url:
            return start_proxy_backend(self.run_dir, url)
        from aichaos.runtime.docker_proxy import start_proxy_container_backend

        return start_proxy_container_backend(self.run_dir, self, self.build_args)

    def stack_facts(self) -> tuple[dict[str, Any], str]:
        return ({"image_build_s": round(self.build_seconds, 3)},
                f" under docker (images built or checked in {self.build_seconds:.1f}s)")

    def open_network(self) -> None:
        from docker.errors import APIError

        if self.network_name is None:
            return
        try:
            self.client.networks.create(self.network_name, driver="bridge", labels={RUN_LABEL: self.run_id})
        except APIError as exc:
            raise StackStartError(f"could not create the docker network {self.network_name}: "
                                  f"{exc.explanation or exc}",
                                  hint="or use the host's network: network: host in the stack file, "
                                       "or --network host") from exc

    def close_network(self) -> list[str]:
        """Remove the run's network, found by its label (so also one whose creation was interrupted
        before its answer came back)."""
        from docker.errors import APIError, NotFound

        if self.network_name is None:
            return []
        leftovers = []
        try:
            found = self.client.networks.list(filters={"label": f"{RUN_LABEL}={self.run_id}"})
        except APIError as exc:
            return [f"network {self.network_name} (could not be listed: {exc.explanation or exc})"]
        for network in found:
            try:
                network.remove()
            except NotFound:
                continue  # already gone
            except APIError as exc:
                leftovers.append(f"network {network.name} ({exc.explanation or exc})")
        return leftovers

    def network_options(self, alias: str, ports: list[int]) -> dict[str, Any]:
        """containers.run() arguments that put a container on the run's network under ``alias`` with
        ``ports`` published on 127.0.0.1, or on the host's network."""
        if self.network_name is None:
            return {"network_mode": "host"}
        return {"network": self.network_name, "hostname": alias,
                "networking_config": {self.network_name: self.client.api.create_endpoint_config(aliases=[alias])},
                "ports": {f"{port}/tcp": ("127.0.0.1", port) for port in ports}}

    # ------------------------------------------------------------ images
    def image_for(self, name: str, service: Service) -> str:
        """The image of a service: built from its context (once per run and context; docker's
        layer cache makes a rebuild of an unchanged context take seconds), else pulled if absent."""
        from docker.errors import APIError, BuildError, ImageNotFound

        if service.build is not None:
            context = (self.stack_dir / service.build).resolve()
            if str(context) in self.images:
                return self.images[str(context)]
            key = hashlib.sha256(f"{context}|{sorted(self.build_args.items())}".encode()).hexdigest()[:12]
            tag = service.image if service.image else f"aichaos-{self.stack_name}-{key}:latest"
            started = time.monotonic()
            try:
                self.client.images.build(path=str(context), tag=tag, buildargs=self.build_args or None,
                                         network_mode="host", rm=True, forcerm=True)
            except BuildError as exc:
                lines = [str(c.get("stream") or c.get("error") or "").rstrip() for c in exc.build_log]
                tail = "\n".join(line for line in lines if line)[-2000:]
                raise StackStartError(f"building the image of {name!r} from {context} failed: {exc.msg}\n{tail}",
                                      hint="check the Dockerfile and its build args (--build-arg)") from exc
            except (APIError, OSError, TypeError) as exc:
                raise StackStartError(f"building the image of {name!r} from {context} failed: {exc}") from exc
            self.build_seconds += time.monotonic() - started
            self.images[str(context)] = tag
            return tag
        image = service.image
        if image is None:
            raise StackStartError(f"service {name!r} has neither image nor build: docker cannot run it",
                                  hint=f"add services.{name}.image or .build to the stack file")
        try:
            self.client.images.get(image)
        except ImageNotFound:
            try:
                self.client.images.pull(image)
            except (APIError, OSError) as exc:
                raise StackStartError(f"image {image!r} of {name!r} is not here and could not be pulled: {exc}",
                                      hint="pull or build it first, or give the service a build context") from exc
        return image

    # ------------------------------------------------------------ services
    def start_service(self, name: str, service: Service, port: int, env: dict[str, str]) -> RunningService:
        from docker.errors import APIError

        image = self.image_for(name, service)
        argv = [substitute(a, port, self.bind_host) for a in service.command]
        environment = service_environment(service, port, env, self.bind_host)
        log_path = self.run_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            container = self.client.containers.run(
                image, command=argv, detach=True, environment=environment,
                name=f"aichaos-{self.run_id}-{name}", labels={RUN_LABEL: self.run_id, SERVICE_LABEL: name},
                stop_signal="SIGTERM", **self.network_options(name, [port]))
        except APIError as exc:
            raise StackStartError(f"service {name!r} could not start: {exc.explanation or exc}",
                                  hint=f"check services.{name}.command and image") from exc
        self.containers[name] = container
        self.services[name] = service
        self.logs[name] = log_path
        self.launch[name] = (service, port, env)
        return RunningService(name=name, host="127.0.0.1", port=port, pid=None, log_path=log_path,
                              container=container.id)

    def status(self, name: str) -> str:
        from docker.errors import APIError, NotFound

        container = self.containers.get(name)
        if container is None:
            return "missing"
        try:
            container.reload()
        except NotFound:
            return "removed"
        except APIError:
            return "unknown"
        return str(container.status)

    def exit_reason(self, name: str) -> str | None:
        if name not in self.containers:
            return "was never started"
        state = self.status(name)
        if state in ("running", "paused", "created", "restarting", "unknown"):
            return None
        facts = self.containers[name].attrs.get("State", {})
        if facts.get("OOMKilled"):
            limit = self.containers[name].attrs.get("HostConfig", {}).get("Memory") or 0
            over = f" (over its {limit / 2**20:g} MiB memory limit)" if limit else ""
            return f"was killed by the kernel's OOM killer{over}"
        code = facts.get("ExitCode") if state == "exited" else None
        return f"exited with code {code}" if code is not None else f"is {state}"

    def container_logs(self, name: str, lines: int = 40) -> str:
        try:
            text = self.containers[name].logs(tail=lines).decode(errors="replace")
        except Exception:  # the logs are a help for a message, never a failure
            return ""
        return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])

    def wait_ready(self, running: RunningService, service: Service) -> None:
        name = running.name
        running.ready_after_s = wait_ready(name, running.host, running.port, service.ready,
                                           alive=lambda: self.exit_reason(name),
                                           logs=lambda: self.container_logs(name),
                                           forwarded=self.network_name is not None)

    def is_alive(self, name: str) -> bool:
        return self.exit_reason(name) is None

    def kill_service(self, name: str) -> None:
        self._call(name, "kill")

    def restart_service(self, name: str) -> RunningService:
        """Kill the container (if it runs) and start it again: same container, port and environment."""
        if self.status(name) in ("running", "paused"):
            self._call(name, "kill")
            self.containers[name].wait(timeout=10)
        self._call(name, "start")
        _, port, _ = self.launch[name]
        return RunningService(name=name, host="127.0.0.1", port=port, pid=None, log_path=self.logs[name],
                              container=self.containers[name].id)

    def signal_service(self, name: str, signal_name: str) -> None:
        self._call(name, "kill", signal=signal_name)

    def stop_service(self, name: str) -> None:
        self._call(name, "stop", timeout=5)

    def container_of(self, name: str) -> Any:
        return self.containers.get(name)

    def pause_service(self, name: str) -> None:
        self._call(name, "pause")

    def resume_service(self, name: str) -> None:
        if self.status(name) == "paused":
            self._call(name, "unpause")

    def _call(self, name: str, action: str, **kwargs: Any) -> Any:
        from docker.errors import APIError

        try:
            return getattr(self.containers[name], action)(**kwargs)
        except APIError as exc:
            raise EnvironmentFailure(f"docker {action} of {name!r} failed: {exc.explanation or exc}") from exc

    def teardown(self, hurry: bool = False) -> list[str]:
        """Save each container's logs, then stop and remove it, dependents first."""
        from docker.errors import APIError, NotFound

        leftovers: list[str] = []
        for name in reversed(list(self.containers)):
            container = self.containers[name]
            try:
                if self.status(name) == "paused":
                    container.unpause()
                self.logs[name].write_bytes(container.logs())
                grace = min(0.5, self.services[name].stop_timeout) if hurry else self.services[name].stop_timeout
                container.stop(timeout=max(1, round(grace)))
                container.remove(force=True)
            except NotFound:
                continue
            except APIError as exc:
                leftovers.append(f"container {container.name} ({exc.explanation or exc})")
        return leftovers


def remove_labelled(run_id: str | None = None) -> list[str]:
    """Remove every container and network aichaos made (of one run, or of all runs), containers first
    since a network with containers on it cannot go. Returns what was done."""
    from docker.errors import DockerException

    client = engine()
    label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    try:
        containers = client.containers.list(all=True, filters={"label": label})
        networks = client.networks.list(filters={"label": label})
    except DockerException as exc:
        raise EnvironmentFailure(f"could not list the containers and networks labelled {label}: {exc}") from exc
    done = []
    for container in containers:
        try:
            if container.status == "paused":
                container.unpause()
            container.remove(force=True)
            done.append(f"removed container {container.name}")
        except Exception as exc:  # report and go on with the others
            done.append(f"could not remove container {container.name}: {exc}")
    for network in networks:
        try:
            network.remove()
            done.append(f"removed network {network.name}")
        except Exception as exc:  # report and go on with the others
            done.append(f"could not remove network {network.name}: {exc}")
    return done
