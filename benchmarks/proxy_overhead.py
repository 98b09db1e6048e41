"""Overhead of the fault proxy against a direct connection, side by side in one run.

Prints, for a direct connection and through the proxy (the builtin server as `aichaos run` starts
it, and a real toxiproxy-server too when one is on PATH):

- added round-trip time: median µs over 2,000 pings on one connection (target ≤ 100 µs added);
- bulk throughput: MB/s for 200 MB one way (target ≥ 500 MB/s);
- new connections per second: connect, one byte each way, close (target ≥ 1,500/s);
- HTTP: median µs of a keep-alive request/response (a small GET, a 1 KB answer with Content-Length)
  direct, through a plain (tcp) edge, and through an HTTP-aware edge (``protocol: http``, no toxic
  active), which follows each message's framing so that HTTP toxics can act on it.

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
            target = {"echo": self._echo, "sink": self._sink, "http": self._http}[self.mode]
            threading.Thread(target=target, args=(conn,), daemon=True).start()

    def _http(self, conn: socket.socket) -> None:
        answer = HTTP_ANSWER
        buf = b""
        with conn:
            while data := conn.recv(65536):
                buf += data
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    buf = buf[end + 4 :]
                    conn.sendall(answer)

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


HTTP_REQUEST = b"GET /ping HTTP/1.1\r\nHost: bench\r\nUser-Agent: proxy-overhead\r\nAccept: */*\r\n\r\n"
HTTP_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n"
               + b"x" * 1024)


def http_median_us(port: int, requests: int) -> float:
    """Median µs of a request and its whole answer, one keep-alive connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(requests):
            t = time.perf_counter()
            sock.sendall(HTTP_REQUEST)
            got = 0
            while got < len(HTTP_ANSWER):
                got += len(sock.recv(65536))
            samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


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
    echo, sink, web = Upstream("echo"), Upstream("sink"), Upstream("http")
    results = {"direct": measure("direct", echo.port, sink.port, sink, args)}
    http_results = {"direct": http_median_us(web.port, args.pings)}
    kinds = ["builtin"] + (["toxiproxy-server"] if shutil.which("toxiproxy-server") else [])
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            backend = start_proxy_backend(Path(tmp), kind=kind)
            try:
                client = ToxiproxyClient(backend.url)
                e = client.create_proxy("echo", f"127.0.0.1:{echo.port}")
                s = client.create_proxy("sink", f"127.0.0.1:{sink.port}")
                results[kind] = measure(kind, e.port, s.port, sink, args)
                w = client.create_proxy("web", f"127.0.0.1:{web.port}")
                http_results[f"{kind}, tcp edge"] = http_median_us(w.port, args.pings)
                if kind == "builtin":
                    client.set_protocol("web", "http")
                    http_results[f"{kind}, http edge"] = http_median_us(w.port, args.pings)
            finally:
                backend.close()
    direct = results["direct"]
    print(f"{'path':<18} {'median RTT µs':>14} {'added µs':>9} {'bulk MB/s':>10} {'conns/s':>9}")
    for name, r in results.items():
        added = "" if name == "direct" else f"{r['rtt'] - direct['rtt']:.0f}"
        print(f"{name:<18} {r['rtt']:>14.0f} {added:>9} {r['bulk']:>10.0f} {r['conns']:>9.0f}")
    print(f"\n{'HTTP keep-alive request':<26} {'median µs':>10} {'added µs':>9}")
    for name, value in http_results.items():
        added = "" if name == "direct" else f"{value - http_results['direct']:.0f}"
        print(f"{name:<26} {value:>10.0f} {added:>9}")
    b = results["builtin"]
    print(f"\nbuiltin proxy: added RTT {b['rtt'] - direct['rtt']:.0f} µs (target <= 100), bulk {b['bulk']:.0f} MB/s "
          f"(target >= 500), {b['conns']:.0f} connections/s (target >= 1500); an HTTP-aware edge with no fault adds "
          f"{http_results['builtin, http edge'] - http_results['builtin, tcp edge']:.0f} µs to a request over a plain "
          "edge")


if __name__ == "__main__":
    main()
