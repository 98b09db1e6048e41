"""Undo what a run left behind when it could not clean up itself (``kill -9``, a power cut).

Reads each run's state file, and only touches processes whose start time still matches what the
run recorded, so a recycled pid is never killed.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from aichaos.errors import AichaosError
from aichaos.runtime.state import RunState

log = logging.getLogger(__name__)


def stale_runs(runs_dir: Path) -> list[RunState]:
    """Runs whose state file is still there but whose aichaos process is gone."""
    out: list[RunState] = []
    if not runs_dir.is_dir():
        return out
    for path in sorted(runs_dir.glob("*/state.json")):
        try:
            state = RunState.read(path)
        except (OSError, ValueError, TypeError):
            continue
        if not state.is_ours(state.owner_pid):
            out.append(state)
    return out


def _kill_group(pid: int) -> bool:
    try:
        os.killpg(pid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def clean_run(state: RunState) -> list[str]:
    """Revert faults, delete proxies, kill processes. Returns a line per thing done."""
    from aichaos.faults.registry import UndoContext, revert_undo
    from aichaos.proxy.client import ToxiproxyClient

    done: list[str] = []
    context = UndoContext(is_ours=state.is_ours)
    for undo in state.faults:
        done.append(revert_undo(undo, context))
    if state.proxy_url and state.proxy_pid is None:  # an external proxy: remove what the run created
        client = ToxiproxyClient(state.proxy_url, timeout=3.0)
        for name in state.proxies:
            try:
                client.delete_proxy(name)
                done.append(f"deleted proxy {name}")
            except AichaosError as exc:
                done.append(f"could not delete proxy {name}: {exc.message}")
    from aichaos.runtime.registry import runtime_kind

    try:
        done += runtime_kind(state.runtime).clean(state.run_id)
    except AichaosError as exc:
        done.append(f"could not clean up runtime {state.runtime!r}: {exc.message}")
    for what, pid in state.pids().items():
        if what == "aichaos":
            continue
        if not state.is_ours(pid):
            continue  # gone already, or the pid now belongs to another process: never touch it
        if _kill_group(pid):
            done.append(f"killed {what} (process group {pid})")
    state.remove()
    return done
