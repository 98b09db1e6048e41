"""Continuous batching against one request at a time on the sample LLM server, same run, same machine.

Starts the LLM server with ``--max-num-seqs 32`` (continuous batching) and ``--max-num-seqs 1``
(one request at a time: the others wait in the admission queue), in interleaved rounds, and drives
each with 32 concurrent streams (``/v1/completions``, ``stream: true``, fixed prompt, ``max_tokens``
tokens with ``ignore_eos``) for a fixed time. Prints output tokens per second, requests per second,
TTFT and inter-token gap medians side by side (the median round). Target: at least 5x the tokens per
second with continuous batching on CPU.

The load client is a bare asyncio HTTP/1.1 reader (chunked transfer, SSE events counted, not
parsed) in a process of its own, so that it takes as little as possible of the cores it shares with
the server it measures.

    python benchmarks/llm_server.py [--seconds 8] [--rounds 2] [--streams 32] [--device auto]
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


async def _drive(port: int, streams: int, seconds: float, prompt: str, max_tokens: int) -> dict[str, list[float]]:
    """``streams`` kept-alive connections, each sending one streamed completion after another."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
                       "temperature": 0}).encode()
    request = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    tokens: list[float] = []  # arrival time of every token chunk
    ttft: list[float] = []
    gaps: list[float] = []
    done: list[float] = []
    errors: list[float] = []
    start = time.monotonic()
    stop_at = start + seconds

    async def stream() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop_at:
            sent = time.monotonic()
            writer.write(request)
            status = (await reader.readline()).split()[1]
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            last = None
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    break
                chunk = await reader.readexactly(size + 2)
                now = time.monotonic()
                for _ in range(chunk.count(b'"text":')):
                    tokens.append(now)
                    if last is None:
                        ttft.append(now - sent)
                    else:
                        gaps.append(now - last)
                    last = now
            (done if status == b"200" else errors).append(time.monotonic())
        writer.close()

    await asyncio.gather(*(stream() for _ in range(streams)))
    return {"tokens": [t - start for t in tokens], "ttft": ttft, "gaps": gaps,
            "done": [t - start for t in done], "errors": [t - start for t in errors]}


def drive(port: int, streams: int, seconds: float, prompt: str, max_tokens: int) -> dict[str, list[float]]:
    """Run the load client in its own process and read back what it measured."""
    code = (f"import asyncio, json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import llm_server as b; print(json.dumps(asyncio.run(b._drive({port}, {streams}, {seconds}, "
            f"{prompt!r}, {max_tokens}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result: dict[str, list[float]] = json.loads(out)
    return result


def run_server(max_num_seqs: int, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "sample_stack.llm_server", "--port", str(port),
                               "--max-num-seqs", str(max_num_seqs), "--max-waiting", "256",
                               "--model-size", args.model_size, "--device", args.device,
                               "--threads", str(args.threads)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not http_ok("127.0.0.1", port, "/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the LLM server did not start")
            time.sleep(0.2)
        prompt = " ".join(f"word{i}" for i in range(args.prompt_words))
        drive(port, args.streams, 2.0, prompt, args.max_tokens)  # warm up
        r = drive(port, args.streams, args.seconds, prompt, args.max_tokens)
    finally:
        server.terminate()
        server.wait(10)
    # count only what arrived within the window: streams still running past it add a tail
    tokens = sum(1 for t in r["tokens"] if t <= args.seconds)
    return {"tokens_s": tokens / args.seconds, "req_s": sum(1 for t in r["done"] if t <= args.seconds) / args.seconds,
            "ttft_p50": statistics.median(r["ttft"]) * 1000 if r["ttft"] else float("nan"),
            "itl_p50": statistics.median(r["gaps"]) * 1000 if r["gaps"] else float("nan"),
            "errors": len(r["errors"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--prompt-words", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model-size", default="small")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    modes = {"continuous batching (32)": args.streams, "one request at a time": 1}
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for _ in range(args.rounds):  # interleaved, so a noisy minute hurts both modes alike
        for mode, seqs in modes.items():
            results[mode].append(run_server(seqs, args))

    def median(mode: str) -> dict[str, float]:
        runs = sorted(results[mode], key=lambda r: r["tokens_s"])
        return runs[len(runs) // 2]

    print(f"{args.streams} concurrent streams, {args.prompt_words}-word prompts, {args.max_tokens} output tokens, "
          f"model {args.model_size}, device {args.device}, {args.threads} torch thread(s), "
          f"{args.seconds:g}s x {args.rounds} rounds each (median shown)")
    print(f"{'mode':<26} {'tokens/s':>9} {'req/s':>7} {'TTFT p50 ms':>12} {'ITL p50 ms':>11} {'errors':>7}")
    for mode in modes:
        r = median(mode)
        print(f"{mode:<26} {r['tokens_s']:>9.0f} {r['req_s']:>7.1f} {r['ttft_p50']:>12.1f} {r['itl_p50']:>11.2f} "
              f"{r['errors']:>7.0f}")
    ratio = median("continuous batching (32)")["tokens_s"] / median("one request at a time")["tokens_s"]
    print(f"\ntokens/s ratio: {ratio:.2f}x (target >= 5x)")


if __name__ == "__main__":
    main()
