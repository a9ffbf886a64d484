"""What the plugin counts since it started: hits, misses by reason, syncs, events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counters:
    """Counters since start (shown by the status)."""

    hits: int = 0
    misses: int = 0
    miss_reasons: dict[str, int] = field(default_factory=dict)
    syncs_started: int = 0
    syncs_completed: int = 0
    syncs_failed: int = 0
    events_applied: int = 0

    def miss(self, reason: str) -> None:
        self.misses += 1
        self.miss_reasons[reason] = self.miss_reasons.get(reason, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "miss_reasons": dict(self.miss_reasons),
            "syncs_started": self.syncs_started,
            "syncs_completed": self.syncs_completed,
            "syncs_failed": self.syncs_failed,
            "events_applied": self.events_applied,
        }
