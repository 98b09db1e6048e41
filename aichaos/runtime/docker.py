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

Services listen on the port aichaos allocates (``{port}`` and ``$PORT``) either way, or on a fixed
port the stack names (a Compose service's container port), published on a free port of 127.0.0.1 on
the run's network. Each container's output is saved to ``<run dir>/logs/<service>.log`` when it
stops, and shown when it fails to become ready.

The stack's own ``networks`` and ``volumes`` (a Compose file's) are made per run, labelled like the
containers and removed after the run (or by ``aichaos cleanup``), unless ``external``; the fault
proxy joins every network. ``gpus`` and ``devices`` become the engine's device requests
(``device_requests``), and the journal records what each container got. A Compose
``healthcheck`` is the container's, and ``ready: {health: true}`` waits for the engine to call it
healthy.

The engine is the one ``DOCKER_HOST`` names (the docker SDK's ``from_env``), local or remote. On a
remote engine the published ports are on that host's addresses (not only its loopback), and the
load, readiness probes, scraping and the fault proxy's API reach them at the host ``DOCKER_HOST``
names; the network ``host`` needs a local engine.

This is the only module that imports the docker SDK; its errors are translated here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aichaos.errors import EnvironmentFailure, StackStartError, UsageError
from aichaos.experiment.stack import PROXY_ALIAS, Build, DeviceRequest, Service, Stack
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


def engine_host(docker_host: str | None = None) -> str:
    """Where the engine's published ports are reached from here: the host of a remote ``DOCKER_HOST``
    (``tcp://`` or ``ssh://``), else 127.0.0.1."""
    url = docker_host if docker_host is not None else os.environ.get("DOCKER_HOST", "")
    if url.startswith(("tcp://", "ssh://", "http://", "https://")):
        host = urlsplit(url).hostname
        if host and host not in ("localhost", "127.0.0.1", "::1"):
            return host
    return "127.0.0.1"


def device_requests(service: Service) -> list[DeviceRequest]:
    """The devices a container asks for: ``gpus`` (all, a count, or ids; nvidia, capability gpu, as
    ``docker run --gpus`` does) and the stack's ``devices`` (Compose's device reservations)."""
    out: list[DeviceRequest] = []
    if service.gpus is not None:
        if isinstance(service.gpus, list):
            out.append(DeviceRequest(driver="nvidia", device_ids=service.gpus, capabilities=["gpu"]))
        else:
            out.append(DeviceRequest(driver="nvidia", count=service.gpus, capabilities=["gpu"]))
    out.extend(service.devices)
    return out


def engine_device_requests(requests: list[DeviceRequest]) -> list[Any]:
    """The docker SDK's ``DeviceRequest`` objects for ``requests`` (count all is -1 for the engine)."""
    from docker.types import DeviceRequest as EngineRequest

    return [EngineRequest(driver=r.driver or "", count=-1 if r.count == "all" else (r.count or 0),
                          device_ids=r.device_ids or None, capabilities=[r.capabilities],
                          options=r.options or None)
            for r in requests]


def gpus_given(requests: list[DeviceRequest]) -> list[str] | None:
    """What the journal records of a container's GPUs: device ids, or "all", or "N" of a count."""
    given: list[str] = []
    for r in requests:
        given += r.device_ids or (["all"] if r.count == "all" or r.count is None else [f"{r.count} of any"])
    return given or None


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

    def check(self, setup: RuntimeSetup) -> None:
        if (setup.network or setup.stack.network) == "run" and setup.toxiproxy_url:
            raise UsageError("a fault proxy at a URL cannot reach the services on the run's own docker network: "
                             "use network: host in the stack file (or --network host) with toxiproxy_url")
        if (setup.network or setup.stack.network) == "host" and (setup.stack.networks or any(
                s.networks for s in setup.stack.services.values())):
            raise UsageError("the stack names networks of its own, and the host's network has none: use "
                             "network: run (or --network run)")

    def unavailable(self) -> str | None:
        return None if engine_answers() else "no Docker engine answers"

    def require(self) -> None:
        engine()

    def open(self, setup: RuntimeSetup) -> DockerRuntime:
        return DockerRuntime(setup.run_id, setup.run_dir, setup.stack_dir, setup.build_args, setup.stack_name,
                             network=setup.network or setup.stack.network, stack=setup.stack)

    def clean(self, run_id: str) -> list[str]:
        try:
            return remove_labelled(run_id)
        except EnvironmentFailure as exc:
            return [f"could not remove the run's containers: {exc.message}"]


class DockerRuntime:
    name = "docker"

    def __init__(self, run_id: str, run_dir: Path, stack_dir: Path, build_args: dict[str, str] | None = None,
                 stack_name: str = "stack", network: str = "run", stack: Stack | None = None) -> None:
        self.client = engine()
        self.stack = stack
        self.host = engine_host()  # where published ports are reached from here
        self.publish_ip = "127.0.0.1" if self.host == "127.0.0.1" else "0.0.0.0"
        self.run_id = run_id
        self.network_mode = network
        self.run_dir = run_dir
        self.stack_dir = stack_dir
        self.build_args = dict(build_args or {})
        self.stack_name = stack_name
        self.containers: dict[str, Any] = {}
        self.services: dict[str, Service] = {}
        self.logs: dict[str, Path] = {}
        self.launch: dict[str, dict[str, int]] = {}  # service -> its named ports as reached from here
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
        """Make the run's network (``network: run``), the stack's networks and volumes."""
        self.open_network()
        report(f"docker network {self.network_name}: services reach each other by name, ports are published "
               f"on {self.publish_ip}" if self.network_name else "docker network: the host's")
        facts: dict[str, Any] = {"network": self.network_name or "host"}
        if self.host != "127.0.0.1":
            facts["docker_host"] = self.host
        if self.stack is not None and (self.stack.networks or self.stack.volumes):
            self.open_stack_resources()
            facts["networks"] = dict(self.stack_networks)
            facts["volumes"] = dict(self.stack_volumes)
        return facts

    # the stack's own networks and volumes (a Compose file's): name in the file -> name in the engine
    @property
    def stack_networks(self) -> dict[str, str]:
        if self.stack is None:
            return {}
        return {name: (spec.name if spec and spec.name else f"aichaos-{self.run_id}-{name}")
                for name, spec in self.stack.networks.items()}

    @property
    def stack_volumes(self) -> dict[str, str]:
        if self.stack is None:
            return {}
        return {name: (spec.name if spec and spec.name else f"aichaos-{self.run_id}-{name}")
                for name, spec in self.stack.volumes.items()}

    def open_stack_resources(self) -> None:
        from docker.errors import APIError, NotFound

        assert self.stack is not None
        labels = {RUN_LABEL: self.run_id}
        try:
            for name, spec in self.stack.networks.items():
                engine_name = self.stack_networks[name]
                if spec is not None and spec.external:
                    self.client.networks.get(engine_name)
                else:
                    self.client.networks.create(engine_name, driver="bridge", labels=labels,
                                                internal=bool(spec and spec.internal))
            for name, vspec in self.stack.volumes.items():
                engine_name = self.stack_volumes[name]
                if vspec is not None and vspec.external:
                    self.client.volumes.get(engine_name)
                else:
                    self.client.volumes.create(engine_name, labels=labels)
        except NotFound as exc:
            raise StackStartError(f"an external network or volume of the stack is not there: {exc.explanation or exc}",
                                  hint="create it first (external: true means aichaos never makes it)") from exc
        except APIError as exc:
            raise StackStartError(f"could not create the stack's networks and volumes: "
                                  f"{exc.explanation or exc}") from exc

    def networks_of(self, service: Service | None) -> list[str]:
        """The engine's networks a container joins: the service's own networks (by default the run's),
        every one for the fault proxy (``service`` None)."""
        if self.network_name is None:
            return []
        if service is None:
            return [self.network_name, *self.stack_networks.values()]
        if service.networks:
            return [self.stack_networks[n] for n in service.networks]
        return [self.network_name]

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
        """Remove the run's networks and volumes, found by their label (so also one whose creation was
        interrupted before its answer came back)."""
        from docker.errors import APIError, NotFound

        leftovers = []
        try:
            for volume in self.client.volumes.list(filters={"label": f"{RUN_LABEL}={self.run_id}"}):
                try:
                    volume.remove(force=True)
                except NotFound:
                    continue
                except APIError as exc:
                    leftovers.append(f"volume {volume.name} ({exc.explanation or exc})")
        except APIError as exc:
            leftovers.append(f"the run's volumes (could not be listed: {exc.explanation or exc})")
        if self.network_name is None:
            return leftovers
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

    def network_options(self, alias: str, ports: list[int] | dict[int, int],
                        service: Service | None = None) -> dict[str, Any]:
        """containers.run() arguments that put a container on its first network (the run's, or the
        service's own first) under ``alias`` with ``ports`` published on 127.0.0.1 (a list: the same
        numbers; a mapping: container port -> host port), or on the host's network. ``join_networks``
        puts it on the others."""
        if self.network_name is None:
            return {"network_mode": "host"}
        first = self.networks_of(service)[0]
        published = ports if isinstance(ports, dict) else {port: port for port in ports}
        return {"network": first, "hostname": alias,
                "networking_config": {first: self.client.api.create_endpoint_config(aliases=[alias])},
                "ports": {f"{inner}/tcp": (self.publish_ip, outer) for inner, outer in published.items()}}

    def join_networks(self, container: Any, alias: str, service: Service | None = None) -> None:
        """Connect a created container to its networks after the first, under ``alias``."""
        from docker.errors import APIError

        for network in self.networks_of(service)[1:]:
            try:
                self.client.networks.get(network).connect(container, aliases=[alias])
            except APIError as exc:
                raise StackStartError(f"could not put {alias!r} on the network {network}: "
                                      f"{exc.explanation or exc}") from exc

    # ------------------------------------------------------------ images
    def image_for(self, name: str, service: Service) -> str:
        """The image of a service: built from its context (once per run and context; docker's
        layer cache makes a rebuild of an unchanged context take seconds), else pulled if absent."""
        from docker.errors import APIError, BuildError, ImageNotFound

        if service.build is not None:
            build = service.build if isinstance(service.build, Build) else Build(context=service.build)
            context = (self.stack_dir / build.context).resolve()
            args = {**build.args, **self.build_args}  # --build-arg wins over the file's args
            key = hashlib.sha256(f"{context}|{build.dockerfile}|{sorted(args.items())}".encode()).hexdigest()[:12]
            if key in self.images:
                return self.images[key]
            tag = service.image if service.image else f"aichaos-{self.stack_name}-{key}:latest"
            started = time.monotonic()
            try:
                self.client.images.build(path=str(context), tag=tag, buildargs=args or None,
                                         dockerfile=build.dockerfile, network_mode="host", rm=True, forcerm=True)
            except BuildError as exc:
                lines = [str(c.get("stream") or c.get("error") or "").rstrip() for c in exc.build_log]
                tail = "\n".join(line for line in lines if line)[-2000:]
                raise StackStartError(f"building the image of {name!r} from {context} failed: {exc.msg}\n{tail}",
                                      hint="check the Dockerfile and its build args (--build-arg)") from exc
            except (APIError, OSError, TypeError) as exc:
                raise StackStartError(f"building the image of {name!r} from {context} failed: {exc}") from exc
            self.build_seconds += time.monotonic() - started
            self.images[key] = tag
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
    def published_ports(self, service: Service, ports: dict[str, int]) -> dict[str, int]:
        """Each named port as reached from here: on the host's network the port itself; on the run's
        network the same number for an allocated port, a free one of this machine for a fixed one
        (two services may both listen on 8080 in their containers)."""
        if self.network_name is None:
            return dict(ports)
        return {n: (p if service.ports.get(n) is None else free_port()) for n, p in ports.items()}

    def start_service(self, name: str, service: Service, port: int, env: dict[str, str],
                      ports: dict[str, int] | None = None) -> RunningService:
        from docker.errors import APIError

        inner = dict(ports or {service.port_names[0]: port})
        image = self.image_for(name, service)
        argv = [substitute(a, port, self.bind_host, inner) for a in service.command] if service.command else None
        environment = service_environment(service, port, env, self.bind_host, inner, self.stack_dir)
        log_path = self.run_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        outer = self.published_ports(service, inner)
        requests = device_requests(service)
        options: dict[str, Any] = {}
        if service.entrypoint:
            options["entrypoint"] = service.entrypoint
        if service.workdir:
            options["working_dir"] = service.workdir
        if requests:
            options["device_requests"] = engine_device_requests(requests)
        if service.healthcheck is not None:
            options["healthcheck"] = container_healthcheck(service)
        if service.volumes:
            options["mounts"] = self.mounts(service)
        self.services[name] = service  # before anything exists: teardown reads them for whatever was made
        self.logs[name] = log_path
        try:
            container = self.client.containers.create(
                image, command=argv, environment=environment,
                name=f"aichaos-{self.run_id}-{name}", labels={RUN_LABEL: self.run_id, SERVICE_LABEL: name},
                stop_signal="SIGTERM", **options,
                **self.network_options(name, {inner[n]: outer[n] for n in inner}, service))
            self.containers[name] = container  # recorded before it runs: teardown removes it whatever happens
            self.join_networks(container, name, service)
            container.start()
        except APIError as exc:
            raise StackStartError(f"service {name!r} could not start: {exc.explanation or exc}",
                                  hint=f"check services.{name}.command and image") from exc
        self.launch[name] = outer
        return RunningService(name=name, host=self.host, port=outer.get(service.port_names[0], port), pid=None,
                              log_path=log_path, container=container.id, ports=outer, gpus=gpus_given(requests))

    def mounts(self, service: Service) -> list[Any]:
        """The service's volumes as the engine's mounts: bind sources relative to the stack file, named
        volumes by their name for this run."""
        from docker.types import Mount as EngineMount

        out = []
        for mount in service.volumes:
            source = mount.source
            if mount.type == "bind" and source is not None:
                source = str((self.stack_dir / source).resolve())
            elif mount.type == "volume" and source is not None:
                source = self.stack_volumes.get(source, source)
            out.append(EngineMount(target=mount.target, source=source or "", type=mount.type,
                                   read_only=mount.read_only))
        return out

    def health(self, name: str) -> str:
        """The container's health as the engine reports it (starting, healthy, unhealthy; none)."""
        self.status(name)  # reloads
        state = self.containers[name].attrs.get("State", {})
        return str((state.get("Health") or {}).get("Status", "none"))

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
        running.ready_after_s = wait_ready(name, running.host, running.port_of(service.ready.port), service.ready,
                                           alive=lambda: self.exit_reason(name),
                                           logs=lambda: self.container_logs(name),
                                           forwarded=self.network_name is not None,
                                           health=lambda: self.health(name))

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
        outer = self.launch[name]
        service = self.services[name]
        return RunningService(name=name, host=self.host, port=next(iter(outer.values())), pid=None,
                              log_path=self.logs[name], container=self.containers[name].id, ports=dict(outer),
                              gpus=gpus_given(device_requests(service)))

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


def container_healthcheck(service: Service) -> dict[str, Any]:
    """The engine's healthcheck of a service (durations in nanoseconds)."""
    check = service.healthcheck
    assert check is not None
    ns = 1_000_000_000
    return {"test": check.test, "interval": int(check.interval * ns), "timeout": int(check.timeout * ns),
            "retries": check.retries, "start_period": int(check.start_period * ns)}


def remove_labelled(run_id: str | None = None) -> list[str]:
    """Remove every container and network aichaos made (of one run, or of all runs), containers first
    since a network with containers on it cannot go. Returns what was done."""
    from docker.errors import DockerException

    client = engine()
    label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    try:
        containers = client.containers.list(all=True, filters={"label": label})
        networks = client.networks.list(filters={"label": label})
        volumes = client.volumes.list(filters={"label": label})
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
    for volume in volumes:
        try:
            volume.remove(force=True)
            done.append(f"removed volume {volume.name}")
        except Exception as exc:  # report and go on with the others
            done.append(f"could not remove volume {volume.name}: {exc}")
    return done
