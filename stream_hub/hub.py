"""The I/O-free core: sequence numbers, epoch, the ring of recent events,
subscriber cursors, gaps and counters.

Nothing here touches sockets or an event loop. Events enter through one seam,
:meth:`Hub.submit` (the training thread's ``log``/``publish``, ``POST
/api/publish``, and later other sources), are numbered there, and are committed
in batches by :meth:`Hub.commit`, which stores them in the ring. Subscribers
are :class:`Cursor` objects: a position in the one shared ring plus filters.
:meth:`Hub.read` returns everything from a cursor to the head as one bytes
object, preceded by a ``gap`` event when the cursor fell out of the ring.

Threading: ``submit`` may be called from any thread. ``commit`` and ``read``
run on one thread at a time: the thread of the :class:`Notifier` attached to
the hub (the server's loop thread) while one is attached, else the submitting
thread itself, inline. :meth:`Hub.attach` and :meth:`Hub.detach` switch
between the two atomically: no commit ever runs on a training thread while a
notifier is attached.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Collection, Sequence
from time import time as _time
from typing import Any, Protocol

from .events import (
    encode_data,
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

__all__ = ["JSON", "SSE", "WS", "Cursor", "Hub", "HubCounters", "Notifier"]

logger = logging.getLogger(__name__)

# Gap and shutdown reach every subscriber whatever its type filter: one explains
# a hole in the sequence, the other the end of the stream.
_ALWAYS = frozenset({"gap", "shutdown"})

_NUMERIC = frozenset({float, int})

# One write carries at most this many events, and about this many bytes: a
# client far behind gets several writes, so no single buffer grows with the ring.
MAX_CHUNK_EVENTS = 4096
MAX_CHUNK_BYTES = 256 * 1024
# The most bytes of events one /api/history answer carries (``more`` says the rest).
MAX_HISTORY_BYTES = 8 * 1024 * 1024


class Notifier(Protocol):
    """What the hub tells the thread that commits for it (the server's loop).

    ``wake`` and ``wake_urgent`` are called from any thread, outside the
    hub's locks, and raise ``RuntimeError`` once the notifier's loop has
    closed; ``committed`` is called on the committing thread after each batch.
    """

    def wake(self) -> None: ...

    def wake_urgent(self) -> None: ...

    def committed(self) -> None: ...


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

    ``pos`` is the seq of the last event the subscriber has been given (or
    skipped by its filters). ``runs``/``types`` are None for "all".
    ``pending_gap`` holds a gap to announce before anything else.
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
        history_bytes: the most bytes of events kept (see :mod:`stream_hub.ring`).
        max_series: the most metric curves kept over all runs.
    """

    def __init__(
        self,
        history_size: int = 10_000,
        series_points: int = 1000,
        history_bytes: int = 64 * 1024 * 1024,
        max_series: int = 10_000,
    ) -> None:
        self.epoch = uuid.uuid4().hex
        self.capacity = history_size
        self.counters = HubCounters()
        self.runs = RunIndex(series_points, max_series=max_series)
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
        self._urgent_sent = False
        # Who commits: the attached notifier's thread, or (None) the submitter.
        # Written only with both locks held; read under either.
        self._notifier: Notifier | None = None
        # Commit side: the ring of the newest events, written by one thread.
        self._commit_lock = threading.Lock()
        self.ring = Ring(history_size, self.epoch, self.counters, history_bytes)

    # -- who commits -------------------------------------------------------------

    def attach(self, notifier: Notifier) -> None:
        """From now on, commits happen on ``notifier``'s thread.

        Waits for an inline commit in progress to finish, so once this
        returns no other thread writes the ring. The caller commits what is
        pending on the notifier's thread.
        """
        with self._commit_lock, self._lock:
            self._notifier = notifier

    def detach(self, notifier: Notifier) -> None:
        """Commit inline again (if ``notifier`` is still the attached one), and
        commit everything submitted so far.

        Call it once the notifier's thread no longer reads the ring.
        """
        with self._commit_lock, self._lock:
            if self._notifier is notifier:
                self._notifier = None
        self.commit()

    @property
    def notifier(self) -> Notifier | None:
        return self._notifier

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
            notifier = self._notifier
        finally:
            lock.release()
        self._kick(notifier)
        return seq

    def publish(self, event_type: Any, data: Any = None, run: Any = None, step: Any = None) -> int:
        """Submit any JSON-able event; returns its seq.

        ``data`` is encoded here, in the caller's thread: the event keeps a
        snapshot (later changes to ``data`` do not reach it).

        Raises:
            TypeError: ``event_type`` is not a plain word or is reserved, or
                ``data`` cannot be encoded as JSON.
        """
        if event_type == "metric":
            return self.log(data, step=step, run=run)
        validate_type(event_type)
        return self.submit(event_type, validate_run(run), validate_step(step), encode_data(data))

    def submit(
        self, event_type: str, run: str | None, step: int | None, payload: Any, ts: float | None = None
    ) -> int:
        """Number an already validated event and queue it for commit.

        The one seam every source of events goes through. ``payload`` is the
        metrics dict of a metric event, else the data (pre-encoded bytes, or a
        JSON-able object the caller no longer changes).
        """
        return self.submit_many([(event_type, run, step, payload, ts)])[-1]

    def submit_many(
        self, events: Sequence[tuple[str, str | None, int | None, Any, float | None]]
    ) -> list[int]:
        """:meth:`submit` for several events at once (consecutive seqs)."""
        now = time.time()
        with self._lock:
            first = self._seq + 1
            pending = self._pending
            for seq, (event_type, run, step, payload, ts) in enumerate(events, first):
                pending += (seq, now if ts is None else ts, event_type, run, step, payload)
            self._seq = first + len(events) - 1
            if self._wake_scheduled:
                if len(pending) > self._pending_limit:
                    self._backlog(pending)
                return list(range(first, self._seq + 1))
            self._wake_scheduled = True
            notifier = self._notifier
        self._kick(notifier)
        return list(range(first, first + len(events)))

    def _kick(self, notifier: Notifier | None) -> None:
        """Get the batch just started committed: wake the notifier, or commit here."""
        if notifier is not None:
            try:
                notifier.wake()
                return
            except RuntimeError:
                # Its loop has closed: nothing reads the ring there any more,
                # and nothing waits there to be told.
                with self._commit_lock:
                    self._commit_locked()
                return
        with self._commit_lock:
            notifier = self._notifier
            if notifier is None:
                self._commit_locked()
                return
        self._kick(notifier)  # attached in the meantime: its thread commits

    def _backlog(self, pending: list[Any]) -> None:
        """Publishers are far ahead of the loop (called with ``_lock`` held).

        First ask the loop to commit now, whatever its spacing; the commit
        stores only what the ring can hold and samples the rest into the run
        curves. If the loop still does not come (it is stuck or dead), forget
        the oldest events rather than grow without bound; followers see a gap.
        """
        notifier = self._notifier
        if not self._urgent_sent and notifier is not None:
            self._urgent_sent = True
            try:
                notifier.wake_urgent()
            except RuntimeError:
                pass  # the loop is closing; the limit below still holds
        if len(pending) > 4 * self._pending_limit:
            # Cut back to twice the limit, so the cut happens rarely.
            excess = (len(pending) - 2 * self._pending_limit) // FIELDS
            del pending[: excess * FIELDS]
            self.counters.shed += excess

    @property
    def last_seq(self) -> int:
        """The seq given to the newest submitted event (committed or not)."""
        return self._seq

    # -- commit (one thread at a time) ----------------------------------------

    def commit(self) -> int:
        """Store every submitted event in the ring; returns how many.

        Call it on the notifier's thread (or, with none attached, any thread).
        Events are encoded later, once, by the first reader that needs them
        (:meth:`Ring.encode_upto`): with nobody reading, a publisher in a tight
        loop costs the loop no JSON work at all.
        """
        with self._commit_lock:
            count = self._commit_locked()
        notifier = self._notifier
        if count and notifier is not None:
            notifier.committed()
        return count

    def _commit_locked(self) -> int:
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
        epoch replays all history after a gap (reason ``epoch``); a ``since``
        beyond the newest seq of this epoch follows new events after a gap
        (reason ``ahead``) that says where this hub stands.
        """
        head = self.head
        if since is None:
            return Cursor(head, fmt, runs, types)
        if since < 0:
            raise ValueError("since must be >= 0")
        if epoch is not None and epoch != self.epoch:
            cursor = Cursor(self.oldest - 1, fmt, runs, types)
            cursor.pending_gap = {"lost": None, "reason": "epoch", "from_epoch": epoch, "since": since}
            return cursor
        if since > self._seq:
            cursor = Cursor(head, fmt, runs, types)
            cursor.pending_gap = {"lost": 0, "reason": "ahead", "since": since, "last_seq": head}
            return cursor
        if since == 0:
            return Cursor(self.oldest - 1, fmt, runs, types)
        return Cursor(since, fmt, runs, types)

    def resubscribe(
        self,
        old: Cursor,
        since: int | None,
        *,
        epoch: str | None = None,
        runs: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> Cursor:
        """A cursor with new filters that continues ``old`` on a connection
        that has already been sent frames: nothing is repeated or reordered.

        A ``since`` beyond ``old.pos`` skips ahead like :meth:`open_cursor`.
        One at or before it cannot be replayed in order; events after it that
        the new filters accept but the old ones did not are announced by a
        ``gap`` (reason ``resubscribe``) instead of being lost silently.
        """
        if epoch is not None and epoch != self.epoch:
            since = 0
        if since is not None and since > old.pos:
            return self.open_cursor(since, epoch=epoch, fmt=old.fmt, runs=runs, types=types)
        new = Cursor(old.pos, old.fmt, runs, types)
        new.pending_gap = old.pending_gap
        if since is not None and since < old.pos:
            start = max(since, self.oldest - 1)
            lost = self.ring.matching(start, old.pos, lambda r, t: new.wants(r, t) and not old.wants(r, t))
            if lost:
                new.pending_gap = {"lost": lost, "from": since + 1, "to": old.pos, "reason": "resubscribe"}
        return new

    def read(
        self, cursor: Cursor, limit: int = MAX_CHUNK_EVENTS, max_bytes: int = MAX_CHUNK_BYTES
    ) -> tuple[bytes, int]:
        """Everything after ``cursor.pos`` (up to ``limit`` events and about
        ``max_bytes``) as one chunk.

        Advances the cursor. Returns ``(chunk, frames)``; ``(b"", 0)`` when the
        cursor is at the head. A cursor that fell out of the ring first gets a
        ``gap`` event (its seq is the last lost one) and skips to the oldest
        kept event.
        """
        head = self.head
        ring = self.ring
        if cursor.pos < head:
            ring.encode_upto(head)  # first: encoding may let old events go
        gaps = self._gaps(cursor, "behind")
        pos = cursor.pos
        if pos >= head:
            if not gaps:
                return b"", 0
            self.counters.delivered += len(gaps)
            return b"".join(gaps), len(gaps)
        end = min(head, pos + limit)
        if cursor.filtered:
            parts, end = ring.select(cursor.fmt, pos, end, cursor.wants, max_bytes)
            chunk, n = b"".join(parts), len(parts)
        else:
            end = ring.cut(cursor.fmt, pos, end, max_bytes)
            chunk, n = ring.slice(cursor.fmt, pos, end), end - pos
        cursor.pos = end
        frames = n + len(gaps)
        self.counters.delivered += frames
        return (b"".join(gaps) + chunk if gaps else chunk), frames

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

        Returns ``(events, more)``; ``more`` is true when ``limit`` (or the
        size bound of one answer) cut it short.
        """
        self.encode_all()
        cursor = self.open_cursor(since, epoch=epoch, fmt=JSON, runs=runs, types=types)
        out = self._gaps(cursor, "history")
        head = self.head
        selected, last = self.ring.select(JSON, cursor.pos, head, cursor.wants, MAX_HISTORY_BYTES)
        events = out + selected
        if len(events) > limit:
            return events[:limit], True
        return events, last < head

    def _gaps(self, cursor: Cursor, reason: str) -> list[bytes]:
        """The gap frames a cursor is owed (its pending gap, then one for
        events that left history), advancing it past what left."""
        out: list[bytes] = []
        if cursor.pending_gap is not None:
            out.append(self._gap_frame(cursor.fmt, cursor.pos, cursor.pending_gap))
            cursor.pending_gap = None
        oldest = self.oldest
        if cursor.pos < oldest - 1:
            lost = oldest - 1 - cursor.pos
            if reason == "behind":
                self.counters.dropped += lost
            data = {"lost": lost, "from": cursor.pos + 1, "to": oldest - 1, "reason": reason}
            out.append(self._gap_frame(cursor.fmt, oldest - 1, data))
            cursor.pos = oldest - 1
        return out

    def _gap_frame(self, fmt: int, seq: int, data: dict[str, Any]) -> bytes:
        body = encode_event(seq, self.epoch, time.time(), "gap", None, None, data)
        if fmt == SSE:
            return sse_frame(seq, "gap", body)
        if fmt == WS:
            return ws_text_frame(body)
        return body

    def reinit_after_fork(self) -> None:
        """In a forked child: fresh locks (another thread may have held them
        at fork time), nothing pending of the parent's, and no notifier."""
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._pending = []
        self._wake_scheduled = False
        self._urgent_sent = False
        self._notifier = None
