"""Dynamic batching against batch size 1 on the sample model server, same run, same machine.

Starts the model server with ``--max-batch 32`` and ``--max-batch 1``, each with 1 and 2 torch
threads, in interleaved rounds; drives each with 32 concurrent clients on kept-alive connections
for a fixed time, and prints throughput and p50/p99 (the median round). Ratios are printed at equal
thread counts and with each mode at its own best thread count: on CPU, one request's small matrix
products cannot use a second core (two threads make batch size 1 slower), while a batch's can, and
that is half of what batching buys here. Target: at least 3x the throughput with dynamic batching.

    python benchmarks/model_server.py [--seconds 8] [--rounds 2] [--threads 1 2] [--device auto]
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

from aichaos.ports import free_port
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


def run_server(max_batch: int, args: argparse.Namespace, threads: int) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "sample_stack.model_server", "--port", str(port),
                               "--max-batch", str(max_batch), "--max-wait-ms", "5", "--max-queue", "1024",
                               "--device", args.device, "--threads", str(threads)],
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
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to try")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    configs = [(batch, threads) for threads in args.threads for batch in (32, 1)]
    results: dict[tuple[int, int], list[dict[str, float]]] = {c: [] for c in configs}
    for _ in range(args.rounds):  # interleaved, so a noisy minute hurts every configuration alike
        for batch, threads in configs:
            results[(batch, threads)].append(run_server(batch, args, threads))

    def median(config: tuple[int, int]) -> dict[str, float]:
        runs = sorted(results[config], key=lambda r: r["rps"])
        return runs[len(runs) // 2]

    print(f"{args.clients} clients, {args.words}-word inputs, {args.seconds:g}s x {args.rounds} rounds each "
          f"(median shown), device {args.device}")
    print(f"{'mode':<22} {'threads':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for batch, threads in configs:
        r = median((batch, threads))
        name = "dynamic batching (32)" if batch == 32 else "batch size 1"
        print(f"{name:<22} {threads:>7} {r['rps']:>8.1f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['errors']:>7.0f}")
    print()
    for threads in args.threads:
        ratio = median((32, threads))["rps"] / median((1, threads))["rps"]
        print(f"throughput ratio at {threads} thread(s): {ratio:.2f}x")
    best_batched = max(args.threads, key=lambda t: median((32, t))["rps"])
    best_single = max(args.threads, key=lambda t: median((1, t))["rps"])
    ratio = median((32, best_batched))["rps"] / median((1, best_single))["rps"]
    # Each mode at its own best thread count: batching is what lets inference use more than one core.
    print(f"throughput ratio, each at its best ({best_batched} vs {best_single} threads): {ratio:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
