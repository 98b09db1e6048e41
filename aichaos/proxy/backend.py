"""Which Toxiproxy-API server serves a run, in order of preference:

1. a URL the user gives (experiment ``toxiproxy_url`` or ``--toxiproxy-url``);
2. ``toxiproxy-server`` found on PATH, started on a free loopback port;
3. the builtin server (``aichaos proxy serve``), started as a child process.

A runtime may serve the proxy its own way instead (the docker runtime starts it in a container on
the run's network, ``aichaos.runtime.docker_proxy``): it hands over how to watch and stop it. The
journal records which one served and its version.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aichaos.errors import ProxyError
from aichaos.interrupts import deferred
from aichaos.logtail import tail
from aichaos.ports import free_port
from aichaos.proxy.client import ToxiproxyClient

log = logging.getLogger(__name__)

READY_PREFIX = "aichaos proxy listening on "


@dataclass
class ProxyBackend:
    kind: str  # "url" | "toxiproxy-server" | "builtin" | "toxiproxy-image" | "builtin-container"
    url: str
    version: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None
    # a proxy that a runtime serves its own way (a container): how to watch it and how to stop it
    watch: Callable[[], bool] | None = field(default=None, repr=False)
    stopper: Callable[[], list[str]] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        """False once a proxy this run started has died (one at a URL is not watched)."""
        if self.process is not None:
            return self.process.poll() is None
        if self.watch is not None:
            return self.watch()
        return True

    @property
    def client(self) -> ToxiproxyClient:
        return ToxiproxyClient(self.url)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def close(self) -> list[str]:
        """Stop the proxy this run started; returns what could not be stopped."""
        if self.stopper is not None:
            return self.stopper()
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


def is_builtin(version: str) -> bool:
    """Whether a Toxiproxy-API server is the builtin one (which alone has HTTP toxics), from the
    version it reports (``aichaos.proxy.api.API_VERSION``)."""
    return "-aichaos." in version


def wait_for_api(url: str, process: subprocess.Popen[bytes] | None, log_path: Path, timeout: float) -> str:
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
        version = wait_for_api(backend_url, process, log_path, timeout)
    except BaseException:  # not up, or interrupted while coming up: it must not outlive us
        if process is not None:
            ProxyBackend(kind, backend_url, process=process).close()
        raise
    return ProxyBackend(kind, backend_url, version, process)
