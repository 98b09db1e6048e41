"""Service logs: where they are and how their last lines are shown in errors."""

from __future__ import annotations

from pathlib import Path


def tail(path: Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, indented for an error message ("" when unreadable)."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    if not text:
        return f"  (its log {path} is empty)"
    return f"last lines of {path}:\n" + "\n".join(f"  | {line}" for line in text)
