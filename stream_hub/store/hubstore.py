"""A hub's store while it hosts: the lock, the loading of what the file
holds, the writer, the reader, and the :class:`~stream_hub.core.hub.Archive`
the hub is given.

Opening (:meth:`HubStore.open`): take the lock (a second writer is refused,
or waits a little when it succeeds a host that is closing the file), check or
upgrade the schema, read what a continuing hub needs. Attaching
(:meth:`HubStore.attach`) then combines the store's history with the hub's:

- a hub with no history of its own (a new process, or one elected after its
  host died) **continues the store**: its epoch, its last seq, its newest
  events in the ring, every stored run's curves;
- a hub that has a newer history (handed over by a host that stopped, or its
  own from hosting before) **keeps it**: the store's other runs are added to
  its curves, and the events the store lacks are written to it.

From then on the hub gives the archive every committed batch; the archive
queues it for the writer and, every two seconds, the curves of the runs
that changed (taken on the committing thread, where they live).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import sqlite3
import time
import weakref
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from ..config import StreamConfig
from ..core.archive import RecordEvent
from ..core.hub import Archived, Hub
from ..core.intake import FIELDS
from ..errors import StoreError
from ..runtime import hooks
from . import record
from .directory import DEFAULT_MAX_BYTES, DEFAULT_MAX_DAYS, discard_if_empty
from .lock import StoreLock
from .reader import Stored, StoreReader, read_stored
from .sqlite import connect, journal_mode_for, set_meta, summary_of, upgrade
from .writer import StoreWriter

__all__ = ["HubStore", "StoreArchive"]

logger = logging.getLogger(__name__)

#: Seconds between two saves of the curves that changed, and events at most
#: (a hub continuing the store replays the events after into the curves).
CURVES_INTERVAL = 2.0
CURVES_EVENTS = 200_000
#: Seconds a reader of a run's record waits for the writer to write what left the ring.
RECORD_WAIT = 10.0

_T = TypeVar("_T")

_OPEN: weakref.WeakSet[HubStore] = weakref.WeakSet()
# Connections a forked child inherited: never closed there (see _after_fork_in_child).
_INHERITED: list[Any] = []


class StoreArchive:
    """The hub's archive (:class:`~stream_hub.core.hub.Archive`) backed by the store."""

    def __init__(self, hub: Hub, writer: StoreWriter, reader: StoreReader) -> None:
        self.hub = hub
        self.writer = writer
        self.reader = reader
        self.saved: dict[str, int] = {}  # run -> its event count when its curves were last saved
        self._next_curves = time.monotonic() + CURVES_INTERVAL
        self._unsaved = 0  # events since the curves were last saved

    def append(self, batch: list[Any], count: int, epoch: str) -> None:
        # On the committing thread, once per batch: a queue append, and the
        # curves every CURVES_INTERVAL.
        if not self.writer.append(batch, count, epoch):  # the queue was full: the runs say so
            self.hub.runs.dropped("store", Counter(run for run in batch[3::FIELDS] if run is not None))
        self._unsaved += count
        # (The type of the batch's last event: a hub stopping saves its curves.)
        if (
            time.monotonic() >= self._next_curves
            or self._unsaved >= CURVES_EVENTS
            or batch[2 - FIELDS] == "shutdown"
        ):
            self.save_curves(epoch, batch[-FIELDS])

    def save_curves(self, epoch: str, seq: int, every: bool = False) -> None:
        """Queue the curves of the runs that changed since they were last
        saved (``every``: of all runs), as of seq ``seq`` (committing thread)."""
        self._next_curves = time.monotonic() + CURVES_INTERVAL
        self._unsaved = 0
        runs = self.hub.runs
        saved = self.saved
        changed = [s.run for s in runs.runs.values() if every or saved.get(s.run) != s.events]
        if not changed:
            return
        rows: list[tuple[str, int, float | None, bytes, bytes]] = []
        for state in runs.state(changed):
            try:
                encoded, summary = orjson.dumps(state), orjson.dumps(summary_of(state))
                rows.append((state["run"], state["last_seq"], state["last_ts"], encoded, summary))
            except (TypeError, orjson.JSONEncodeError):  # a value beyond JSON (an int over 64 bits)
                continue
            saved[state["run"]] = runs.runs[state["run"]].events
        self.writer.append_curves(epoch, seq, rows)

    async def read(self, first: int, last: int, max_bytes: int) -> list[Archived]:
        return await self.reader.read(self.hub.epoch, first, last, max_bytes)

    # -- the run's record (core.archive.Record): on worker threads, a connection per page

    def split(self, oldest: int) -> int:
        return max(self.writer.durable_seq, oldest - 1)

    async def run_events(
        self, run: str, after: int, max_events: int, split: tuple[str, int]
    ) -> tuple[list[RecordEvent], int]:
        return await asyncio.to_thread(self._read, record.events_after, split, run, after, max_events)

    async def text_events(
        self,
        run: str | None,
        before: tuple[int, int] | None,
        limit: int,
        types: frozenset[str] | None,
        split: tuple[str, int],
    ) -> tuple[list[RecordEvent], tuple[int, int] | None]:
        def wanted(kind: str) -> bool:
            return types is None or kind in types

        return await asyncio.to_thread(self._read, record.text_before, split, run, before, limit, wanted)

    def _read(self, read: Callable[..., _T], split: tuple[str, int], *args: Any) -> _T:
        """``read(conn, *args, skip=...)`` on a connection of its own, once
        every event of the hub's epoch up to the split is written (a page
        read before would lack those that left the ring meanwhile)."""
        epoch, last = split
        if not self.writer.wait_durable(last, RECORD_WAIT):
            logger.warning("store %s: seq %d not written after %.0f s", self.writer.path, last, RECORD_WAIT)

        def skip(event_epoch: str, seq: int) -> bool:
            return bool(event_epoch == epoch and seq > last)

        conn = connect(self.writer.path, read_only=True)
        try:
            return read(conn, *args, skip=skip)
        finally:
            conn.close()


