"""Ports for what aichaos starts: services, fault proxies and their listeners, the Locust master.

A port from ``bind((host, 0))`` comes from the kernel's ephemeral range, the range it also draws
from for every outgoing connection and every other bind to port 0, such as a fault proxy listener
created a moment later. Between the moment aichaos picks a service's port and the moment the
service binds it (seconds, for a model server loading torch), the kernel may hand that port to
someone else; the service then fails with "address already in use", or worse, its readiness probe
is answered by whoever took the port. So ports come from below the ephemeral range, where the kernel
never assigns one by itself: drawn at random, each checked to be free, and never handed out twice by
one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

FLOOR = 10000  # above the well-known and most registered service ports
_given: set[int] = set()
_lock = threading.Lock()
_random = random.Random()  # seeded from the OS: two processes draw different ports


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the ephemeral range that this process has not handed out before; from the
    kernel's ephemeral range only where the range below is too small to draw from."""
    low, _ = ephemeral_range()
    with _lock:
        if low - FLOOR >= 1000:
            for _ in range(200):
                port = _random.randrange(FLOOR, low)
                if port not in _given and bindable(host, port):
                    _given.add(port)
                    return port
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
