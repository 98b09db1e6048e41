"""LLM load: how right aichaos's token timings are, and how many streams one load worker carries.

Both parts drive the exact stub server (tests/llm_stub.py, its own process) with aichaos's load
process (``aichaos.load.locust_process``, what ``aichaos run`` starts: Locust users streaming over
geventhttpclient, every event timed, per-second histogram buckets) and, in the same run, with a bare
asyncio client (uvloop, one connection per stream, HTTP/1.1 and SSE read by hand, each event timed
and parsed with ``json``: the least a client can do and still measure).

1. accuracy: 100 concurrent streams, TTFT 100 ms and a token every 20 ms, each timer its own; the
   stub records when it wrote every token. TTFT and ITL p50 and p99 as aichaos reports them (from
   its histograms) against the truth (the stub's write times) and against the bare client's raw
   values. Target: within ±1 ms of the truth.
2. capacity: 1,000 concurrent streams from one load process, the stub writing a token to every
   stream each 20 ms tick (50,000 tokens/s offered, more than one core can read in Python). Tokens
   per second received in streams that started within the measured window, CPU per token, and the
   ITL each client saw (20 ms when it keeps up). Targets: at least 1,000 streams and 20,000 tokens/s
   on one core; collection (timestamps, histograms, buckets) at most 10% of the worker's CPU.

    python benchmarks/llm_load.py [--part accuracy|capacity|all] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "tests" / "llm_stub.py"
sys.path.insert(0, str(ROOT))

from aichaos.load.openai import StreamReader  # noqa: E402
from aichaos.metrics.histogram import percentile  # noqa: E402
from aichaos.metrics.llm import LlmStats, merge_llm  # noqa: E402
from aichaos.ports import free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _raise_priority() -> None:
    try:
        os.nice(-5)
    except OSError:
        pass


class Stub:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        # ahead of the clients on the CPU where allowed: the clients are measured, the server must keep up
        self.process = subprocess.Popen([sys.executable, str(STUB), "--port", str(self.port), *args],
                                        stderr=subprocess.DEVNULL, preexec_fn=_raise_priority)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the stub server did not start") from None
                time.sleep(0.1)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.host}/stats", timeout=30) as answer:
            return json.loads(answer.read())

    def cpu_share(self, run: Callable[[], Any]) -> tuple[Any, float]:
        """``run()``'s result, and the share of a core the stub used meanwhile."""
        cpu, wall = cpu_seconds(self.process.pid), time.monotonic()
        result = run()
        return result, (cpu_seconds(self.process.pid) - cpu) / (time.monotonic() - wall)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# ---------------------------------------------------------------- aichaos's load process
def run_aichaos(host: str, users: int, max_tokens: int, warmup: float, seconds: float, tail: float,
                rate: float | None = None, spread: float = 1.0) -> dict[str, Any]:
    """Drive ``host`` with the load process (closed loop, or Poisson arrivals at ``rate`` with
    ``users`` capping the streams in flight, its users started over ``spread`` seconds); the streams
    that started within [warmup, warmup + seconds) after spawning, as its per-second buckets recorded
    them (whole seconds inside it)."""
    llm = {"api": "chat", "model": "stub", "stream": True, "usage": True, "prompt": "{{ words(20) }}",
           "messages": None, "prompts": None, "max_tokens": max_tokens, "temperature": None, "seed": None,
           "extra": {}, "api_key_env": None}
    spec = {"host": host, "users": users, "rate": rate, "spawn_rate": users / spread, "wait_min": 0.0,
            "wait_max": 0.0, "timeout": 30.0, "seed": 1, "levels": [[users, rate, 0]], "arrival": "poisson",
            "mixes": [[{"name": "chat", "method": "POST", "path": "/v1/chat/completions", "weight": 1,
                        "headers": {}, "json": None, "llm": llm}]],
            "locustfile": None, "workers": 0, "remote_workers": 0, "master_bind": "127.0.0.1", "master_port": None}
    proc = subprocess.Popen([sys.executable, "-m", "aichaos.load.locust_process"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec) + "\n")
    proc.stdin.flush()
    buckets: dict[int, LlmStats] = {}
    window: tuple[int, int] = (0, 0)
    cpu = [0.0, 0.0]

    def stop_later(start: float) -> None:
        time.sleep(max(0.0, window[0] - time.time()))
        cpu[0] = cpu_seconds(proc.pid)
        time.sleep(max(0.0, window[1] - time.time()))
        cpu[1] = cpu_seconds(proc.pid)
        time.sleep(tail)
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()

    for line in proc.stdout:
        msg = json.loads(line)
        if msg["type"] == "ready":
            first = math.ceil(time.time() + warmup)
            window = (first, first + int(seconds))
            threading.Thread(target=stop_later, args=(time.time(),), daemon=True).start()
        elif msg["type"] == "samples":
            for bucket in msg["buckets"]:
                if bucket.get("llm"):
                    stats = LlmStats.from_json(bucket["llm"])
                    buckets.setdefault(bucket["second"], LlmStats()).add(stats)
        elif msg["type"] == "done":
            break
        elif msg["type"] == "error":
            raise SystemExit(f"load process error: {msg['message']}")
    proc.wait(30)
    merged = merge_llm(buckets.get(s) for s in range(*window)) or LlmStats()
    span = window[1] - window[0]
    return {"window": window, "streams": merged.streams, "tokens": merged.output_tokens,
            "tokens_per_s": merged.output_tokens / span,
            "cpu_us_per_token": (cpu[1] - cpu[0]) / max(1, merged.output_tokens) * 1e6,
            "cpu_share": (cpu[1] - cpu[0]) / span,
            "ttft": (percentile(merged.ttft, 50), percentile(merged.ttft, 99)),
            "itl": (percentile(merged.itl, 50), percentile(merged.itl, 99))}


