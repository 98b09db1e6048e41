"""What every fault shares: an applied fault knows how to revert itself, exactly once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aichaos import clock


@dataclass
class AppliedFault:
    phase: str
    type: str
    target: str
    description: str
    spec: dict[str, Any]
    applied_at: float
    revert_action: Callable[[], None] = field(repr=False)
    undo_record: dict[str, Any] = field(default_factory=dict)  # what `aichaos cleanup` needs
    reverted_at: float | None = None
    revert_error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # what the fault observed (e.g. time to ready)

    @property
    def reverted(self) -> bool:
        return self.reverted_at is not None

    def revert(self) -> None:
        """Revert; raises on failure (the caller records it and goes on with the other faults)."""
        if self.reverted_at is not None:
            return
        self.revert_action()
        self.reverted_at = clock.now()

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "type": self.type, "target": self.target, "description": self.description,
                "spec": self.spec, "applied_at": self.applied_at, "reverted_at": self.reverted_at,
                "revert_error": self.revert_error, "detail": self.detail}
