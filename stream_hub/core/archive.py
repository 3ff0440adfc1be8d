"""The seam between a hub and what keeps its events beyond the ring (a
durable store, a Redis stream): see ``ARCHITECTURE.md``, "History"."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Archive", "Archived", "Record", "RecordEvent"]


#: One archived event: (seq, type, run, rank, its JSON).
Archived = tuple[int, str, "str | None", "int | None", bytes]

#: One event of a run's record: (epoch, seq, type, run, its JSON).
RecordEvent = tuple[str, int, str, "str | None", bytes]


class Archive(Protocol):
    """What keeps a hub's events beyond its ring (a durable store, a Redis
    stream): the hub gives it every committed batch, and asks it for events
    that have left the ring before it answers a resume with a ``gap``."""

    def append(self, batch: list[Any], count: int, epoch: str) -> None:
        """A committed flat batch (on the committing thread: must not block)."""

    async def read(self, first: int, last: int, max_bytes: int) -> list[Archived]:
        """The events of seqs ``first..last`` it has, oldest first, about
        ``max_bytes`` of them at most (fewer, or none, when it has fewer)."""


@runtime_checkable
class Record(Protocol):
    """An archive that reads a run's whole record, over every epoch it
    keeps, by run (the store): what the export and the log panel read.

    ``split``: (the hub's epoch, a seq from :meth:`split`): the events of
    that epoch after it are the caller's (its ring's), and left out; those
    up to it that are not written yet are waited for (seconds at most).
    """

    def split(self, oldest: int) -> int:
        """Where a reader of this hub's epoch should go from the archive to
        the ring whose oldest seq is ``oldest``: what is written, and at
        least everything the ring let go of (committing thread)."""

    async def run_events(
        self, run: str, after: int, max_events: int, split: tuple[str, int]
    ) -> tuple[list[RecordEvent], int]:
        """``run``'s events after position ``after`` (0: from the start),
        oldest first, about ``max_events``; and the position to read after
        next (``after`` again: none are left)."""

    async def text_events(
        self,
        run: str | None,
        before: tuple[int, int] | None,
        limit: int,
        types: frozenset[str] | None,
        split: tuple[str, int],
    ) -> tuple[list[RecordEvent], tuple[int, int] | None]:
        """The newest text events (not metrics, not the hub's own; of
        ``types`` when given) of ``run`` or every run, before position
        ``before`` (None: the newest), ``limit`` of them at most; oldest
        first; and the position to read before next (None: the start
        was reached)."""
