"""Reading the store: the events of a range of seqs, and everything a hub
needs to continue the store's history (:func:`read_stored`).

A hub asks for events that left its ring from its loop
(:meth:`StoreReader.read`); the reading happens on a thread of the store's
own with its own connection (WAL: it never waits for the writer), one
request at a time, and the answer is handed back to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import orjson

from ..core.hub import Archived
from . import chunks
from .sqlite import connect, meta

__all__ = ["StoreReader", "Stored", "chunk_after", "read_range", "read_stored"]


def chunk_after(conn: sqlite3.Connection, epoch: int, seq: int) -> tuple[int, list[list[Any]]] | None:
    """The first chunk of ``epoch`` that holds events after ``seq``: (id, columns)."""
    row = conn.execute(
        "SELECT id, body FROM chunks WHERE epoch = ? AND last_seq > ? ORDER BY last_seq LIMIT 1", (epoch, seq)
    ).fetchone()
    return None if row is None else (int(row[0]), chunks.decode(row[1]))


def read_range(
    conn: sqlite3.Connection,
    epoch: str,
    first: int,
    last: int,
    max_bytes: int,
    cache: dict[tuple[int, int], list[list[Any]]] | None = None,
) -> list[Archived]:
    """The stored events of ``epoch`` with seqs ``first..last``, oldest
    first, about ``max_bytes`` of them (at least one, if there is one)."""
    row = conn.execute("SELECT id FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
    if row is None:
        return []
    number = int(row[0])
    out: list[Archived] = []
    size = 0
    seq = first - 1
    while seq < last and size < max_bytes:
        found = _cached_chunk_after(conn, number, seq, cache)
        if found is None:
            break
        events = chunks.events_in(found, epoch, seq + 1, last)
        if not events:
            break
        for event in events:
            out.append(event)
            size += len(event[4])
            if size >= max_bytes:
                break
        seq = out[-1][0]
    return out


def _cached_chunk_after(
    conn: sqlite3.Connection, epoch: int, seq: int, cache: dict[tuple[int, int], list[list[Any]]] | None
) -> list[list[Any]] | None:
    """:func:`chunk_after`, keeping the last chunks decoded (a client far
    behind reads one chunk over several writes)."""
    if cache is not None:
        for (in_epoch, _number), columns in cache.items():
            seqs = columns[0]
            if in_epoch == epoch and seqs and seqs[0] <= seq + 1 <= seqs[-1]:
                return columns
    found = chunk_after(conn, epoch, seq)
    if found is None:
        return None
    number, columns = found
    if cache is not None:
        if len(cache) >= 2:
            cache.pop(next(iter(cache)))
        cache[(epoch, number)] = columns
    return columns


@dataclasses.dataclass
class Stored:
    """What a store holds for a hub that continues it."""

    epoch: str | None  # None: an empty store
    last_seq: int  # the newest seq its hub gave (written or not)
    tail: list[bytes]  # the newest consecutive events' JSON, at most the ring's size
    runs: list[dict[str, Any]]  # RunIndex.state() items, oldest run first
    replay: list[tuple[Any, ...]]  # events after the curves were saved: RunIndex.observe args
    events: int  # events in the file
    durable: int = 0  # the newest seq of the epoch in the file
    #: False when the hub that wrote it last never closed it (killed): it may
    #: have numbered and served events past ``durable`` that the file lacks.
    clean: bool = True


def _chunks_desc(conn: sqlite3.Connection, epoch: int) -> Iterator[list[list[Any]]]:
    for (body,) in conn.execute("SELECT body FROM chunks WHERE epoch = ? ORDER BY last_seq DESC", (epoch,)):
        yield chunks.decode(body)


def read_stored(conn: sqlite3.Connection, history_size: int, max_runs: int) -> Stored:
    """The state a hub continuing this store adopts (its epoch, seq, ring, curves)."""
    values = meta(conn)
    events = int(conn.execute("SELECT coalesce(sum(count), 0) FROM chunks").fetchone()[0])
    rows = conn.execute("SELECT run, epoch, last_seq, saved, state FROM runs ORDER BY last_ts").fetchall()
    runs = [orjson.loads(row[4]) for row in rows[-max_runs:]] if max_runs else []
    # The newest chunk says the epoch and the last seq; the meta says more
    # when the newest seqs were dropped (not written) in that epoch.
    newest = conn.execute(
        "SELECT e.epoch, c.last_seq FROM chunks c JOIN epochs e ON e.id = c.epoch ORDER BY c.id DESC LIMIT 1"
    ).fetchone()
    epoch = newest[0] if newest is not None else values.get("epoch")
    if epoch is None:
        return Stored(None, 0, [], runs, [], events)
    last_seq = int(newest[1]) if newest is not None else 0
    if values.get("epoch") == epoch:
        last_seq = max(last_seq, int(values.get("last_seq", 0)))
    row = conn.execute("SELECT id FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
    tail: list[bytes] = []
    replay: list[tuple[Any, ...]] = []
    durable = 0
    if row is not None:
        number = int(row[0])
        # A run's saved curves hold its events up to its last_seq; every run
        # that had events by the newest save was saved (by then).
        covered = {run: last for run, in_epoch, last, _saved, _state in rows if in_epoch == epoch}
        curves_seq = max(
            (saved for _run, in_epoch, _last, saved, _state in rows if in_epoch == epoch), default=0
        )
        expected: int | None = None
        for columns in _chunks_desc(conn, number):
            events_rows = list(chunks.rows(columns))
            for seq, ts, kind, run, step, rank, payload in reversed(events_rows):
                if seq > curves_seq and seq > covered.get(run, 0):
                    metrics = chunks.metrics_of(payload) if kind == "metric" else payload
                    replay.append((seq, ts, run, step, kind, metrics, rank))
                if len(tail) < history_size and (expected is None or seq == expected):
                    tail.append(chunks.event_json(seq, epoch, ts, kind, run, step, payload, rank))
                    expected = seq - 1
                else:
                    expected = -1  # the tail ends at the first hole
            if (
                events_rows
                and events_rows[0][0] <= curves_seq
                and (len(tail) >= history_size or expected == -1)
            ):
                break
        tail.reverse()
        replay.reverse()
        found = conn.execute("SELECT max(last_seq) FROM chunks WHERE epoch = ?", (number,)).fetchone()[0]
        durable = int(found or 0)
    return Stored(epoch, last_seq, tail, runs, replay, events, durable, clean=not values.get("writing"))


class StoreReader:
    """Reads for a hub's loop on a thread of its own (see the module docstring).

    Requests for the same events that arrive while one for them waits in the
    queue share its answer: after a restart every client replaying from the
    same old seq asks at once, and one read answers them all. (The answer
    may end before a later request's ``last``: the ring moved on meanwhile;
    callers read on from where it ends.)
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[tuple[str, int, int, int] | None] = queue.SimpleQueue()
        # Who waits for each queued job: (epoch, first, max_bytes) -> [(loop, future)].
        self._waiting: dict[tuple[str, int, int], list[tuple[asyncio.AbstractEventLoop, Any]]] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.conn: sqlite3.Connection | None = None

    async def read(self, epoch: str, first: int, last: int, max_bytes: int) -> list[Archived]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Archived]] = loop.create_future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="stream-hub-store-reader", daemon=True
                )
                self._thread.start()
            key = (epoch, first, max_bytes)
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.append((loop, future))
            else:
                self._waiting[key] = [(loop, future)]
                self._jobs.put((epoch, first, last, max_bytes))
        return await future

    def _work(self) -> None:
        cache: dict[tuple[int, int], list[list[Any]]] = {}
        while True:
            job = self._jobs.get()
            if job is None:
                break
            epoch, first, last, max_bytes = job
            with self._lock:
                waiting = self._waiting.pop((epoch, first, max_bytes), [])
            # Cancelled futures: nobody waits for them any more (streams that ended, a stop).
            waiting = [(loop, future) for loop, future in waiting if not future.done()]
            if not waiting:
                continue
            try:
                if self.conn is None:
                    self.conn = connect(self.path, read_only=True)
                result: Any = read_range(self.conn, epoch, first, last, max_bytes, cache)
                ok = True
            except Exception as exc:  # the loop's caller gets it
                result, ok = exc, False
            for loop, future in waiting:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_deliver, future, ok, result)
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None

    def close(self, timeout: float) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join(timeout)

    def forget_after_fork(self) -> None:
        self._thread = None
        self._lock = threading.Lock()
        self._waiting = {}


def _deliver(future: asyncio.Future[list[Archived]], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
