"""Readiness checks: poll until a service answers, with a deadline that ends in a useful error."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable

from aichaos.errors import StackStartError
from aichaos.experiment.stack import Readiness


def http_ok(host: str, port: int, path: str, timeout: float = 2.0) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "aichaos-readiness"})
        return 200 <= conn.getresponse().status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def tcp_ok(host: str, port: int, timeout: float = 1.0, hold: float = 0.0) -> bool:
    """The port accepts a connection; with ``hold``, the connection must also stay open that long.

    A port published by Docker (``-p``) is accepted by the engine's forwarder whether or not the
    service listens yet; the forwarder then closes the connection at once when the service does not
    answer. So behind a forwarder, only a connection that is not closed within ``hold`` seconds
    means the service listens. (A ready server that speaks first, like a banner, counts too.)
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if hold <= 0:
                return True
            sock.settimeout(hold)
            try:
                return sock.recv(1, socket.MSG_PEEK) != b""
            except TimeoutError:
                return True  # still open, waiting for us to speak
    except OSError:
        return False


def wait_ready(name: str, host: str, port: int, readiness: Readiness,
               alive: Callable[[], str | None], logs: Callable[[], str], forwarded: bool = False,
               health: Callable[[], str] | None = None) -> float:
    """Wait until ``name`` is ready; returns seconds waited.

    ``alive`` returns None while the service runs, or why it is gone (e.g. "exited with code 1").
    ``forwarded``: the port is a forwarder's (a published docker port), see ``tcp_ok``.
    ``health``: the container's health as the engine reports it ("starting", "healthy", "unhealthy"),
    for ``ready: {health: true}``.
    """
    start = time.monotonic()
    deadline = start + readiness.timeout
    if readiness.health and health is None:
        raise StackStartError(f"service {name!r} is ready when its container's healthcheck says so, and this "
                              "runtime runs no container", hint="use runtime: docker, or another ready probe")
    probe = (f"GET http://{host}:{port}{readiness.http}" if readiness.http else "the container's healthcheck"
             if readiness.health else "the process running" if readiness.running else f"TCP {host}:{port}")
    while True:
        gone = alive()
        if gone is not None:
            raise StackStartError(f"service {name!r} {gone} before it was ready\n{logs()}",
                                  hint=f"run its command by hand to see why; readiness probe was {probe}")
        hold = 0.25 if forwarded else 0.0
        if readiness.http:
            ok = http_ok(host, port, readiness.http)
        elif readiness.health and health is not None:
            ok = health() == "healthy"
        elif readiness.running:
            ok = True
        else:
            ok = tcp_ok(host, port, hold=hold)
        if ok:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise StackStartError(
                f"service {name!r} was not ready after {readiness.timeout:g}s ({probe} did not succeed)\n{logs()}",
                hint=f"raise services.{name}.ready.timeout in the stack file if it is just slow to start")
        time.sleep(0.1)
