"""Undo what a run left behind when it could not clean up itself (``kill -9``, a power cut).

Reads each run's state file, and only touches processes whose start time still matches what the
run recorded, so a recycled pid is never killed.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

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


def _undo(undo: dict[str, Any], state: RunState) -> str:
    """Revert one fault from its undo record; says what was done."""
    from aichaos.faults.hooks import HookClient
    from aichaos.proxy.client import ToxiproxyClient

    try:
        if "container" in undo:
            return _undo_container(undo)
        if "hooks_url" in undo:
            HookClient(undo["hooks_url"], undo.get("token"), timeout=3.0).post(undo["restore"])
            return f"restored {', '.join(undo['restore'])} through {undo['hooks_url']}"
        if "resume_pid" in undo:
            pid = int(undo["resume_pid"])
            if state.is_ours(pid):
                os.killpg(pid, signal.SIGCONT)
                return f"resumed paused process group {pid}"
            return f"paused process group {pid} is gone already"
        client = ToxiproxyClient(undo["proxy_url"], timeout=3.0)
        if "toxic" in undo:
            client.remove_toxic(undo["proxy"], undo["toxic"])
            return f"removed toxic {undo['toxic']} from {undo['proxy']}"
        proxies = undo.get("proxies") or [undo["proxy"]]
        for proxy in proxies:
            client.set_enabled(proxy, True)
        return f"re-enabled proxy {', '.join(proxies)}"
    except (AichaosError, OSError, KeyError, TypeError, ValueError) as exc:
        return f"could not revert {undo}: {getattr(exc, 'message', exc)}"


def _undo_container(undo: dict[str, Any]) -> str:
    from aichaos.runtime.docker import engine

    try:
        container = engine().containers.get(undo["container"])
        if undo.get("unpause"):
            if container.status == "paused":
                container.unpause()
            return f"unpaused container {container.name}"
        if undo.get("start"):
            container.start()
            return f"started container {container.name}"
        container.update(**undo["update"])
        return f"restored the limits of container {container.name}"
    except Exception as exc:  # the SDK's errors, an absent engine: report and go on
        return f"could not revert {undo}: {getattr(exc, 'message', exc)}"


def clean_run(state: RunState) -> list[str]:
    """Revert faults, delete proxies, kill processes. Returns a line per thing done."""
    from aichaos.proxy.client import ToxiproxyClient

    done: list[str] = []
    for undo in state.faults:
        done.append(_undo(undo, state))
    if state.proxy_url and state.proxy_pid is None:  # an external proxy: remove what the run created
        client = ToxiproxyClient(state.proxy_url, timeout=3.0)
        for name in state.proxies:
            try:
                client.delete_proxy(name)
                done.append(f"deleted proxy {name}")
            except AichaosError as exc:
                done.append(f"could not delete proxy {name}: {exc.message}")
    if state.runtime == "docker":
        from aichaos.runtime.docker import remove_labelled

        try:
            done += remove_labelled(state.run_id)
        except AichaosError as exc:
            done.append(f"could not remove the run's containers: {exc.message}")
    for what, pid in state.pids().items():
        if what == "aichaos":
            continue
        if not state.is_ours(pid):
            continue  # gone already, or the pid now belongs to another process: never touch it
        if _kill_group(pid):
            done.append(f"killed {what} (process group {pid})")
    state.remove()
    return done
