"""The run state file: what a run started and injected, kept up to date so that ``aichaos cleanup``
can undo it after the run was killed with ``kill -9``. It is removed when a run ends cleanly.

The first save adds the run to the per-user index of live runs (``aichaos.runtime.index``), so that
cleanup finds it from anywhere; the run directory is locked for the run's life (``RunDirLock``), so
that no second run writes its state file, journal or logs into it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aichaos.errors import EnvironmentFailure, UsageError
from aichaos.runtime import index


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None when
    it is gone. With the pid it identifies a process for good: a recycled pid starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # fields from the 3rd on; the name may hold spaces
    return int(fields[19]) if fields[0] != "Z" else None


@dataclass
class RunState:
    path: Path
    run_id: str
    owner_pid: int = field(default_factory=os.getpid)
    proxy_url: str | None = None
    proxy_pid: int | None = None
    load_pid: int | None = None
    services: dict[str, int] = field(default_factory=dict)  # name -> pid (process group leader)
    proxies: list[str] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)  # undo records of applied faults
    kept: bool = False  # the run ended with --keep-stack: its stack is left running on purpose
    helpers: dict[str, int] = field(default_factory=dict)  # label -> pid of a fault's own process
    runtime: str = "local"  # its kind cleans up what the state does not list (aichaos.runtime.registry)
    starts: dict[str, int] = field(default_factory=dict)  # pid -> start time, to tell a recycled pid
    # not saved: whether this process added the run to the index of live runs, and the text it saved last
    indexed: bool = field(default=False, init=False, repr=False, compare=False)
    saved: str = field(default="", init=False, repr=False, compare=False)

    def pids(self) -> dict[str, int]:
        """What the run started (and the run itself), by a label for messages."""
        out = {"aichaos": self.owner_pid, "load": self.load_pid, "proxy": self.proxy_pid}
        out.update({f"service {n}": p for n, p in self.services.items()})
        out.update(self.helpers)
        return {k: v for k, v in out.items() if v}

    def is_ours(self, pid: int) -> bool:
        """Is ``pid`` still the very process this run recorded?"""
        recorded = self.starts.get(str(pid))
        return recorded is not None and process_start(pid) == recorded

    def save(self) -> None:
        for pid in self.pids().values():
            if str(pid) not in self.starts and (start := process_start(pid)) is not None:
                self.starts[str(pid)] = start
        data = asdict(self)
        data["path"] = str(self.path)
        del data["indexed"], data["saved"]
        text = json.dumps(data, indent=2)
        if text == self.saved and self.path.exists():
            return  # unchanged: a full disk must not fail a run that has nothing new to record
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, self.path)  # never a half-written state file: the last one saved stays
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise EnvironmentFailure(f"cannot save the run state file {self.path}: {exc.strerror or exc}",
                                     hint="free some space there (or choose another --runs-dir); "
                                          "`aichaos cleanup` reads the last state saved") from exc
        self.saved = text
        if not self.indexed:
            index.register(self.run_id, self.path)
            self.indexed = True

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        index.unregister(self.run_id)

    @classmethod
    def read(cls, path: Path) -> RunState:
        data = json.loads(path.read_text())
        data["path"] = Path(data["path"])
        state = cls(**data)
        state.indexed = True
        return state


class RunDirLock:
    """An exclusive lock on a run directory (``flock`` on the directory itself, so it needs no space
    on the disk and leaves no file), held from the run's start until its reports are written.

    The kernel drops it when the process ends, however it ends; children do not inherit it, so an
    orphan left by a ``kill -9`` never holds it. A run that finds the directory locked, or holding the
    state file of a run that was killed (which cleanup still needs), is refused.
    """

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd

    @classmethod
    def try_acquire(cls, run_dir: Path) -> RunDirLock | None:
        """The lock, or None while another process holds it. OSError when the directory cannot be opened."""
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return cls(run_dir, fd)

    @classmethod
    def for_new_run(cls, run_dir: Path) -> RunDirLock:
        """Lock ``run_dir`` for a run about to start; UsageError (exit 2) when another run is using it or
        it still holds what a killed run left."""
        try:
            lock = cls.try_acquire(run_dir)
        except OSError as exc:
            raise EnvironmentFailure(f"cannot lock the run directory {run_dir}: {exc.strerror or exc}") from exc
        state = _readable_state(run_dir / "state.json")
        if lock is not None and state is not None and state.is_ours(state.owner_pid):
            lock.release()  # a run that takes no lock (an older aichaos) is still running there
            lock = None
        if lock is None:
            who = f"run {state.run_id} (aichaos pid {state.owner_pid})" if state else "another aichaos run"
            raise UsageError(f"the run directory {run_dir} is in use by {who}",
                             hint="give each run its own --run-dir, or leave it out for a new directory "
                                  "under --runs-dir")
        if state is not None:
            lock.release()
            what = "the stack it kept running (--keep-stack)" if state.kept else "what it left when it was killed"
            raise UsageError(f"the run directory {run_dir} holds the state of run {state.run_id}: {what}",
                             hint=f"`aichaos cleanup --run {state.run_id}` undoes it; then the directory can be "
                                  "used again")
        return lock

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _readable_state(path: Path) -> RunState | None:
    """The state file at ``path``, or None when there is none or it cannot be read (it is then of no
    use to cleanup either)."""
    try:
        return RunState.read(path)
    except (OSError, ValueError, TypeError):
        return None
