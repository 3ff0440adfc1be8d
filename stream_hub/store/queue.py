"""What waits for a store's writer: the committed batches (:class:`Events`)
and the curves of runs (:class:`Curves`) the hub queued, and how a
transaction's worth of them becomes chunks (:func:`pack`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..core.intake import FIELDS
from . import chunks

__all__ = ["Curves", "Events", "pack"]


@dataclasses.dataclass
class Events:
    """A committed flat batch (the writer owns the list)."""

    epoch: str
    batch: list[Any]
    count: int
    at: float  # when it was queued (time.monotonic)


@dataclasses.dataclass
class Curves:
    """The curves of some runs as of seq ``seq``: (run, last_seq, last_ts, state JSON, summary JSON) rows."""

    epoch: str
    seq: int
    rows: list[tuple[str, int, float | None, bytes, bytes]]


def pack(items: list[Events | Curves], chunk_events: int) -> list[tuple[str, chunks.Chunk | Curves]]:
    """Queue items as (epoch, Chunk) and (epoch, curves), in their order;
    consecutive batches of one epoch are joined, then cut into chunks (not
    compressed yet: :func:`chunks.pack`)."""
    out: list[tuple[str, chunks.Chunk | Curves]] = []
    flat: list[Any] = []
    current = ""
    step = chunk_events * FIELDS
    for item in [*items, None]:
        if flat and (item is None or isinstance(item, Curves) or item.epoch != current):
            out += [(current, chunks.pack(flat[i : i + step])) for i in range(0, len(flat), step)]
            flat = []
        if isinstance(item, Curves):
            out.append((item.epoch, item))
        elif item is not None:
            current = item.epoch
            flat += item.batch
    return out
