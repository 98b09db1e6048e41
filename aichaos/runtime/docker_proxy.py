"""The fault proxy of the docker runtime, as a container on the run's network (as
``aichaos-fault-proxy``, its API published on 127.0.0.1) or on the host's:

1. the ``ghcr.io/shopify/toxiproxy`` image, when it is here or can be pulled;
2. otherwise aichaos's builtin server in an image built on the spot from this installation's
   ``aichaos`` package (standard library only, on the stack's base image), and the run says so.

The container is labelled with the run id like the stack's, so teardown and ``aichaos cleanup``
remove it. Its API is on a free loopback port of the host.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aichaos import __version__
from aichaos.errors import ProxyError
from aichaos.experiment.stack import PROXY_ALIAS
from aichaos.ports import free_port
from aichaos.proxy.backend import ProxyBackend, wait_for_api
from aichaos.runtime.docker import RUN_LABEL, SERVICE_LABEL, DockerRuntime

TOXIPROXY_IMAGE = "ghcr.io/shopify/toxiproxy:latest"
DOCKERFILE = """\
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
COPY aichaos/ /opt/aichaos/aichaos/
ENV PYTHONPATH=/opt/aichaos PYTHONUNBUFFERED=1
ENTRYPOINT ["python3", "-m", "aichaos.proxy"]
"""


def _toxiproxy_image(client: Any, pull_timeout: float) -> str | None:
    from docker.errors import DockerException, ImageNotFound

    try:
        client.images.get(TOXIPROXY_IMAGE)
        return TOXIPROXY_IMAGE
    except ImageNotFound:
        pass
    except DockerException:
        return None
    try:
        import docker

        docker.from_env(timeout=int(pull_timeout)).images.pull(TOXIPROXY_IMAGE)
        return TOXIPROXY_IMAGE
    except Exception:  # no registry, no network, a slow one: the builtin server will do
        return None


def _builtin_image(client: Any, build_args: dict[str, str]) -> str:
    """Build (once per aichaos version, source and base) the image of the builtin server."""
    from docker.errors import BuildError, DockerException, ImageNotFound

    package = Path(__file__).resolve().parent.parent
    sources = sorted(p for p in package.rglob("*.py"))
    digest = hashlib.sha256(str(sorted(build_args.items())).encode())
    for path in sources:
        digest.update(path.read_bytes())
    tag = f"aichaos-proxy:{__version__}-{digest.hexdigest()[:10]}"
    try:
        client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    with tempfile.TemporaryDirectory() as context:
        root = Path(context)
        for path in sources:
            target = root / "aichaos" / path.relative_to(package)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        (root / "Dockerfile").write_text(DOCKERFILE)
        try:
            client.images.build(path=context, tag=tag, buildargs=build_args or None, network_mode="host", rm=True)
        except (BuildError, DockerException) as exc:
            raise ProxyError(f"could not build the builtin fault proxy's image: {exc}",
                             hint="pass a base image that has python3 with --build-arg BASE_IMAGE=...") from exc
    return tag


def start_proxy_container(runtime: DockerRuntime, build_args: dict[str, str], log_path: Path,
                          pull_timeout: float = 20.0) -> tuple[str, str, Any]:
    """Start the proxy container on the runtime's network; returns (kind, API URL, container)."""
    from docker.errors import DockerException

    client, run_id = runtime.client, runtime.run_id
    port = free_port()
    network = runtime.network_options(PROXY_ALIAS, [port])
    bind = runtime.bind_host  # 0.0.0.0 inside the run's network, where only its API port is published
    image = _toxiproxy_image(client, pull_timeout)
    if image is not None:
        kind, command = "toxiproxy-image", ["-host", bind, "-port", str(port)]
    else:
        image = _builtin_image(client, build_args)
        kind, command = "builtin-container", ["--host", bind, "--port", str(port)]
    try:
        container = client.containers.create(image, command=command,
                                             name=f"aichaos-{run_id}-fault-proxy",
                                             labels={RUN_LABEL: run_id, SERVICE_LABEL: "fault-proxy"},
                                             **network)
        runtime.join_networks(container, PROXY_ALIAS)  # the stack's own networks too: it reaches every service
        container.start()
    except DockerException as exc:
        raise ProxyError(f"could not start the fault proxy container from {image}: {exc}") from exc
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return kind, f"http://{runtime.host}:{port}", container


def stop_proxy_container(container: Any, log_path: Path) -> list[str]:
    """Save the proxy's log and remove its container; returns what could not be removed."""
    from docker.errors import DockerException, NotFound

    try:
        log_path.write_bytes(container.logs())
    except DockerException:
        pass  # the log is a help; its container is what must go
    try:
        container.remove(force=True)
    except NotFound:
        return []  # already gone
    except DockerException as exc:
        return [f"fault proxy container {container.name} ({exc})"]
    return []


def container_alive(container: Any) -> bool:
    from docker.errors import DockerException

    try:
        container.reload()
    except DockerException:
        return False
    return bool(container.status == "running")




def start_proxy_container_backend(run_dir: Path, runtime: DockerRuntime, build_args: dict[str, str],
                                  timeout: float = 30.0) -> ProxyBackend:
    """The docker runtime's fault proxy: a container on the runtime's network."""
    log_path = run_dir / "logs" / "proxy.log"
    kind, url, container = start_proxy_container(runtime, build_args, log_path)
    backend = ProxyBackend(kind, url, log_path=log_path, watch=lambda: container_alive(container),
                           stopper=lambda: stop_proxy_container(container, log_path))
    try:
        backend.version = wait_for_api(url, None, log_path, timeout)
    except BaseException:
        backend.close()
        raise
    return backend