class HubStore:
    """The store at ``config.store``, for one hosting hub (see the module docstring)."""

    def __init__(self, path: str, config: StreamConfig, default: bool = False) -> None:
        self.path = path
        self.config = config
        #: A file of the default store (``store/directory.py``): bounded
        #: retention, and removed at the end when it holds no run.
        self.default = default
        self.lock = StoreLock(path)
        self.journal = "wal"
        self.writer: StoreWriter | None = None
        self.reader = StoreReader(path)
        self.archive: StoreArchive | None = None
        self._stored: Stored | None = None
        self._hub: Hub | None = None
        hooks.after_fork_in_child("store", _after_fork_in_child)

    def open(self, wait: float = 0.0) -> None:
        """Lock the file, bring its schema up to date and read what it holds.

        Raises:
            StoreLockedError: another hub writes it (after ``wait`` s).
            StoreError: it is not a store, or a newer stream_hub wrote it.
        """
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            raise StoreError(f"cannot create store {self.path}: directory {directory} does not exist")
        self.lock.acquire(wait)
        try:
            self.journal = journal_mode_for(self.path)
            started = time.monotonic()
            conn = connect(self.path, self.journal)
            try:
                cfg = self.config
                upgrade(conn, self.path, cfg.series_points, cfg.max_series)
                stored = read_stored(conn, cfg.history_size, max_runs=cfg.max_runs)
            except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                conn.close()
                raise StoreError(f"store {self.path} is damaged ({type(exc).__name__}: {exc})") from None
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            self.lock.release()
            raise StoreError(f"cannot use store {self.path}: {exc}") from None
        except BaseException:
            self.lock.release()
            raise
        self._stored = stored
        # Marked until a clean close: a later hub then knows whether this one died.
        set_meta(conn, writing=os.getpid())
        self.writer = StoreWriter(
            conn,
            self.path,
            queue_events=max(4 * cfg.history_size, 250_000),
            max_events=cfg.store_max_events,
            max_days=cfg.store_max_days if cfg.store_max_days or not self.default else DEFAULT_MAX_DAYS,
            max_bytes=cfg.store_max_bytes if cfg.store_max_bytes or not self.default else DEFAULT_MAX_BYTES,
            stored=stored.events,
        )
        self.writer.durable_seq = stored.durable
        _OPEN.add(self)
        logger.info(
            "store %s opened (%s journal, %d events, %d runs, epoch %s, last seq %d) in %.0f ms",
            self.path,
            self.journal,
            stored.events,
            len(stored.runs),
            stored.epoch or "new",
            stored.last_seq,
            (time.monotonic() - started) * 1000,
        )

    def attach(self, hub: Hub, handed_over: bool = False) -> None:
        """Combine the store's history with the hub's, give the hub its
        archive, and start writing (before the hub serves).

        The hub's own history wins when it was just ``handed_over`` (it is
        the newest there is), or when it is the store's epoch and not behind
        it (this process hosted it before); otherwise the hub continues the
        store's."""
        stored, writer = self._stored, self.writer
        assert stored is not None and writer is not None
        self._stored = None  # what it held is the hub's now
        archive = self.archive = StoreArchive(hub, writer, self.reader)
        self._hub = hub
        keep = handed_over or (hub.epoch == stored.epoch and hub.head >= stored.last_seq)
        if stored.epoch is not None and not keep:
            # A hub that died without closing the file may have numbered and
            # served events it never wrote: going on in its epoch would give
            # their seqs to other events. A new epoch keeps (epoch, seq) one
            # event; its clients get a gap.
            epoch = stored.epoch if stored.clean else hub.epoch
            if not stored.clean:
                logger.warning(
                    "store %s: its last hub ended without closing it (killed?); "
                    "going on in a new epoch %s after seq %d",
                    self.path,
                    epoch,
                    stored.last_seq,
                )
            hub.adopt(
                {
                    "epoch": epoch,
                    "last_seq": stored.last_seq,
                    "events": stored.tail,
                    "runs": stored.runs,
                }
            )
            archive.saved = {run["run"]: run["events"] for run in stored.runs}  # as they are in the file
            hub.runs.replay(stored.replay)
            logger.info("continuing the store's history: epoch %s after seq %d", hub.epoch, hub.last_seq)
        else:
            hub.runs.restore(stored.runs, keep=True)
            have = stored.last_seq if stored.epoch == hub.epoch else 0
            self._write_newer(hub, have)
            archive.save_curves(hub.epoch, hub.head, every=True)
        hub.archive = archive
        writer.start()

    def _write_newer(self, hub: Hub, have: int) -> None:
        """Queue the hub's events after seq ``have`` that the store lacks."""
        hub.encode_all()
        first = max(have + 1, hub.oldest)
        if first > hub.head:
            return
        batch: list[Any] = []
        for text in hub.ring.json_range(first, hub.head):
            event = orjson.loads(text)
            payload = event["metrics"] if event["type"] == "metric" else orjson.dumps(event.get("data"))
            batch += (event["seq"], event["ts"], event["type"], event.get("run"), event.get("step"), payload)
            batch.append(event.get("rank"))
        if batch:
            assert self.writer is not None
            self.writer.append(batch, len(batch) // FIELDS, hub.epoch)

    def note_urls(self, urls: dict[str, str]) -> None:
        """Say in the lock file where this store's hub serves (for a refused second writer)."""
        self.lock.describe(urls)

    def close(self, timeout: float = 10.0, handing_over: bool = False) -> None:
        """Write what is queued, close the file and let go of the lock; a
        default store file that holds no run is removed (unless a successor
        is ``handing_over`` to continue it)."""
        hub, self._hub = self._hub, None
        if hub is not None and hub.archive is self.archive:
            hub.archive = None
            # The last curves: events committed after the stop's own save (the
            # hub's alerts about the runs that just ended) are in them too.
            try:
                assert self.archive is not None
                self.archive.save_curves(hub.epoch, hub.head)
            except RuntimeError as exc:  # a training thread committing meanwhile: the stop's save stands
                logger.debug("store %s: last curves not saved (%s)", self.path, exc)
        _OPEN.discard(self)
        self.reader.close(1.0)
        writer = self.writer
        if writer is None or writer.close(timeout):
            self._mark_closed()
            if self.default and not handing_over:
                discard_if_empty(self.path)
            self.lock.release()
            logger.info("store %s closed", self.path)
            return
        # The disk is slow: the writer finishes in the background, and only
        # then lets go of the lock (no other writer may start before).
        logger.warning("store %s: still writing; it is let go once the writer has finished", self.path)
        writer.when_finished(self.lock.release)

    def _mark_closed(self) -> None:
        """Everything is written: say so in the file (see :meth:`attach`)."""
        try:
            with contextlib.closing(connect(self.path)) as conn:
                set_meta(conn, writing="")
        except (sqlite3.Error, StoreError) as exc:
            logger.warning("store %s: could not mark it closed (%s)", self.path, exc)

    def status(self) -> dict[str, Any]:
        """The ``store`` part of ``status()``."""
        writer = self.writer
        if writer is None:
            return {"path": self.path}
        return {
            "path": self.path,
            "journal": self.journal,
            "events": writer.stored,
            "bytes": writer.file_bytes(),
            "written": writer.written,
            "queued": writer.queued,
            "lag_s": round(writer.lag, 3),
            "dropped": writer.dropped,
            "errors": writer.errors,
            "deleted": writer.deleted,
            "last_seq": writer.durable_seq,
        }

    def _forget_after_fork(self) -> None:
        # A forked child must never use, nor close, the parent's connections:
        # SQLite's locks and mutexes are the parent's (closing one could even
        # delete the parent's WAL). They stay referenced, forever.
        for conn in (self.writer.conn if self.writer else None, self.reader.conn):
            if conn is not None:
                _keep_forever(conn)
        if self.writer is not None:
            self.writer.forget_after_fork()
        self.reader.forget_after_fork()
        self.lock.forget_after_fork()


def _keep_forever(conn: sqlite3.Connection) -> None:
    _INHERITED.append(conn)
    with contextlib.suppress(AttributeError, OSError):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))  # not even at interpreter exit


def _after_fork_in_child() -> None:
    for store in list(_OPEN):
        store._forget_after_fork()
    _OPEN.clear()
