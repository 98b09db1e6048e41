"""The per-user index of live runs, so that ``aichaos cleanup`` finds every run's state file from
any directory, wherever its run directory is (``--run-dir`` may put it anywhere).

One small file per run, ``$XDG_STATE_HOME/aichaos/runs/<run id>`` (``~/.local/state/aichaos/runs``
when the variable is unset), holding the absolute path of the run's state file and the host it runs
on. It is written with the state file's first save, before the run starts anything, and removed with
the state file; an entry whose state file is gone is dropped when the index is read. A file per run
needs no lock between runs that start and end at the same time. Only this host's runs are read: a
home shared between machines must not make one machine's cleanup take another's live run for dead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def index_dir() -> Path:
    """Where the index lives (XDG Base Directory: a relative ``XDG_STATE_HOME`` is ignored)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "aichaos" / "runs"


def register(run_id: str, state_path: Path) -> None:
    """Add a run to the index. Never fails the run: without its entry the run is still found by
    ``aichaos cleanup --runs-dir`` over its run directory's parent, which the warning says."""
    entry = index_dir() / run_id
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{run_id}.tmp")
        tmp.write_text(json.dumps({"state": str(state_path.resolve()), "host": socket.gethostname()}) + "\n")
        os.replace(tmp, entry)
    except OSError as exc:
        log.warning("cannot add run %s to the index of live runs %s (%s): `aichaos cleanup` finds it only "
                    "with --runs-dir %s", run_id, entry.parent, exc.strerror or exc, state_path.parent.parent)


def unregister(run_id: str) -> None:
    try:
        (index_dir() / run_id).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove run %s from the index of live runs (%s)", run_id, exc.strerror or exc)


def indexed_state_files() -> list[Path]:
    """The state files of every run of this host in the index that still has one; entries without one
    are dropped."""
    found: list[Path] = []
    try:
        entries = sorted(p for p in index_dir().iterdir() if not p.name.startswith("."))
    except OSError:
        return found
    for entry in entries:
        try:
            data = json.loads(entry.read_text())
            state_path, host = Path(data["state"]), data["host"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host != socket.gethostname():
            continue
        if state_path.is_file():
            found.append(state_path)
        else:
            unregister(entry.name)
    return found
