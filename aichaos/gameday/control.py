"""Reaching a game-day stack: where it is (``gameday.json`` beside its state file, found through the
per-user index of live runs), starting its keeper, and the keeper's control API.

The API is JSON over HTTP on 127.0.0.1, with a bearer token that only ``gameday.json`` (mode 0600)
holds::

    GET    /status              the stack: services, edges, proxy, active faults
    POST   /faults              {"fault": {...}, "for_s": 30}: inject; answers the fault's id
    DELETE /faults[/ID]         clear one fault, or every fault
    POST   /down                revert every fault, stop everything, write the journal; the keeper exits

An error answers ``{"error", "hint", "exit_code"}``, raised here as a :class:`KeeperError` with that
exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aichaos.errors import AichaosError, EnvironmentFailure, UsageError
from aichaos.runtime.index import indexed_state_files
from aichaos.runtime.labels import RUN_ENV
from aichaos.runtime.state import RunState

INFO_FILE = "gameday.json"
MEASUREMENTS_FILE = "measurements.jsonl"  # what `aichaos watch` measured, a JSON object a line


class KeeperError(AichaosError):
    """An error the keeper answered, with its exit code."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


@dataclass
class GameDay:
    """A game-day stack's ``gameday.json``: what was brought up, and how to reach its keeper."""

    stack_id: str
    folder: Path
    source: str  # the file given to `stack up`: a stack file or an experiment
    stack_file: str
    runtime: str = "auto"
    network: str | None = None
    toxiproxy_url: str | None = None
    control_url: str | None = None  # set by the keeper once it answers
    token: str = ""
    keeper_pid: int | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return self.folder / INFO_FILE

    @property
    def state_path(self) -> Path:
        return self.folder / "state.json"

    def save(self) -> None:
        data = {**asdict(self), "folder": str(self.folder)}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token is in it
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    @classmethod
    def read(cls, folder: Path) -> GameDay:
        data = json.loads((folder / INFO_FILE).read_text())
        data["folder"] = Path(data["folder"])
        return cls(**data)

    def keeper_alive(self) -> bool:
        """Is the keeper that the state file names still running?"""
        try:
            state = RunState.read(self.state_path)
        except (OSError, ValueError, TypeError):
            return False
        return state.is_ours(state.owner_pid)


def game_days() -> list[GameDay]:
    """Every game-day stack of this user on this host whose state file is still there (its keeper may
    be dead: ``aichaos cleanup`` finishes those)."""
    out = []
    for state_path in indexed_state_files():
        if (state_path.parent / INFO_FILE).is_file():
            try:
                out.append(GameDay.read(state_path.parent))
            except (OSError, ValueError, TypeError, KeyError):
                continue
    return out


def find_game_day(stack_id: str | None) -> GameDay:
    """The game-day stack ``stack_id``, or the only one up; UsageError when there is none or several."""
    days = [d for d in game_days() if d.keeper_alive()]
    if stack_id is not None:
        named = [d for d in days if d.stack_id == stack_id]
        if not named:
            raise UsageError(f"no game-day stack {stack_id!r} is up",
                             hint=_listing(days) or "start one with `aichaos stack up FILE`")
        return named[0]
    if not days:
        raise UsageError("no game-day stack is up", hint="start one with `aichaos stack up FILE`")
    if len(days) > 1:
        raise UsageError("several game-day stacks are up: say which with --stack ID", hint=_listing(days))
    return days[0]


def _listing(days: list[GameDay]) -> str:
    return "; ".join(f"{d.stack_id} ({d.source})" for d in days)


