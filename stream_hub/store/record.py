"""A run's record in one store file, read a page at a time: every event of
a run, oldest first (the export), and the text events of a run or of all
runs — logs, alerts, anything that is neither a metric nor the hub's own
bookkeeping — newest first (the log panel, paging back).

Pages follow the chunks' ids, the order they were written in, over every
epoch of the file (a hub that continued the file after a crash numbers in
a new epoch; the run's older events stay in the old one). Only chunks
holding the run are read (their ``runs`` column names it). A caller
combining the file with a hub's ring leaves out the events it takes from
the ring (``skip``: the hub's epoch, after its split; see
``core.archive.Record``).
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from ..core.archive import RecordEvent
from . import chunks

__all__ = ["NOT_TEXT", "events_after", "text_before"]

#: Event types that are not text: metrics, media (histograms, images), and what the hub
#: writes about runs and streams.
NOT_TEXT = frozenset({"metric", "status", "gap", "shutdown", "config", "run_end", "histogram", "image"})

#: Chunks read per query (each holds up to 32 768 events).
_CHUNKS_PER_QUERY = 8


def _chunks(
    conn: sqlite3.Connection, run: str | None, after: int | None, before: int | None, descending: bool
) -> list[tuple[int, str, bytes]]:
    where: list[str] = []
    args: list[Any] = []
    if run is not None:
        where.append("instr(c.runs, ?) > 0")
        args.append(orjson.dumps(run).decode())
    if after is not None:
        where.append("c.id > ?")
        args.append(after)
    if before is not None:
        where.append("c.id < ?")
        args.append(before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    order = "DESC" if descending else "ASC"
    rows = conn.execute(
        f"SELECT c.id, e.epoch, c.body FROM chunks c JOIN epochs e ON e.id = c.epoch {clause} "
        f"ORDER BY c.id {order} LIMIT {_CHUNKS_PER_QUERY}",
        args,
    ).fetchall()
    return [(int(i), str(epoch), body) for i, epoch, body in rows]


def events_after(
    conn: sqlite3.Connection,
    run: str,
    after: int,
    max_events: int,
    skip: Callable[[str, int], bool] | None = None,
) -> tuple[list[RecordEvent], int]:
    """``run``'s events in the chunks after chunk id ``after``, oldest
    first: whole chunks until about ``max_events``. Returns the events and
    the last chunk id read (``after`` again: nothing is left)."""
    out: list[RecordEvent] = []
    last = after
    while len(out) < max_events:
        found = _chunks(conn, run, last, None, descending=False)
        if not found:
            break
        for number, epoch, body in found:
            last = number
            for seq, ts, kind, event_run, step, rank, payload in chunks.rows(chunks.decode(body)):
                if event_run == run and (skip is None or not skip(epoch, seq)):
                    out.append(
                        (
                            epoch,
                            seq,
                            kind,
                            run,
                            chunks.event_json(seq, epoch, ts, kind, run, step, payload, rank),
                        )
                    )
            if len(out) >= max_events:
                break
    return out, last


def text_before(
    conn: sqlite3.Connection,
    run: str | None,
    before: tuple[int, int] | None,
    limit: int,
    wanted: Callable[[str], bool],
    skip: Callable[[str, int], bool] | None = None,
) -> tuple[list[RecordEvent], tuple[int, int] | None]:
    """The newest ``limit`` text events (of ``run``, or of every run) whose
    type ``wanted`` accepts, before position ``before`` — (chunk id, seq):
    that chunk's events before that seq, then the chunks before it; None:
    from the newest. Returns them oldest first, and the position to read
    before next (None: the file's first chunk was read)."""
    found: list[list[RecordEvent]] = []  # per chunk, newest chunk first
    count = 0
    position = None if before is None else before[0] + 1
    partial = before
    while True:
        page = _chunks(conn, run, None, position, descending=True)
        if not page:
            return _oldest_first(found), None
        for number, epoch, body in page:
            position = number
            columns = _text_columns(body)
            if columns is None:
                continue
            kept: list[RecordEvent] = []
            for seq, ts, kind, event_run, step, rank, payload in chunks.rows(columns):
                if kind in NOT_TEXT or not wanted(kind) or (run is not None and event_run != run):
                    continue
                if (skip is not None and skip(epoch, seq)) or (partial is not None and seq >= partial[1]):
                    continue
                body_json = chunks.event_json(seq, epoch, ts, kind, event_run, step, payload, rank)
                kept.append((epoch, seq, kind, event_run, body_json))
            partial = None
            if count + len(kept) >= limit:
                kept = kept[len(kept) - (limit - count) :]
                found.append(kept)
                return _oldest_first(found), (number, kept[0][1])  # (kept: limit > count)
            if kept:
                found.append(kept)
                count += len(kept)


def _text_columns(body: bytes) -> list[list[Any]] | None:
    """A chunk's columns, or None when it holds metrics only (most do: their
    type column is one value, and is not expanded)."""
    raw: list[Any] = orjson.loads(zlib.decompress(body))
    types = raw[2]
    if isinstance(types, dict) and types.get("all") in NOT_TEXT:
        return None
    return chunks.decode_columns(raw)


def _oldest_first(found: list[list[RecordEvent]]) -> list[RecordEvent]:
    return [event for kept in reversed(found) for event in kept]
