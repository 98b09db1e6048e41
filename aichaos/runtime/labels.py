"""Every process a run starts carries the run's id in its environment (``AICHAOS_RUN_ID``), the way
every container carries the ``aichaos.run`` label: ``aichaos cleanup`` finds a run's processes by it
even when the run was killed (``kill -9``) between starting one and recording its pid.

The run sets the variable in its own environment for its whole life, so every child inherits it
whichever module starts it (the fault proxy, services, the load process and its workers, fault
helpers), and so do their children. A child that clears its environment is still reached through
the process group the run recorded.

A process's environment as it was exec'd is readable in ``/proc/PID/environ`` (by its owner): the
label cannot be lost by the process changing ``os.environ`` later. On a system without ``/proc``
nothing is found, and cleanup relies on the pids in the state file alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_ENV = "AICHAOS_RUN_ID"


@contextmanager
def labelled_children(run_id: str) -> Iterator[None]:
    """Label every child started inside the block with ``run_id``; the environment is restored after."""
    previous = os.environ.get(RUN_ENV)
    os.environ[RUN_ENV] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_ENV, None)
        else:
            os.environ[RUN_ENV] = previous


def labelled_processes(run_id: str, proc: Path = Path("/proc")) -> list[int]:
    """The pids of live processes labelled with ``run_id`` (not this process), lowest first."""
    wanted = f"{RUN_ENV}={run_id}".encode()
    found: list[int] = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)
