"""A co-tenant that holds memory on the model's device until it is stopped.

Run as ``python -m aichaos.faults.cotenant (--mb N | --share S)``. With a CUDA device (torch
installed and a GPU visible) it allocates on the GPU, so the model server's batches meet a real
shortage; otherwise it takes host memory, touching every page so that the memory is really used.
``--share`` takes that share of the device's free memory (MemAvailable on the host). It prints one
JSON line, ``{"device": "cuda:0" | "host", "mb": N}``, once the memory is held, then waits for
SIGTERM (or for its standard input to close, so it never outlives the run that started it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading


def host_available_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def hold(mb: int | None, share: float | None) -> tuple[str, int, object]:
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        free, _ = torch.cuda.mem_get_info()
        size = mb if mb is not None else int(free * (share or 0) / 2**20)
        tensor = torch.ones(size * 2**20, dtype=torch.uint8, device="cuda")  # ones: really resident
        return f"cuda:{torch.cuda.current_device()}", size, tensor
    size = mb if mb is not None else int(host_available_mb() * (share or 0))
    block = bytearray(size * 2**20)
    for offset in range(0, len(block), 4096):  # touch every page
        block[offset] = 1
    return "host", size, block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--mb", type=int)
    group.add_argument("--share", type=float)
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        device, size, block = hold(args.mb, args.share)
    except (MemoryError, RuntimeError, OSError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 3
    print(json.dumps({"device": device, "mb": size}), flush=True)

    def watch_stdin() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    del block
    return 0


if __name__ == "__main__":
    sys.exit(main())
