from __future__ import annotations

from pathlib import Path

import typer


def worker(
    master: str = typer.Option(..., "--master", help="HOST:PORT of the run's Locust master (`aichaos run` prints it)."),
    locustfile: Path | None = typer.Option(None, "--locustfile", exists=True, dir_okay=False,
                                           help="The experiment's locustfile, when it uses one."),
) -> None:
    """Join a run's distributed load from this machine (the experiment sets load.remote_workers).

    The worker gets the requests and the load plan from the master, sends its share, and ships its
    per-second samples to the master with its reports; it stops when the run ends.
    """
    import subprocess
    import sys

    from aichaos.cli.terminal import Terminal
    from aichaos.errors import ExitCode

    host, _, port = master.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        Terminal().error(f"--master must be HOST:PORT, not {master!r}")
        raise typer.Exit(ExitCode.INVALID)
    command = [sys.executable, "-m", "aichaos.load.locust_process", "--worker", "--master", master]
    if locustfile is not None:
        command += ["--locustfile", str(locustfile.resolve())]
    Terminal().info(f"joining the load of the run whose master is {master}")
    try:
        code = subprocess.call(command)
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    raise typer.Exit(code)
