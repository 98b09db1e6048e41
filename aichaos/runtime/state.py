"""The run state file: what a run started and injected, kept up to date so that ``aichaos cleanup``
can undo it after the run was killed with ``kill -9``. It is removed when a run ends cleanly."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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

    def save(self) -> None:
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
