"""The seam between a hub and what keeps its events beyond the ring (a
durable store, a Redis stream): see ``ARCHITECTURE.md``, "History"."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Archive", "Archived"]


#: One archived event: (seq, type, run, rank, its JSON).
Archived = tuple[int, str, "str | None", "int | None", bytes]


class Archive(Protocol):
    """What keeps a hub's events beyond its ring (a durable store, a Redis
    stream): the hub gives it every committed batch, and asks it for events
    that have left the ring before it answers a resume with a ``gap``."""

    def append(self, batch: list[Any], count: int, epoch: str) -> None:
        """A committed flat batch (on the committing thread: must not block)."""

    async def read(self, first: int, last: int, max_bytes: int) -> list[Archived]:
        """The events of seqs ``first..last`` it has, oldest first, about
        ``max_bytes`` of them at most (fewer, or none, when it has fewer)."""
