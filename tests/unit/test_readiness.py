"""Readiness probes against real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading

import pytest

from aichaos.runtime.base import substitute
from aichaos.runtime.readiness import tcp_ok


@pytest.fixture
def server():
    """A listener that either holds each connection open or closes it at once, like Docker's port
    forwarder does when nothing listens behind it."""
    listener = socket.create_server(("127.0.0.1", 0))
    mode = {"close": False}
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if mode["close"]:
                conn.close()
            else:
                held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], mode
    listener.close()
    for conn in held:
        conn.close()


def test_tcp_probe_behind_a_forwarder_needs_the_connection_to_stay_open(server):
    port, mode = server
    assert tcp_ok("127.0.0.1", port) and tcp_ok("127.0.0.1", port, hold=0.2)
    mode["close"] = True
    assert tcp_ok("127.0.0.1", port)  # a plain probe takes the accept alone
    assert not tcp_ok("127.0.0.1", port, hold=0.2)  # behind a forwarder that is not enough


def test_tcp_probe_of_a_closed_port_fails():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    assert not tcp_ok("127.0.0.1", port) and not tcp_ok("127.0.0.1", port, hold=0.2)


def test_substitute_fills_port_and_host():
    assert substitute("--bind={host}:{port}", 8080) == "--bind=127.0.0.1:8080"
    assert substitute("{host} {port} {host}", 1, "0.0.0.0") == "0.0.0.0 1 0.0.0.0"
