from __future__ import annotations

import typer


def serve(
    host: str = typer.Option("127.0.0.1", help="Address of the HTTP API (loopback unless you need otherwise)."),
    port: int = typer.Option(8474, min=0, max=65535, help="Port of the HTTP API (0 picks a free one)."),
) -> None:
    """Run the builtin Toxiproxy-compatible server in the foreground until SIGINT/SIGTERM."""
    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode
    from aichaos.proxy.backend import READY_PREFIX
    from aichaos.proxy.server import serve as serve_forever

    term = Terminal()
    try:
        serve_forever(host, port, lambda url: term.raw(READY_PREFIX + url))
    except OSError as exc:
        term.error(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        raise typer.Exit(ExitCode.ENVIRONMENT) from exc
