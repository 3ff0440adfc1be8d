"""The I/O-free core: sequence numbers, epoch, the ring of recent events,
subscriber cursors, gaps and counters.

Nothing here touches sockets or an event loop. Events enter through one seam,
:meth:`Hub.submit` (the training thread's ``log``/``publish``, ``POST
/api/publish``, and later other sources), are numbered there, and are committed
in batches by :meth:`Hub.commit`, which encodes each event once. Subscribers
are :class:`Cursor` objects: a position in the one shared ring plus filters.
:meth:`Hub.read` returns everything from a cursor to the head as one bytes
object, preceded by a ``gap`` event when the cursor fell out of the ring.

Threading: ``submit`` may be called from any thread. ``commit`` and ``read``
run on one thread at a time (the server's loop thread while it runs; the
submitting thread while no loop is attached).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from time import time as _time
from typing import Any

from .events import (
    encode_event,
    sse_frame,
    validate_metrics,
    validate_run,
    validate_step,
    validate_type,
    ws_text_frame,
)
from .ring import FIELDS, JSON, SSE, WS, Ring
from .runs import RunIndex

__all__ = ["JSON", "SSE", "WS", "Cursor", "Hub", "HubCounters"]

logger = logging.getLogger(__name__)

# Gap and shutdown reach every subscriber whatever its type filter: one explains
# a hole in the sequence, the other the end of the stream.
_ALWAYS = frozenset({"gap", "shutdown"})

_NUMERIC = frozenset({float, int})

# One write carries at most this many events; a client far behind gets several
# writes, so no single buffer grows with the ring.
MAX_CHUNK_EVENTS = 4096


class HubCounters:
    """Event counters; plain ints updated on the committing thread."""

    __slots__ = ("delivered", "dropped", "published", "rejected", "shed")

    def __init__(self) -> None:
        self.shed = 0  # events forgotten before commit (publishers outran the loop)
        self.published = 0  # events committed to the ring
        self.delivered = 0  # event frames written to clients
        self.dropped = 0  # events subscribers skipped after falling behind
        self.rejected = 0  # events that could not be encoded or ingested

    def as_dict(self) -> dict[str, int]:
        return {
            "published": self.published,
            "delivered": self.delivered,
            "dropped": self.dropped + self.shed,
            "rejected": self.rejected,
        }


class Cursor:
    """A subscriber's position in the ring and its filters.

    ``pos`` is the seq of the last event the subscriber has been given.
    ``runs``/``types`` are None for "all". ``pending_gap`` holds a gap to
    announce before anything else (a resume from another epoch).
    """

    __slots__ = ("fmt", "pending_gap", "pos", "runs", "types")

    def __init__(
        self,
        pos: int,
        fmt: int = SSE,
        runs: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> None:
        self.pos = pos
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


class Hub:
    """Sequence counter, epoch, ring history and counters of one server.

    Args:
        history_size: events kept for replay, and the most a subscriber may lag
            before it skips ahead with a ``gap`` event.
        series_points: buckets kept per metric curve (see :mod:`stream_hub.runs`).
    """

    def __init__(self, history_size: int = 10_000, series_points: int = 1000) -> None:
        self.epoch = uuid.uuid4().hex
        self.capacity = history_size
        self.counters = HubCounters()
        self.runs = RunIndex(series_points)
        # Submission side, shared by every publishing thread.
        self._lock = threading.Lock()
        self._seq = 0
        # Submitted, not yet committed events, flattened: FIELDS values each
        # (seq, ts, type, run, step, payload). Flat, because a list of tuples
        # holding dicts would keep every one of them tracked by the garbage
        # collector, whose full passes then grow with the backlog.
        self._pending: list[Any] = []
        self._pending_limit = FIELDS * max(4 * history_size, 50_000)
        self._wake_scheduled = False
        # Called (outside the lock) by the first submit after a commit; the
        # server points it at its loop. None means "commit inline".
        self.wake: Callable[[], None] | None = None
        # Called (any thread, outside the lock) when the backlog is too long.
        self.wake_urgent: Callable[[], None] | None = None
        self._urgent_sent = False
        # Called on the committing thread after each batch.
        self.on_commit: Callable[[], None] | None = None
        # Commit side: the ring of the newest events, written by one thread.
        self._commit_lock = threading.Lock()
        self.ring = Ring(history_size, self.epoch, self.counters)

    # -- submission (any thread) --------------------------------------------

    def log(self, metrics: Any, step: Any = None, run: Any = None) -> int:
        """Validate and submit one metric event; returns its seq.

        Raises:
            TypeError: a value is not a real number, or step/run have the wrong type.
        """
        # HOT PATH (training thread): one dict copy, one type check per value,
        # one uncontended lock, one append; the wake-up happens once per batch.
        # No logging, no I/O. ``submit`` is inlined here on purpose.
        if type(metrics) is dict:
            values = metrics.copy()
            for key, value in values.items():
                if type(value) not in _NUMERIC or type(key) is not str:
                    values = validate_metrics(metrics)
                    break
        else:
            values = validate_metrics(metrics)
        if type(run) is not str:
            run = validate_run(run)
        if step is not None and type(step) is not int:
            step = validate_step(step)
        ts = _time()
        lock = self._lock
        lock.acquire()  # explicit acquire/release: half the cost of ``with``
        try:
            seq = self._seq = self._seq + 1
            pending = self._pending
            pending += (seq, ts, "metric", run, step, values)
            if self._wake_scheduled:
                if len(pending) > self._pending_limit:
                    self._backlog(pending)
                return seq
            self._wake_scheduled = True
        finally:
            lock.release()
        self._wake_now()
        return seq

    def publish(self, event_type: Any, data: Any = None, run: Any = None, step: Any = None) -> int:
        """Submit any JSON-able event; returns its seq.

        Raises:
            TypeError: ``event_type`` is not a plain word or is reserved.
        """
        if event_type == "metric":
            return self.log(data, step=step, run=run)
        validate_type(event_type)
        return self.submit(event_type, validate_run(run), validate_step(step), data)

    def submit(
        self, event_type: str, run: str | None, step: int | None, payload: Any, ts: float | None = None
    ) -> int:
        """Number an already validated event and queue it for commit.

        The one seam every source of events goes through.
        """
        if ts is None:
            ts = time.time()
        with self._lock:
            seq = self._seq = self._seq + 1
            pending = self._pending
            pending += (seq, ts, event_type, run, step, payload)
            if self._wake_scheduled:
                if len(pending) > self._pending_limit:
                    self._backlog(pending)
                return seq
            self._wake_scheduled = True
        self._wake_now()
        return seq

    def _backlog(self, pending: list[Any]) -> None:
        """Publishers are far ahead of the loop (called with ``_lock`` held).

        First ask the loop to commit now, whatever its spacing; the commit
        encodes only what the ring can hold and samples the rest into the run
        curves. If the loop still does not come (it is stuck or dead), forget
        the oldest events rather than grow without bound; followers see a gap.
        """
        urgent = self.wake_urgent
        if not self._urgent_sent and urgent is not None:
            self._urgent_sent = True
            try:
                urgent()
            except RuntimeError:
                pass  # the loop is closing; the limit below still holds
        if len(pending) > 4 * self._pending_limit:
            # Cut back to twice the limit, so the cut happens rarely.
            excess = (len(pending) - 2 * self._pending_limit) // FIELDS
            del pending[: excess * FIELDS]
            self.counters.shed += excess

    def _wake_now(self) -> None:
        wake = self.wake
        if wake is None:
            self.commit()
            return
        try:
            wake()
        except RuntimeError:
            # The loop closed between our read of ``wake`` and the call.
            self.commit()

    @property
    def last_seq(self) -> int:
        """The seq given to the newest submitted event (committed or not)."""
        return self._seq

    # -- commit (one thread at a time) ----------------------------------------

    def commit(self) -> int:
        """Store every submitted event in the ring; returns how many.

        Events are encoded later, once, by the first reader that needs them
        (:meth:`Ring.encode_upto`): with nobody reading, a publisher in a tight
        loop costs the loop no JSON work at all.
        """
        with self._commit_lock:
            with self._lock:
                batch = self._pending
                self._pending = []
                self._wake_scheduled = False
                self._urgent_sent = False
            if not batch:
                return 0
            count = len(batch) // FIELDS
            self.ring.store(batch, count, self.runs.observe, self.runs.runs)
            self.counters.published += count
        callback = self.on_commit
        if callback is not None:
            callback()
        return count

    def encode_all(self) -> None:
        """Encode every committed event now (committing thread only)."""
        self.ring.encode_upto(self.ring.head)

    @property
    def head(self) -> int:
        """The seq of the newest committed event."""
        return self.ring.head

    @property
    def oldest(self) -> int:
        """The seq of the oldest event still in history (head + 1 when empty)."""
        return self.ring.oldest

    @property
    def size(self) -> int:
        return self.ring.size

    def ts_of(self, seq: int) -> float:
        """Publish time of a committed event still in history."""
        return self.ring.ts_of(seq)

    # -- subscribers ----------------------------------------------------------

    def open_cursor(
        self,
        since: int | None = None,
        *,
        epoch: str | None = None,
        fmt: int = SSE,
        runs: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> Cursor:
        """A cursor for a new subscriber.

        ``since=None`` follows new events only; ``since=N`` replays everything
        after seq N still in history (``0``: all of it), announcing with a
        ``gap`` event whatever has left the ring. A ``since`` from another
        epoch (named, or beyond our head) replays all history after a gap.
        """
        head = self.head
        if since is None:
            return Cursor(head, fmt, runs, types)
        if since < 0:
            raise ValueError("since must be >= 0")
        foreign = (epoch is not None and epoch != self.epoch) or since > self._seq
        if since == 0 or foreign:
            cursor = Cursor(self.oldest - 1, fmt, runs, types)
            if foreign:
                cursor.pending_gap = {
                    "lost": None,
                    "reason": "epoch",
                    "from_epoch": epoch,
                    "since": since,
                }
            return cursor
        return Cursor(since, fmt, runs, types)

    def read(self, cursor: Cursor, limit: int = MAX_CHUNK_EVENTS) -> tuple[bytes, int]:
        """Everything after ``cursor.pos`` (up to ``limit`` events) as one chunk.

        Advances the cursor. Returns ``(chunk, frames)``; ``(b"", 0)`` when the
        cursor is at the head. A cursor that fell out of the ring first gets a
        ``gap`` event (its seq is the last lost one) and skips to the oldest
        kept event.
        """
        head = self.head
        pos = cursor.pos
        prefix = b""
        frames = 0
        if cursor.pending_gap is not None:
            prefix = self._gap_frame(cursor, pos, cursor.pending_gap)
            cursor.pending_gap = None
            frames = 1
        if pos >= head:
            return prefix, frames
        oldest = self.oldest
        if pos < oldest - 1:
            lost = oldest - 1 - pos
            self.counters.dropped += lost
            prefix += self._gap_frame(
                cursor,
                oldest - 1,
                {"lost": lost, "from": pos + 1, "to": oldest - 1, "reason": "behind"},
            )
            frames += 1
            pos = oldest - 1
        end = min(head, pos + limit)
        ring = self.ring
        ring.encode_upto(head)
        if cursor.filtered:
            parts = ring.select(cursor.fmt, pos, end, cursor.wants)
            chunk, n = b"".join(parts), len(parts)
        else:
            chunk, n = ring.slice(cursor.fmt, pos, end), end - pos
        cursor.pos = end
        frames += n
        self.counters.delivered += frames
        return (prefix + chunk if prefix else chunk), frames

    def _gap_frame(self, cursor: Cursor, seq: int, data: dict[str, Any]) -> bytes:
        body = encode_event(seq, self.epoch, time.time(), "gap", None, None, data)
        if cursor.fmt == SSE:
            return sse_frame(seq, "gap", body)
        if cursor.fmt == WS:
            return ws_text_frame(body)
        return body

    def reinit_after_fork(self) -> None:
        """In a forked child: fresh locks (another thread may have held them
        at fork time) and no loop to wake."""
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._wake_scheduled = False
        self._urgent_sent = False
        self.wake = None
        self.wake_urgent = None
        self.on_commit = None

    # -- queries ----------------------------------------------------------------

    def history(
        self,
        since: int = 0,
        *,
        runs: Collection[str] | None = None,
        types: Collection[str] | None = None,
        limit: int = 1000,
        epoch: str | None = None,
    ) -> tuple[list[bytes], bool]:
        """Event JSONs after ``since`` (a gap event first if some left history).

        Returns ``(events, more)``; ``more`` is true when ``limit`` cut it short.
        """
        self.encode_all()
        cursor = self.open_cursor(since, epoch=epoch, fmt=JSON, runs=runs, types=types)
        out: list[bytes] = []
        if cursor.pending_gap is not None:
            out.append(self._gap_frame(cursor, cursor.pos, cursor.pending_gap))
            cursor.pending_gap = None
        oldest = self.oldest
        if cursor.pos < oldest - 1 and self.head > 0:
            lost = oldest - 1 - cursor.pos
            out.append(
                self._gap_frame(
                    cursor,
                    oldest - 1,
                    {"lost": lost, "from": cursor.pos + 1, "to": oldest - 1, "reason": "history"},
                )
            )
            cursor.pos = oldest - 1
        head = self.head
        start = cursor.pos
        end = head
        selected = self.ring.select(JSON, start, end, cursor.wants)
        if len(out) + len(selected) <= limit:
            return out + selected, False
        # Cut at ``limit`` events; ``more`` says there is more after them.
        return out + selected[: limit - len(out)], True