# ---------------------------------------------------------------- the bare asyncio client
async def bare_stream_user(port: int, request: bytes, stop: float, out: list[tuple[float, float, list[float], int]],
                           per_user: float | None, spread: float) -> None:
    """One connection: requests back to back (the first after a random part of ``spread`` seconds,
    as Locust spawns users), or with exponential gaps of mean 1/``per_user`` between starts (Poisson
    arrivals, as aichaos's users send them)."""
    rng = random.Random()
    await asyncio.sleep(rng.random() / per_user if per_user else rng.random() * spread)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    clock, loads = time.perf_counter, json.loads
    started = time.time()
    try:
        while time.time() < stop:
            if per_user:
                await asyncio.sleep(max(0.0, started + rng.expovariate(per_user) - time.time()))
            started, sent = time.time(), clock()
            writer.write(request)
            while (line := await reader.readline()) != b"\r\n":  # status line and headers
                if not line:
                    raise ConnectionError("the stub closed the connection")
            first = last = 0.0
            gaps: list[float] = []
            tokens = 0
            while True:
                size = int(await reader.readline(), 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                now = clock()
                for event in data[:-2].split(b"\n\n"):
                    if not event.startswith(b"data: ") or event == b"data: [DONE]":
                        continue
                    choices = loads(event[6:]).get("choices")
                    if choices and choices[0].get("delta", {}).get("content"):
                        if tokens:
                            gaps.append((now - last) * 1000)
                        else:
                            first = now
                        last = now
                        tokens += 1
            out.append((started, (first - sent) * 1000, gaps, tokens))
    finally:
        writer.close()


def bare_main(port: int, users: int, max_tokens: int, warmup: float, seconds: float, tail: float,
              rate: float | None, spread: float) -> None:
    """In its own process: run the bare client and print what it measured as one JSON line."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    body = json.dumps({"model": "stub", "stream": True, "stream_options": {"include_usage": True},
                       "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi " * 20}]}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    results: list[tuple[float, float, list[float], int]] = []
    first = math.ceil(time.time() + warmup)
    window = (first, first + int(seconds))
    cpu = [0.0, 0.0]

    async def main() -> None:
        async def meter() -> None:
            await asyncio.sleep(window[0] - time.time())
            cpu[0] = time.process_time()
            await asyncio.sleep(window[1] - time.time())
            cpu[1] = time.process_time()

        per_user = rate / users if rate else None
        await asyncio.gather(meter(), *(bare_stream_user(port, request, window[1] + tail, results, per_user, spread)
                                        for _ in range(users)))

    asyncio.run(main())
    inside = [r for r in results if window[0] <= r[0] < window[1]]
    tokens = sum(r[3] for r in inside)
    gaps = [g for r in inside for g in r[2]]
    ttfts = [r[1] for r in inside]
    print(json.dumps({"window": window, "streams": len(inside), "tokens": tokens, "tokens_per_s": tokens / seconds,
                      "cpu_us_per_token": (cpu[1] - cpu[0]) / max(1, tokens) * 1e6,
                      "cpu_share": (cpu[1] - cpu[0]) / seconds,
                      "ttft": (nearest_rank(ttfts, 50), nearest_rank(ttfts, 99)) if ttfts else (None, None),
                      "itl": (nearest_rank(gaps, 50), nearest_rank(gaps, 99)) if gaps else (None, None)}))


def run_bare(port: int, users: int, max_tokens: int, warmup: float, seconds: float, tail: float,
             rate: float | None = None, spread: float = 1.0) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--bare", str(port), str(users), str(max_tokens), str(warmup),
                          str(seconds), str(tail), str(rate or 0), str(spread)], capture_output=True, text=True,
                         timeout=warmup + seconds + 120)
    if out.returncode:
        raise SystemExit(f"the bare client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the parts
def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def accuracy(args: argparse.Namespace) -> None:
    # a stream lasts 100 + 39 x 20 = 880 ms: Poisson arrivals at 113/s keep 100 streams in flight
    tokens, rate = 40, 113.0
    rows: dict[tuple[str, str, int], list[tuple[float, float]]] = {}  # (client, metric, q) -> [(value, truth)]
    peak, streams = 0, {"aichaos": 0, "bare": 0}
    for _ in range(args.rounds):  # interleaved: a busy moment of the machine falls on both clients alike
        for name, client in (("aichaos", run_aichaos), ("bare", run_bare)):
            stub = Stub("--ttft-ms", "100", "--itl-ms", "20", "--record")  # its truth is of this client's streams
            try:
                measured = client(stub.host if client is run_aichaos else stub.port, 160, tokens, 2, args.seconds, 2,
                                  rate)
                stats = stub.stats()
            finally:
                stub.stop()
            start, end = measured["window"]
            inside = [r for r in stats["recorded"] if start <= r[0] < end]  # the streams the client measured
            truth = {"ttft": [r[1] for r in inside], "itl": [g for r in inside for g in r[2]]}
            peak, streams[name] = max(peak, stats["peak"]), streams[name] + measured["streams"]
            for key in ("ttft", "itl"):
                for i, q in enumerate((50, 99)):
                    if measured[key][i] is not None and truth[key]:
                        rows.setdefault((name, key, q), []).append((measured[key][i], nearest_rank(truth[key], q)))
    print(f"1. accuracy: Poisson arrivals at {rate:g}/s, about 100 streams in flight (at most {peak}), TTFT 100 ms, "
          f"a token every 20 ms, {tokens} tokens; truth: when the stub wrote each token of the streams each client "
          f"measured; median of {args.rounds} interleaved rounds")
    print(f"{'':<10} {'aichaos':>9} {'truth':>9} {'error':>8}   {'bare':>9} {'truth':>9} {'error':>8} {'target':>7}")
    for key, label in (("ttft", "TTFT"), ("itl", "ITL")):
        for q in (50, 99):
            cells = []
            for name in ("aichaos", "bare"):
                pairs = rows.get((name, key, q), [])
                value = _median([v for v, _ in pairs])
                true = _median([t for _, t in pairs])
                error = _median([v - t for v, t in pairs])
                cells.append(f"{_ms(value):>9} {_ms(true):>9} {_ms(error):>8}")
            print(f"{label + f' p{q}':<10} {'   '.join(cells)} {'±1 ms':>7}")
    print(f"streams measured: aichaos {streams['aichaos']}, bare {streams['bare']}")
    print()


def _median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def capacity(args: argparse.Namespace) -> None:
    users, tokens = 1000, 50
    rows = []
    for tick in (40, 20):
        stub = Stub("--ttft-ms", "0", "--tick-ms", str(tick))
        spread = tokens * tick / 1000  # streams start at every phase of the stream's length, not in lockstep
        try:
            ours, ours_stub = stub.cpu_share(partial(run_aichaos, stub.host, users, tokens, 4, args.seconds, 3,
                                                     spread=spread))
            peak = stub.stats()["peak"]
            theirs, theirs_stub = stub.cpu_share(partial(run_bare, stub.port, users, tokens, 4, args.seconds, 3,
                                                         spread=spread))
        finally:
            stub.stop()
        ours["stub_cpu"], theirs["stub_cpu"] = ours_stub, theirs_stub
        rows.append((tick, peak, ours, theirs))
    collect, parse = collection_cost(tokens), parse_cost(tokens)
    print(f"2. capacity: {users} concurrent streams, {tokens} tokens each, a token per stream every tick, one client "
          f"process each, {os.cpu_count()} cores shared with the stub; a client that keeps up sees ITL p50 = the tick")
    print(f"{'offered':<14} {'client':<16} {'streams/s':>9} {'tokens/s':>9} {'CPU':>5} {'CPU/token':>10} "
          f"{'ITL p50':>8} {'ITL p99':>8} {'stub CPU':>8}")
    for tick, peak, ours, theirs in rows:
        offered = f"{users * 1000 // tick:,} tok/s"
        for name, r in (("aichaos (Locust)", ours), ("bare asyncio", theirs)):
            print(f"{offered:<14} {name:<16} {r['streams'] / args.seconds:>9.0f} {r['tokens_per_s']:>9.0f} "
                  f"{r['cpu_share']:>5.0%} {r['cpu_us_per_token']:>8.1f}us {_ms(r['itl'][0]):>8} {_ms(r['itl'][1]):>8} "
                  f"{r['stub_cpu']:>8.0%}")
        print(f"{'':<14} (the stub had {peak} streams open at once during aichaos's run)")
    per_token = rows[0][2]["cpu_us_per_token"]
    print(f"in aichaos's worker, per token: parsing (sseclient-py, json, StreamReader) {parse:.2f} us; collection "
          f"(timestamps, ITL list, histograms, buckets) {collect:.2f} us = {collect / per_token:.1%} of its "
          f"{per_token:.1f} us (target <= 10%); the rest is gevent and geventhttpclient I/O")
    print(f"aichaos's worker at {per_token:.1f} us of CPU per token: one whole core reads "
          f"{1e6 / per_token:,.0f} tokens/s (CPU below 100% with ITL off the tick means the machine or the stub, "
          "not the client, held it back)")
    best = max(r[2]["tokens_per_s"] for r in rows)
    print(f"aichaos: {best:,.0f} tokens/s over {users} streams from one process (target >= 20,000 tokens/s, "
          ">= 1,000 streams)")
    print()


def parse_cost(tokens: int, streams: int = 2000) -> float:
    """CPU per token of reading a stream's lines into measurements, without any I/O: sseclient-py's
    event parsing, ``json`` and the ``StreamReader``."""
    from aichaos.load.llm_client import read_stream

    token = (b'data: {"id":"cmpl-1","object":"chat.completion.chunk","created":0,"model":"stub","choices":'
             b'[{"index":0,"delta":{"content":" tok"},"finish_reason":null}]}\n')
    ending = [b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n', b"\n", b"data: [DONE]\n",
              b"\n"]
    lines = [token, b"\n"] * tokens + ending

    class Answer:  # the part of geventhttpclient's response that read_stream uses
        message_complete = True

        def __init__(self) -> None:
            self.lines = iter(lines)

        def readline(self, sep: bytes) -> bytes:
            return next(self.lines, b"")

    started = time.process_time()
    for _ in range(streams):
        read_stream(Answer(), time.perf_counter(), chat=True)  # type: ignore[arg-type]
    return (time.process_time() - started) / (streams * tokens) * 1e6


def collection_cost(tokens: int, streams: int = 20000) -> float:
    """CPU per token of what measuring adds to reading and parsing: a timestamp and a gap per event,
    the result's histograms into a bucket, and the bucket's trip as JSON."""
    from aichaos.load.openai import StreamResult

    clock = time.perf_counter
    stats = LlmStats()
    started = time.process_time()
    for _ in range(streams):
        reader = StreamReader(clock(), chat=True)
        last = clock()
        for _ in range(tokens):
            now = clock()
            reader.itl_ms.append((now - last) * 1000.0)
            last = now
        result = StreamResult(ttft_ms=1.0, itl_ms=reader.itl_ms, e2el_ms=50.0, output_tokens=tokens,
                              tokens_from="usage")
        stats.record(result)
    json.dumps(stats.to_json())
    return (time.process_time() - started) / (streams * tokens) * 1e6


PARTS: dict[str, Callable[[argparse.Namespace], None]] = {"accuracy": accuracy, "capacity": capacity}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        port, users, tokens = (int(v) for v in sys.argv[2:5])
        warmup, seconds, tail, rate, spread = (float(v) for v in sys.argv[5:10])
        bare_main(port, users, tokens, warmup, seconds, tail, rate or None, spread)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--seconds", type=float, default=6, help="the measured window of each run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the accuracy part")
    args = parser.parse_args()
    for name, part in PARTS.items():
        if args.part in (name, "all"):
            before = os.getloadavg()[0]
            part(args)
            # figures from a machine that others keep busy are not comparable: say how busy it was
            print(f"(load average {before:.2f} before this part, {os.getloadavg()[0]:.2f} after, "
                  f"{os.cpu_count()} cores)\n")


if __name__ == "__main__":
    main()
