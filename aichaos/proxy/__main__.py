"""``python -m aichaos.proxy --host H --port P``: the builtin Toxiproxy-compatible server on the
standard library alone, which is how the docker runtime runs it in a container (``aichaos proxy
serve`` is the same server behind the CLI)."""

from __future__ import annotations

import argparse
import sys

from aichaos.proxy.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="aichaos's builtin Toxiproxy-compatible server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8474)
    args = parser.parse_args(argv)
    serve(args.host, args.port, lambda url: print(f"aichaos proxy listening on {url}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
