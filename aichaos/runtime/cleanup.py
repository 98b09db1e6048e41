"""Undo what a run left behind when it could not clean up itself (``kill -9``, a power cut).

Finds runs through the per-user index of live runs (``aichaos.runtime.index``) and under a runs
directory, reads each one's state file, and only touches processes whose start time still matches
what the run recorded, so a recycled pid is never killed; then it kills every process still carrying
the run's id (``aichaos.runtime.labels``): those a run started but had not yet recorded when it was
killed. A run directory another process has locked is a live run, never touched.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from aichaos.errors import AichaosError
from aichaos.runtime.index import indexed_state_files
from aichaos.runtime.labels import labelled_processes
from aichaos.runtime.state import RunDirLock, RunState

log = logging.getLogger(__name__)


def stale_runs(runs_dir: Path | None = None) -> list[RunState]:
    """Runs whose state file is still there but whose aichaos process is gone: every indexed run of
    this user and every run under ``./runs``, or with ``runs_dir`` only those under it."""
    paths = indexed_state_files()
    if runs_dir is not None:
        under = runs_dir.resolve()
        paths = [p for p in paths if p.resolve().is_relative_to(under)]
    local = runs_dir if runs_dir is not None else Path("runs")
    if local.is_dir():  # runs not in the index: made by an older aichaos, or with the index unwritable
        paths += local.glob("*/state.json")
    out: list[RunState] = []
    seen: set[Path] = set()
    for path in sorted(paths):
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
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
    """Revert faults, delete proxies, kill processes. Returns a line per thing done.

    The run directory is locked meanwhile, so no new run starts in it half-way; a run directory that
    another process holds is a live run (or another cleanup), left alone."""
    try:
        lock = RunDirLock.try_acquire(state.path.parent)
    except OSError as exc:
        return [f"could not lock the run directory {state.path.parent} ({exc.strerror or exc}): left alone"]
    if lock is None:
        return [f"the run directory {state.path.parent} is in use by another process: left alone"]
    with lock:
        return _clean(state)


def _clean(state: RunState) -> list[str]:
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
    killed: set[int] = set()  # process groups
    for what, pid in state.pids().items():
        if what == "aichaos":
            continue
        if not state.is_ours(pid):
            continue  # gone already, or the pid now belongs to another process: never touch it
        if _kill_group(pid):
            killed.add(pid)
            done.append(f"killed {what} (process group {pid})")
    for pid in labelled_processes(state.run_id):  # started, but not yet recorded when the run was killed
        command = _command(pid)
        if _kill_labelled(pid, killed):
            done.append(f"killed {command} (pid {pid}, labelled with the run's id)")
    state.remove()
    return done


def _kill_labelled(pid: int, killed: set[int]) -> bool:
    """SIGKILL ``pid``, and its process group when it leads one (the run starts each child in its own).
    False when it was gone, or is dying in a group killed already (``killed``, which this adds to)."""
    try:
        group = os.getpgid(pid)
        if group in killed:
            os.kill(pid, signal.SIGKILL)  # dying with its group: make sure, say nothing
            return False
        if group == pid:
            os.killpg(pid, signal.SIGKILL)
            killed.add(pid)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "a process"
    words = [a.decode(errors="replace") for a in argv if a][:5]
    return " ".join(words)[:100] or "a process"
