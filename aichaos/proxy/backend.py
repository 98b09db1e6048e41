"""Which Toxiproxy-API server serves a run, in order of preference:

1. a URL the user gives (experiment ``toxiproxy_url`` or ``--toxiproxy-url``);
2. ``toxiproxy-server`` found on PATH, started on a free loopback port;
3. the builtin server (``aichaos proxy serve``), started as a child process.

Under the docker runtime, 2 and 3 are containers instead (``aichaos.proxy.container``): the
``ghcr.io/shopify/toxiproxy`` image when it is here or can be pulled, else the builtin server in an
image of its own. The journal records which one served and its version.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aichaos.errors import ProxyError
from aichaos.interrupts import deferred
from aichaos.proxy.client import ToxiproxyClient
from aichaos.runtime.logs import tail
from aichaos.runtime.ports import free_port

if TYPE_CHECKING:
    from aichaos.runtime.docker import DockerRuntime

log = logging.getLogger(__name__)

READY_PREFIX = "aichaos proxy listening on "


@dataclass
class ProxyBackend:
    kind: str  # "url" | "toxiproxy-server" | "builtin" | "toxiproxy-image" | "builtin-container"
    url: str
    version: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    container: Any = field(default=None, repr=False)  # the proxy's container under the docker runtime
    log_path: Path | None = None

    def alive(self) -> bool:
        """False once a proxy this run started has died (one at a URL is not watched)."""
        if self.process is not None:
            return self.process.poll() is None
        if self.container is not None:
            from aichaos.proxy.container import container_alive

            return container_alive(self.container)
        return True

    @property
    def client(self) -> ToxiproxyClient:
        return ToxiproxyClient(self.url)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def close(self) -> list[str]:
        """Stop the proxy this run started; returns what could not be stopped."""
        if self.container is not None:
            from aichaos.proxy.container import stop_proxy_container

            return stop_proxy_container(self.container, self.log_path or Path("/dev/null"))
        if self.process is None or self.process.poll() is not None:
            return []
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                return [f"fault proxy process {self.process.pid} (did not exit after SIGKILL)"]
        return []


def _wait_for_api(url: str, process: subprocess.Popen[bytes] | None, log_path: Path, timeout: float) -> str:
    client = ToxiproxyClient(url, timeout=1.0)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        try:
            return client.version()
        except ProxyError as exc:
            last = exc
            time.sleep(0.05)
    raise ProxyError(f"the fault proxy at {url} did not come up within {timeout:g}s ({last})\n{tail(log_path)}",
                     hint=f"see {log_path}")



def start_proxy_backend(run_dir: Path, url: str | None = None, timeout: float = 20.0,
                        kind: str | None = None) -> ProxyBackend:
    """Start (or attach to) the fault proxy for a run.

    ``kind`` forces "builtin" or "toxiproxy-server" instead of the order of preference.
    """
    if url:
        version = ToxiproxyClient(url).version()
        return ProxyBackend("url", url, version)
    log_path = run_dir / "logs" / "proxy.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("toxiproxy-server") if kind in (None, "toxiproxy-server") else None
    if kind == "toxiproxy-server" and binary is None:
        raise ProxyError("toxiproxy-server is not on PATH")
    port = free_port()
    if binary:
        kind = "toxiproxy-server"
        argv = [binary, "-host", "127.0.0.1", "-port", str(port)]
    else:
        kind = "builtin"
        argv = [sys.executable, "-m", "aichaos", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port)]
    backend_url = f"http://127.0.0.1:{port}"
    process: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "ab") as out, deferred():  # an interrupt waits until the pid is held
            try:
                process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, env={**os.environ, "NO_COLOR": "1"})
            except OSError as exc:
                raise ProxyError(f"cannot start the fault proxy ({argv[0]}): {exc}") from exc
        version = _wait_for_api(backend_url, process, log_path, timeout)
    except BaseException:  # not up, or interrupted while coming up: it must not outlive us
        if process is not None:
            ProxyBackend(kind, backend_url, process=process).close()
        raise
    return ProxyBackend(kind, backend_url, version, process)


def start_proxy_container_backend(run_dir: Path, runtime: DockerRuntime, build_args: dict[str, str],
                                  timeout: float = 30.0) -> ProxyBackend:
    """The docker runtime's fault proxy: a container on the runtime's network (see
    ``aichaos.proxy.container``)."""
    from aichaos.proxy.container import start_proxy_container

    log_path = run_dir / "logs" / "proxy.log"
    kind, url, container = start_proxy_container(runtime, build_args, log_path)
    backend = ProxyBackend(kind, url, container=container, log_path=log_path)
    try:
        backend.version = _wait_for_api(url, None, log_path, timeout)
    except BaseException:
        backend.close()
        raise
    return backend
