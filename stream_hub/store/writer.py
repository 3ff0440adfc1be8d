"""The writer: one thread that makes a hub's committed events durable.

The hub hands it every committed batch (:meth:`StoreWriter.append`, on the
committing thread): an append to a queue, never a wait. The thread takes
what has queued about every ``WRITE_INTERVAL`` (sooner when much has), turns
it into chunks (:mod:`.chunks`: seven C-level slices, one JSON encoding, one
compression per chunk, most of it without the GIL), and writes them in one
transaction. Between transactions it enforces retention in small deletes.

Bounded: at most ``queue_events`` events wait. Past that (the writer cannot
keep up, or the disk is full and writes fail), new batches are not queued:
they stay only in the hub's memory history, and are counted in ``dropped``.
A failed transaction is retried with a growing pause, so writing resumes by
itself once the disk has room again.

How long an event can wait before it is durable, when the writer keeps up:
the hub's commit spacing (at most ``busy_flush_interval``, 0.25 s) plus
``WRITE_INTERVAL`` plus one transaction — under a second. A hub killed with
SIGKILL loses at most that; what was committed is intact (WAL).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..core.intake import FIELDS
from ..runtime.signals import block_sigterm_in_this_thread
from . import chunks
from .queue import Curves, Events, pack
from .retention import RETENTION_INTERVAL, trim
from .sqlite import CHUNK_EVENTS, INSERT_CHUNK, chunk_row, epoch_id, save_runs, set_meta, transaction

__all__ = ["StoreWriter"]

logger = logging.getLogger(__name__)

#: Seconds between two transactions (the events of that time make one write).
WRITE_INTERVAL = 0.5
#: Queued events that make the writer write at once.
WRITE_AT_ONCE = 16_384
#: Pauses after a failed transaction: the first, and the longest.
RETRY_FIRST, RETRY_MAX = 0.5, 10.0


class StoreWriter:
    """The thread writing one store (see the module docstring).

    Args:
        conn: the store's connection (this thread's from :meth:`start` on).
        path: the store file (for messages and its size).
        queue_events: events that may wait at most; past it batches are dropped.
        max_events, max_days, max_bytes: retention (None: keep everything).
        stored: the events the file holds now.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        *,
        queue_events: int = 250_000,
        max_events: int | None = None,
        max_days: float | None = None,
        max_bytes: int | None = None,
        stored: int = 0,
    ) -> None:
        self.conn = conn
        self.path = path
        self.queue_events = queue_events
        self.max_events = max_events
        self.max_days = max_days
        self.max_bytes = max_bytes
        # Counters, read by status() from other threads (plain ints).
        self.written = 0  # events made durable
        self.dropped = 0  # events never written: the queue was full, or writing failed at close
        self.errors = 0  # failed transactions
        self.deleted = 0  # events removed by retention
        self.last_error: str | None = None
        self.durable_seq = 0  # the newest seq written
        self.cpu_s = 0.0  # CPU time of the writer thread
        self.stored = stored  # events in the file
        # The newest seq dropped, and its epoch: the file's last_seq counts it,
        # so a hub continuing the file never gives that seq to another event.
        self._dropped_to: tuple[str, int] | None = None
        self._dropped_saved: tuple[str, int] | None = None  # the one last written to the file
        self._items: deque[Events | Curves] = deque()  # guarded by _lock
        self._queued = 0  # events appended and not yet written (or dropped)
        self._oldest: float | None = None  # when the oldest of them was appended
        self._lock = threading.Lock()
        self._wake = threading.Event()  # the queue got something
        self._hurry = threading.Event()  # much is queued: write now
        self._stop = threading.Event()  # closing: write what is left and end
        self._closed = False
        self._failing = False
        self._pause = RETRY_FIRST
        self._pending: list[tuple[str, chunks.Chunk | Curves]] = []  # encoded, not yet written
        self._epochs: dict[str, int] = {}
        self._last_retention = 0.0
        self._thread: threading.Thread | None = None
        self._on_finish: Callable[[], None] | None = None
        self._finished = False
        self._finish_lock = threading.Lock()
        self._wrote = threading.Condition()  # notified after each transaction and at the end

    # -- the committing thread ----------------------------------------------------------------

    def append(self, batch: list[Any], count: int, epoch: str) -> bool:
        """Queue a committed flat batch (the writer owns the list from now on).

        O(1) and never blocks: a full queue drops the batch (counted), and
        the answer is False.
        """
        if self._closed:
            return True  # closing: what is left is counted when the writer ends
        if self._queued + count > self.queue_events:
            self.dropped += count
            self._dropped_to = (epoch, batch[-FIELDS])
            return False
        with self._lock:
            idle = not self._queued
            now = time.monotonic()
            self._items.append(Events(epoch, batch, count, now))
            self._queued += count
            if self._oldest is None:
                self._oldest = now
        if idle:
            self._wake.set()
        elif self._queued >= WRITE_AT_ONCE:
            self._hurry.set()
        return True

    def append_curves(
        self, epoch: str, seq: int, rows: list[tuple[str, int, float | None, bytes, bytes]]
    ) -> None:
        """Queue the curves of some runs as of seq ``seq``: (run, last_seq,
        last_ts, state JSON, summary JSON)."""
        if self._closed:
            return
        with self._lock:
            self._items.append(Curves(epoch, seq, rows))

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def lag(self) -> float:
        """Seconds the oldest event not yet written has waited (0 when none waits)."""
        oldest = self._oldest
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    def wait_durable(self, seq: int, timeout: float) -> bool:
        """Block (not on the loop) until every event queued up to ``seq`` is
        written or will never be (the queue emptied, the writer ended), at
        most ``timeout`` s; whether it came to that. A reader of the file
        that found the ring past what is written waits here for the rest."""
        self._hurry.set()
        with self._wrote:
            return self._wrote.wait_for(
                lambda: self.durable_seq >= seq or not self._queued or self._finished, timeout
            )

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stream-hub-store", daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> bool:
        """Write what is queued, stop, and close the connection, within
        ``timeout`` s; whether the thread ended (if not, it may still write:
        the caller must not hand the store to another writer)."""
        self._stop.set()
        self._hurry.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            self._write_all()
            self._finish()
            return True
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("store %s: the writer did not finish within %.1f s", self.path, timeout)
            return False
        return True

    def forget_after_fork(self) -> None:
        """In a forked child: never touch the parent's connection (see :mod:`.store`)."""
        self._closed = True
        self._thread = None

    # -- the writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        block_sigterm_in_this_thread()  # SIGTERM is the main thread's (runtime/signals.py)
        stop = self._stop
        try:
            # One wait per write while events keep coming: every wake-up takes
            # the GIL back from a training thread that may be busy with it.
            last_write = time.monotonic()
            while True:
                if not stop.is_set():  # the interval's events gather (at once when many)
                    self._hurry.wait(max(0.0, last_write + WRITE_INTERVAL - time.monotonic()))
                    self._hurry.clear()
                if not stop.is_set() and not self._queued and not self._pending:
                    self._wake.clear()
                    if not self._queued:
                        self._wake.wait(RETENTION_INTERVAL)  # idle until an event comes
                    if self._queued and not stop.is_set():
                        last_write = time.monotonic()  # its interval starts now
                        continue
                last_write = time.monotonic()
                started = time.thread_time()
                try:
                    self._write_all()
                except Exception:  # a bug, not the disk: say so, and keep the thread alive
                    logger.exception("store %s: writing failed", self.path)
                    self.errors += 1
                if not self._failing and not stop.is_set():
                    self._retain()
                self.cpu_s += time.thread_time() - started
                if stop.is_set() and (self._failing or not self._items):
                    break
                if self._failing:
                    stop.wait(self._pause)  # a full disk: try again later
        finally:
            self._finish()

    def _finish(self) -> None:
        self._closed = True
        with self._lock:
            left = self._queued
            self._items.clear()
            self._queued = 0
            self._oldest = None
        if left:
            self.dropped += left
            logger.error("store %s: %d events could not be written before closing", self.path, left)
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        with self._finish_lock:
            self._finished = True
            callback = self._on_finish
        with self._wrote:
            self._wrote.notify_all()
        if callback is not None:
            callback()

    def when_finished(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the writer has finished (now, if it has)."""
        with self._finish_lock:
            if not self._finished:
                self._on_finish = callback
                return
        callback()

    def _write_all(self) -> None:
        """One transaction with everything queued (kept and retried if it fails)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
        if not items and not self._pending:
            return
        try:
            packed = pack(items, self.chunk_events)
        except Exception:
            self._lose(
                [(item.epoch, item.batch[-FIELDS], item.count) for item in items if isinstance(item, Events)]
            )
            self._pending += [(item.epoch, item) for item in items if isinstance(item, Curves)]
            raise
        del items  # the batches go before compressing (see chunks.pack)
        try:
            self._pending += [(epoch, _compressed(item)) for epoch, item in packed]
        except Exception:
            self._lose([(e, c.last_seq, c.count) for e, c in packed if isinstance(c, chunks.Chunk)])
            self._pending += [(e, c) for e, c in packed if isinstance(c, Curves)]
            raise
        del packed
        written = [c for _epoch, c in self._pending if isinstance(c, chunks.Chunk)]
        try:
            deleted = self._commit(self._pending)
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        self._pending = []
        count = sum(c.count for c in written)
        with self._lock:
            self._queued -= count
            self._oldest = next((item.at for item in self._items if isinstance(item, Events)), None)
        self.written += count
        self.stored += count
        self._deleted(deleted)
        if written:
            self.durable_seq = max(self.durable_seq, max(c.last_seq for c in written))
        with self._wrote:
            self._wrote.notify_all()
        if self._failing:
            self._failing = False
            logger.warning("store %s: writing again", self.path)

    def _lose(self, lost: list[tuple[str, int, int]]) -> None:
        """Events taken from the queue that will never be written (a bug, not
        the disk), as (epoch, last seq, count) per batch or chunk: counted as
        dropped, and their newest seq kept for the file, as for a full queue."""
        if not lost:
            return
        events = sum(count for _epoch, _seq, count in lost)
        self.dropped += events
        epoch, seq, _count = lost[-1]
        newest = self._dropped_to  # a full queue may have dropped newer ones already
        if newest is None or newest[0] != epoch or newest[1] < seq:
            self._dropped_to = (epoch, seq)
        with self._lock:
            self._queued -= events
            self._oldest = next((item.at for item in self._items if isinstance(item, Events)), None)

    def _commit(self, pending: list[tuple[str, chunks.Chunk | Curves]]) -> int:
        """Write ``pending`` atomically; returns the events retention deleted.

        Each statement lets go of the GIL and must get it back from the
        training thread, which, busy in Python, keeps it up to a switch
        interval (longer on a loaded machine): the usual write, one chunk, is
        one cached INSERT in autocommit (a statement is a transaction), and
        curves one more. The seq of dropped events and retention take a
        transaction.
        """
        conn = self.conn
        rows: list[tuple[Any, ...]] = []
        runs: list[tuple[Any, ...]] = []
        meta: dict[str, Any] = {}
        for epoch, item in pending:
            number = self._epochs.get(epoch)
            if number is None:
                number = self._epochs[epoch] = epoch_id(conn, epoch) or 0
            if isinstance(item, chunks.Chunk):
                rows.append((number, *chunk_row(item)))
            else:
                runs += [
                    (run, epoch, last, ts, item.seq, state, sm) for run, last, ts, state, sm in item.rows
                ]
        dropped = self._dropped_to
        if dropped is not None and dropped != self._dropped_saved:
            meta.update(epoch=dropped[0], last_seq=dropped[1])
        added = sum(row[3] for row in rows)
        over = self.max_events is not None and self.stored + added > self.max_events
        if len(rows) <= 1 and not meta and not over:
            # The events first: curves saved without them would be replayed
            # over, those saved after them never are (see reader.read_stored).
            if rows:
                conn.execute(INSERT_CHUNK, rows[0])
            save_runs(conn, runs)
            return 0
        deleted = 0
        with transaction(conn):
            conn.executemany(INSERT_CHUNK, rows)
            save_runs(conn, runs)
            set_meta(conn, **meta)
            # Retention by events in the same transaction, so its bound holds
            # at every commit: about as much deleted as written (more: _retain).
            more = over
            while more and deleted <= added:
                step, more = self._trim(conn, self.stored + added - deleted)
                deleted += step
        self._dropped_saved = dropped
        return deleted

    def _failed(self, exc: sqlite3.Error) -> None:
        self.errors += 1
        self.last_error = str(exc)
        if not self._failing:
            self._failing = True
            self._pause = RETRY_FIRST
            logger.error(
                "store %s: cannot write (%s); events stay in memory history and are written "
                "once the store can take them (past %d waiting, new ones are dropped and counted)",
                self.path,
                exc,
                self.queue_events,
            )
        else:
            self._pause = min(RETRY_MAX, self._pause * 2)

    # -- retention -----------------------------------------------------------------------------------

    @property
    def chunk_events(self) -> int:
        """Events per chunk at most: small enough for retention by events to keep most of its bound."""
        if self.max_events is None:
            return CHUNK_EVENTS
        return max(16, min(CHUNK_EVENTS, self.max_events // 8))

    def _retain(self) -> None:
        """Enforce retention beyond what the writes did (events older than
        ``max_days``; a backlog of events beyond ``max_events``): a few
        chunks per transaction, going back to writing between steps."""
        if self.max_events is None and self.max_days is None and self.max_bytes is None:
            return
        now = time.monotonic()
        over = self.max_events is not None and self.stored > self.max_events
        if now - self._last_retention < RETENTION_INTERVAL and not over:
            return
        self._last_retention = now
        while not self._stop.is_set() and self._queued < WRITE_AT_ONCE:
            try:
                with transaction(self.conn) as conn:
                    deleted, more = self._trim(conn, self.stored, by_age=True)
            except sqlite3.Error as exc:
                logger.warning("store %s: retention step failed: %s", self.path, exc)
                return
            self._deleted(deleted)
            if not more:
                return

    def _trim(self, conn: sqlite3.Connection, stored: int, by_age: bool = False) -> tuple[int, bool]:
        if by_age:
            return trim(conn, stored, self.max_events, self.max_days, self.max_bytes)
        return trim(conn, stored, self.max_events, None)

    def _deleted(self, events: int) -> None:
        if not events:
            return
        self.deleted += events
        self.stored -= events
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA incremental_vacuum(256)").fetchall()  # give the space back

    # -- status -----------------------------------------------------------------------------------------

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(self.path + suffix)
        return total


def _compressed(item: chunks.Chunk | Curves) -> chunks.Chunk | Curves:
    return chunks.compress(item) if isinstance(item, chunks.Chunk) else item
