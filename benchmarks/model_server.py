"""Dynamic batching against batch size 1 on the sample model server, same run, same machine.

Starts the model server twice (``--max-batch 32`` then ``--max-batch 1``), drives each with 32
concurrent clients on kept-alive connections for a fixed time, and prints throughput and p50/p99.
Target: at least 3x the throughput with dynamic batching on CPU.

    python benchmarks/model_server.py [--seconds 15] [--clients 32] [--words 20] [--device auto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from aichaos.runtime.ports import free_port
from aichaos.runtime.readiness import http_ok


async def _drive(port: int, clients: int, seconds: float, text: str) -> tuple[list[float], int]:
    """32 kept-alive HTTP/1.1 connections on one asyncio loop: a load client cheap enough that it
    does not compete with the server it measures for the machine's two cores."""
    body = json.dumps({"text": text}).encode()
    request = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if status_line.split()[1] == b"200":
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors


def drive(port: int, clients: int, seconds: float, text: str) -> tuple[list[float], int]:
    """Run the load client in its own process and read back its latencies."""
    code = (f"import asyncio, json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import model_server as m; "
            f"print(json.dumps(asyncio.run(m._drive({port}, {clients}, {seconds}, {text!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    latencies, errors = json.loads(out)
    return latencies, errors


def run_server(max_batch: int, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "sample_stack.model_server", "--port", str(port),
                               "--max-batch", str(max_batch), "--max-wait-ms", "5", "--max-queue", "1024",
                               "--device", args.device, "--threads", str(args.threads)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not http_ok("127.0.0.1", port, "/ready"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the model server did not start")
            time.sleep(0.2)
        text = " ".join(["token"] * args.words)
        drive(port, args.clients, 2.0, text)  # warm up
        latencies, errors = drive(port, args.clients, args.seconds, text)
        count = len(latencies)
    finally:
        server.terminate()
        server.wait(10)
    latencies.sort()
    return {"rps": count / args.seconds, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1000, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    args = parser.parse_args()
    batched = run_server(32, args)
    single = run_server(1, args)
    print(f"{args.clients} clients, {args.words}-word inputs, {args.seconds:g}s each, device {args.device}")
    print(f"{'mode':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in (("dynamic batching (32)", batched), ("batch size 1", single)):
        print(f"{name:<22} {r['rps']:>8.1f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['errors']:>7.0f}")
    print(f"\nthroughput ratio: {batched['rps'] / single['rps']:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
