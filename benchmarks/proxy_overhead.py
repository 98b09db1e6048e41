"""Overhead of the fault proxy against a direct connection, side by side in one run.

Prints, for a direct connection and through the proxy (the builtin server as `aichaos run` starts
it, and a real toxiproxy-server too when one is on PATH):

- added round-trip time: median µs over 2,000 pings on one connection (target ≤ 100 µs added);
- bulk throughput: MB/s for 200 MB one way (target ≥ 500 MB/s);
- new connections per second: connect, one byte each way, close (target ≥ 1,500/s).

    python benchmarks/proxy_overhead.py [--bulk-mb 200] [--pings 2000] [--connections 3000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from aichaos.proxy.backend import start_proxy_backend
from aichaos.proxy.client import ToxiproxyClient


class Upstream:
    """Echo server (for pings and connections) and a sink (for bulk), one thread per connection."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            target = self._echo if self.mode == "echo" else self._sink
            threading.Thread(target=target, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def _sink(self, conn: socket.socket) -> None:
        buf = bytearray(1024 * 1024)
        view = memoryview(buf)
        with conn:
            while n := conn.recv_into(view):
                self.received += n
        self.done.set()


def ping_median_us(port: int, pings: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(pings):
            t = time.perf_counter()
            sock.sendall(b"p")
            sock.recv(1)
            samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def bulk_mb_s(port: int, sink: Upstream, megabytes: int) -> float:
    sink.received, chunk = 0, os.urandom(1024 * 1024)
    sink.done.clear()
    total = megabytes * 1024 * 1024
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(megabytes):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        sink.done.wait(60)
    elapsed = time.perf_counter() - started
    if sink.received != total:
        raise SystemExit(f"bulk: sink got {sink.received} of {total} bytes")
    return megabytes / elapsed


def connections_per_s(port: int, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"c")
            sock.recv(1)
    return count / (time.perf_counter() - started)


def measure(name: str, echo_port: int, sink_port: int, sink: Upstream, args: argparse.Namespace) -> dict[str, float]:
    return {"rtt": ping_median_us(echo_port, args.pings), "bulk": bulk_mb_s(sink_port, sink, args.bulk_mb),
            "conns": connections_per_s(echo_port, args.connections)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bulk-mb", type=int, default=200)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=3000)
    args = parser.parse_args()
    echo, sink = Upstream("echo"), Upstream("sink")
    results = {"direct": measure("direct", echo.port, sink.port, sink, args)}
    kinds = ["builtin"] + (["toxiproxy-server"] if shutil.which("toxiproxy-server") else [])
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            backend = start_proxy_backend(Path(tmp), kind=kind)
            try:
                client = ToxiproxyClient(backend.url)
                e = client.create_proxy("echo", f"127.0.0.1:{echo.port}")
                s = client.create_proxy("sink", f"127.0.0.1:{sink.port}")
                results[kind] = measure(kind, e.port, s.port, sink, args)
            finally:
                backend.close()
    direct = results["direct"]
    print(f"{'path':<18} {'median RTT µs':>14} {'added µs':>9} {'bulk MB/s':>10} {'conns/s':>9}")
    for name, r in results.items():
        added = "" if name == "direct" else f"{r['rtt'] - direct['rtt']:.0f}"
        print(f"{name:<18} {r['rtt']:>14.0f} {added:>9} {r['bulk']:>10.0f} {r['conns']:>9.0f}")
    b = results["builtin"]
    print(f"\nbuiltin proxy: added RTT {b['rtt'] - direct['rtt']:.0f} µs (target <= 100), bulk {b['bulk']:.0f} MB/s "
          f"(target >= 500), {b['conns']:.0f} connections/s (target >= 1500)")


if __name__ == "__main__":
    main()
