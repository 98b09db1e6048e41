"""Ports for services and proxies: never from the kernel's ephemeral range, never twice."""

from __future__ import annotations

import socket

from aichaos import ports


def test_ports_come_from_below_the_ephemeral_range_and_never_twice():
    low, _ = ports.ephemeral_range()
    given = [ports.free_port() for _ in range(300)]
    assert len(set(given)) == len(given)
    assert all(ports.FLOOR <= p < low for p in given)
    # what the kernel hands out for port 0 (a proxy listener, an outgoing connection) cannot be one of them
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(50)]
    try:
        assert not {s.getsockname()[1] for s in listeners} & set(given)
    finally:
        for s in listeners:
            s.close()


def test_a_port_in_use_is_skipped(monkeypatch):
    held = socket.create_server(("127.0.0.1", 0))
    taken = held.getsockname()[1]
    draws = iter([taken, taken + 1 if ports.bindable("127.0.0.1", taken + 1) else taken + 2])
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (taken + 5000, 65535))
    monkeypatch.setattr(ports, "FLOOR", taken)
    monkeypatch.setattr(ports._random, "randrange", lambda a, b: next(draws))
    try:
        port = ports.free_port()
        assert port != taken and port in (taken + 1, taken + 2)
    finally:
        held.close()


def test_without_room_below_the_range_the_kernel_picks_but_never_twice(monkeypatch):
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (ports.FLOOR + 10, 60999))
    given = [ports.free_port() for _ in range(50)]
    assert len(set(given)) == 50
