"""Retention: which of a store's chunks go when it holds more events than
``store_max_events``, events older than ``store_max_days``, or more than
``store_max_bytes`` of pages in use (the file keeps its size until the
incremental vacuum gives freed pages back; pages in use is what the data
takes).

Whole chunks go, oldest first (a chunk is as old as its oldest event), a few
per call, so no transaction grows with the backlog: the writer deletes about
as much as it writes in each write, and the rest between writes.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["RETENTION_INTERVAL", "RETENTION_STEP", "trim", "used_bytes"]

#: Seconds between retention checks by age, and chunks deleted per step at most.
RETENTION_INTERVAL = 1.0
RETENTION_STEP = 64


def used_bytes(conn: sqlite3.Connection) -> int:
    """The bytes of the pages the store's data takes (free pages not counted)."""
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    return int((pages - free) * page_size)


def trim(
    conn: sqlite3.Connection,
    stored: int,
    max_events: int | None,
    max_days: float | None,
    max_bytes: int | None = None,
) -> tuple[int, bool]:
    """In a transaction: delete the oldest chunks beyond ``max_events`` (the
    file holding ``stored`` events), those older than ``max_days`` and the
    oldest beyond ``max_bytes``, at most ``RETENTION_STEP``; returns (events
    deleted, whether more are due). The runs not updated for ``max_days`` go too."""
    doomed: list[int] = []
    left = stored
    if max_events is not None and stored > max_events:
        oldest = conn.execute(f"SELECT id, count FROM chunks ORDER BY id LIMIT {RETENTION_STEP}")
        for number, count in oldest.fetchall():
            if left <= max_events:
                break
            doomed.append(number)
            left -= count
    cutoff = time.time() - max_days * 86400.0 if max_days is not None else None
    if cutoff is not None and len(doomed) < RETENTION_STEP:
        aged = conn.execute(
            f"SELECT id, count FROM chunks WHERE min_ts < ? LIMIT {RETENTION_STEP - len(doomed)}", (cutoff,)
        )
        for number, count in aged.fetchall():
            if number not in doomed:
                doomed.append(number)
                left -= count
    if max_bytes is not None and len(doomed) < RETENTION_STEP:
        excess = used_bytes(conn) - max_bytes
        if excess > 0:
            oldest = conn.execute(
                f"SELECT id, count, length(body) FROM chunks ORDER BY id LIMIT {RETENTION_STEP}"
            )
            for number, count, size in oldest.fetchall():
                if excess <= 0 or len(doomed) >= RETENTION_STEP:
                    break
                if number not in doomed:
                    doomed.append(number)
                    left -= count
                excess -= size
    if doomed:
        conn.execute(f"DELETE FROM chunks WHERE id IN ({','.join('?' * len(doomed))})", doomed)
    if cutoff is not None:
        conn.execute("DELETE FROM runs WHERE last_ts < ?", (cutoff,))
    return stored - left, len(doomed) == RETENTION_STEP
