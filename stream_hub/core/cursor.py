"""A subscriber's place in a hub's history (:class:`Cursor`), and the
counters of what was published, delivered and dropped (:class:`HubCounters`)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .ring import SSE

__all__ = ["Cursor", "HubCounters"]

# Gap and shutdown reach every subscriber whatever its type filter: one explains
# a hole in the sequence, the other the end of the stream.
_ALWAYS = frozenset({"gap", "shutdown"})


class HubCounters:
    """Event counters; plain ints updated on the committing thread."""

    __slots__ = ("delivered", "dropped", "published", "rejected")

    def __init__(self) -> None:
        self.published = 0  # events committed to the ring
        self.delivered = 0  # event frames written to clients
        self.dropped = 0  # events subscribers skipped after falling behind
        self.rejected = 0  # events that could not be encoded or ingested

    def as_dict(self, shed: int = 0) -> dict[str, int]:
        """The contract's ``events`` dict; ``shed`` counts events the intake
        had to forget (they are dropped too)."""
        return {
            "published": self.published,
            "delivered": self.delivered,
            "dropped": self.dropped + shed,
            "rejected": self.rejected,
        }


class Cursor:
    """A subscriber's position in the ring and its filters.

    ``pos`` is the seq of the last event the subscriber has been given (or
    skipped by its filters). ``runs``/``types`` are None for "all".
    ``pending_gap`` holds a gap to announce before anything else.
    """

    __slots__ = ("epoch", "fmt", "pending_gap", "pos", "runs", "types")

    def __init__(
        self,
        pos: int,
        fmt: int = SSE,
        runs: Collection[str] | None = None,
        types: Collection[str] | None = None,
        epoch: str = "",
    ) -> None:
        self.pos = pos
        self.epoch = epoch  # the epoch ``pos`` counts in
        self.fmt = fmt
        self.runs = frozenset(runs) if runs else None
        self.types = frozenset(types) if types else None
        self.pending_gap: dict[str, Any] | None = None

    @property
    def filtered(self) -> bool:
        return self.runs is not None or self.types is not None

    def wants(self, run: str | None, event_type: str) -> bool:
        if self.types is not None and event_type not in self.types and event_type not in _ALWAYS:
            return False
        return self.runs is None or run is None or run in self.runs
