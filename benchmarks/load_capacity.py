"""Requests per second that aichaos's load sustains, next to bare Locust, same run, same machine.

A trivial loopback endpoint (a raw asyncio protocol on uvloop answering a fixed HTTP/1.1 response,
cheap enough not to be the bottleneck) is driven for a fixed time by:

- bare Locust: ``locust --master --headless`` with N ``locust --worker`` processes and a locustfile
  whose FastHttpUser sends ``GET /`` with no wait;
- aichaos's load process (``aichaos.load.locust_process``, what ``aichaos run`` starts) with the
  same request and no wait, as a master with N workers: its users, its per-second buckets shipped
  with the workers' reports, and the JSON lines it streams to aichaos.

N is 1 and 2; the rounds are interleaved and the median is printed. Targets: aichaos's collection
costs at most 10% against bare Locust, and at least 5,000 req/s with one worker.

    python benchmarks/load_capacity.py [--seconds 10] [--users 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aichaos.ports import free_port
from aichaos.runtime.readiness import http_ok

ENDPOINT = '''
import asyncio, sys
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass

RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nContent-Type: text/plain\\r\\n\\r\\nok"

class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""

    def data_received(self, data):
        self.pending += data
        count = self.pending.count(b"\\r\\n\\r\\n")  # GETs without bodies: one request per blank line
        if count:
            self.pending = self.pending[self.pending.rfind(b"\\r\\n\\r\\n") + 4:]
            self.transport.write(RESPONSE * count)

async def main(port):
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
'''

LOCUSTFILE = '''
from locust import FastHttpUser, constant, task

class Bare(FastHttpUser):
    wait_time = constant(0)

    @task
    def work(self):
        self.client.get("/", name="work")
'''


def bare_locust(host: str, workers: int, args: argparse.Namespace, folder: Path) -> float:
    locustfile = folder / "bare.py"
    locustfile.write_text(LOCUSTFILE)
    port = free_port()
    common = ["-m", "locust", "-f", str(locustfile)]
    master = subprocess.Popen(
        [sys.executable, *common, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
         "--headless", "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds:g}s",
         "--expect-workers", str(workers), "--host", host, "--json", "--only-summary", "--loglevel", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs = [subprocess.Popen([sys.executable, *common, "--worker", "--master-host", "127.0.0.1",
                               "--master-port", str(port), "--loglevel", "WARNING"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    out, _ = master.communicate(timeout=args.seconds + 120)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
    stats = json.loads(out)
    return sum(s["num_requests"] for s in stats) / args.seconds


def aichaos_load(host: str, workers: int, args: argparse.Namespace) -> float:
    spec = {"host": host, "users": args.users, "rate": None, "spawn_rate": float(args.users), "wait_min": 0.0,
            "wait_max": 0.0, "timeout": 10.0, "seed": 1, "levels": [[args.users, None, 0]],
            "mixes": [[{"name": "work", "method": "GET", "path": "/", "weight": 1, "headers": {}, "json": None}]],
            "locustfile": None, "workers": workers, "remote_workers": 0, "master_bind": "127.0.0.1",
            "master_port": free_port()}
    proc = subprocess.Popen([sys.executable, "-m", "aichaos.load.locust_process"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec) + "\n")
    proc.stdin.flush()
    started: float | None = None
    streamed = 0
    for line in proc.stdout:
        msg = json.loads(line)
        if msg["type"] == "ready" and started is None:
            started = time.monotonic()
            # like bare Locust's -t: stop after the run time, counted from the start of spawning
            threading_stop(proc, args.seconds)
        elif msg["type"] == "samples":
            streamed += sum(b["count"] for b in msg["buckets"])
        elif msg["type"] == "done":
            if msg["locust_total"] != streamed:
                raise SystemExit(f"aichaos lost samples: streamed {streamed}, Locust counted {msg['locust_total']}")
            total = msg["locust_total"]
            break
        elif msg["type"] == "error":
            raise SystemExit(f"load process error: {msg['message']}")
    proc.wait(30)
    return total / args.seconds


def threading_stop(proc: subprocess.Popen[str], seconds: float) -> None:
    import threading

    def stop() -> None:
        time.sleep(seconds)
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()

    threading.Thread(target=stop, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", ENDPOINT, str(port)])
    host = f"http://127.0.0.1:{port}"
    results: dict[tuple[str, int], list[float]] = {}
    try:
        deadline = time.monotonic() + 20
        while not http_ok("127.0.0.1", port, "/"):
            if time.monotonic() > deadline:
                raise SystemExit("the endpoint did not start")
            time.sleep(0.1)
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(args.rounds):
                for workers in (1, 2):
                    results.setdefault(("bare Locust", workers), []).append(bare_locust(host, workers, args,
                                                                                         Path(folder)))
                    results.setdefault(("aichaos", workers), []).append(aichaos_load(host, workers, args))
    finally:
        server.terminate()
        server.wait(10)

    def median(key: tuple[str, int]) -> float:
        values = sorted(results[key])
        return values[len(values) // 2]

    print(f"{args.users} users, no wait, GET / on a loopback endpoint, {args.seconds:g}s x {args.rounds} rounds "
          f"(median), {os.cpu_count()} cores")
    print(f"{'load':<14} {'workers':>7} {'req/s':>9}")
    for key in sorted(results, key=lambda k: (k[1], k[0])):
        print(f"{key[0]:<14} {key[1]:>7} {median(key):>9.0f}")
    print()
    for workers in (1, 2):
        cost = 1 - median(("aichaos", workers)) / median(("bare Locust", workers))
        print(f"aichaos's cost against bare Locust, {workers} worker(s): {cost:+.1%} (target <= 10%)")
    print(f"aichaos with 1 worker: {median(('aichaos', 1)):.0f} req/s (target >= 5,000)")


if __name__ == "__main__":
    main()