class Control:
    """The keeper's control API."""

    def __init__(self, day: GameDay, timeout: float = 10.0) -> None:
        self.day = day
        self.timeout = timeout

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/status")

    def inject(self, fault: dict[str, Any], for_s: float | None, allow_external: bool = False) -> dict[str, Any]:
        return self.call("POST", "/faults", {"fault": fault, "for_s": for_s, "allow_external": allow_external},
                         timeout=180.0)  # a kill waits for nothing, but a co-tenant waits for its memory

    def clear(self, fault_id: str | None) -> dict[str, Any]:
        return self.call("DELETE", f"/faults/{fault_id}" if fault_id else "/faults", timeout=180.0)

    def down(self) -> dict[str, Any]:
        return self.call("POST", "/down", {}, timeout=300.0)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        day = self.day
        if not day.control_url:
            raise EnvironmentFailure(f"game-day stack {day.stack_id} has no control API yet (still starting?)")
        request = urllib.request.Request(day.control_url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {day.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())
            except ValueError:
                error = {"error": f"HTTP {exc.code}"}
            raise KeeperError(str(error.get("error")), int(error.get("exit_code", 3)), error.get("hint")) from None
        except (OSError, ValueError) as exc:
            raise EnvironmentFailure(f"the keeper of game-day stack {day.stack_id} does not answer at "
                                     f"{day.control_url}: {getattr(exc, 'reason', None) or exc}",
                                     hint=f"`aichaos cleanup --run {day.stack_id}` brings the stack down") from exc


def start_keeper(day: GameDay, report: Callable[[str], None], timeout: float = 600.0) -> dict[str, Any]:
    """Start the keeper of ``day`` (its ``gameday.json`` saved) and relay what it says until the stack is
    up; returns its status. Raises the error it ended with (it has stopped everything by then)."""
    log_path = day.folder / "logs" / "keeper.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            process = subprocess.Popen([sys.executable, "-m", "aichaos.gameday.keeper", str(day.folder)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                       start_new_session=True,  # a Ctrl-C in this terminal is not the keeper's
                                       env={**os.environ, RUN_ENV: day.stack_id})
        except OSError as exc:
            raise EnvironmentFailure(f"cannot start the game-day keeper: {exc}") from exc
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        for raw in process.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if "info" in message:
                report(message["info"])
            elif "ready" in message:
                return dict(message["ready"])
            elif "error" in message:
                raise KeeperError(message["error"], int(message.get("exit_code", 3)), message.get("hint"))
            if time.monotonic() > deadline:
                break
    except KeyboardInterrupt:
        process.terminate()  # the keeper stops what it started and exits
        process.wait(60)
        raise
    process.wait(10)
    raise EnvironmentFailure(f"the game-day keeper ended before the stack was up (exit {process.returncode})",
                             hint=f"see {log_path}")


def wait_gone(pid: int, start: int | None, timeout: float = 60.0) -> bool:
    """Wait until the process ``pid`` (that started at ``start``) has exited; False on timeout."""
    from aichaos.runtime.state import process_start

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = process_start(pid)
        if now is None or now != start:
            return True
        time.sleep(0.05)
    return False


def bring_down(day: GameDay) -> list[str]:
    """Take a live game-day stack down for ``aichaos cleanup --run ID``: through its keeper, or, when the
    keeper does not answer, by killing it and cleaning up from the state file. Says what was done."""
    import signal

    from aichaos.runtime.cleanup import clean_run

    try:
        state = RunState.read(day.state_path)
    except (OSError, ValueError, TypeError):
        return [f"game-day stack {day.stack_id} has no readable state file: nothing to do"]
    start = state.starts.get(str(state.owner_pid))
    try:
        answer = Control(day, timeout=10.0).down()
    except AichaosError as exc:
        done = [f"the keeper did not take the stack down ({exc.message}): killing it"]
        if state.is_ours(state.owner_pid):
            os.kill(state.owner_pid, signal.SIGKILL)
            wait_gone(state.owner_pid, start, timeout=10.0)
        return done + clean_run(RunState.read(day.state_path))
    wait_gone(state.owner_pid, start, timeout=30.0)
    return ["took the stack down through its keeper (every fault reverted, everything stopped)",
            *[f"not cleaned up: {leftover}" for leftover in answer["leftovers"]], f"journal {answer['journal']}"]
