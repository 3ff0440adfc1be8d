"""Reading a store file without a hub: its runs, and a run's events at full
resolution (``stream-hub export --store``).

Works while a hub writes the file (WAL readers never wait for the writer).
An older file is upgraded first, which needs the writer's lock: a file a
live hub holds is already current.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from typing import Any

import orjson

from ..errors import StoreError
from . import chunks
from .lock import StoreLock
from .sqlite import SCHEMA_VERSION, check_version, connect, journal_mode_for, upgrade, version

__all__ = ["open_store", "run_events", "stored_runs"]


def open_store(path: str) -> sqlite3.Connection:
    """A read-only connection to an existing store (upgraded if older).

    Raises:
        StoreError: there is no store at ``path``, it is not one, it is
            from a newer stream_hub, or it is older and another hub holds it.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise StoreError(f"no store at {path}")
    conn = connect(path, read_only=True)
    found = version(conn)
    check_version(path, found)
    if found == 0:
        conn.close()
        raise StoreError(f"{path} is empty: no hub has written to it yet")
    if found < SCHEMA_VERSION:
        conn.close()
        lock = StoreLock(path)
        lock.acquire()
        try:
            writer = connect(path, journal_mode_for(path))
            try:
                upgrade(writer, path, 1000, 10_000)
            finally:
                writer.close()
        finally:
            lock.release()
        conn = connect(path, read_only=True)
    return conn


def stored_runs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Each stored run's summary (``RunIndex.state()`` items without the curves), oldest first."""
    out = []
    for (state,) in conn.execute("SELECT state FROM runs ORDER BY last_ts"):
        run = orjson.loads(state)
        run.pop("tracks", None)
        out.append(run)
    return out


def run_events(conn: sqlite3.Connection, run: str) -> Iterator[dict[str, Any]]:
    """Every stored event of ``run``, oldest first (over all epochs)."""
    quoted = orjson.dumps(run).decode()
    rows = conn.execute(
        "SELECT e.epoch, c.body FROM chunks c JOIN epochs e ON e.id = c.epoch "
        "WHERE instr(c.runs, ?) > 0 ORDER BY c.id",
        (quoted,),
    )
    for epoch, body in rows:
        for seq, ts, kind, event_run, step, rank, payload in chunks.rows(chunks.decode(body)):
            if event_run == run:
                yield orjson.loads(chunks.event_json(seq, epoch, ts, kind, event_run, step, payload, rank))
