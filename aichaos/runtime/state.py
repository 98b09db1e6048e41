"""The run state file: what a run started and injected, kept up to date so that ``aichaos cleanup``
can undo it after the run was killed with ``kill -9``. It is removed when a run ends cleanly."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)  # never a half-written state file

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    @classmethod
    def read(cls, path: Path) -> RunState:
        data = json.loads(path.read_text())
        data["path"] = Path(data["path"])
        return cls(**data)
