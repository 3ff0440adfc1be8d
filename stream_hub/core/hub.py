"""The history side of a hub (I/O-free): the epoch, the ring of recent
events, the run curves, subscriber cursors, gaps and counters.

Events reach the hub through its :class:`~stream_hub.core.intake.Intake`
(numbered there, committed in batches into the ring by :meth:`Hub.commit`).
Subscribers are :class:`Cursor` objects: a position in the one shared ring
plus filters. :meth:`Hub.read` returns everything from a cursor to the head
as one bytes object, preceded by a ``gap`` event when the cursor fell out of
the ring.

Threading: submission may happen on any thread; commits and reads happen on
one thread at a time, the committing thread (see :mod:`stream_hub.core.intake`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import orjson

from ..events import encode_event
from .archive import Archive, Archived
from .cursor import Cursor, HubCounters
from .intake import Intake, Notifier, Submission
from .ring import JSON, SSE, WS, Numbered, Ring, frame
from .run_index import RunIndex
from .watch import AlertOutbox, Rules, Watch

__all__ = ["JSON", "SSE", "WS", "Archive", "Archived", "Cursor", "Hub", "HubCounters", "Numbered"]

logger = logging.getLogger(__name__)

# One write carries at most this many events, and about this many bytes: a
# client far behind gets several writes, so no single buffer grows with the ring.
MAX_CHUNK_EVENTS = 4096
MAX_CHUNK_BYTES = 256 * 1024
# The most bytes of events one /api/history answer carries (``more`` says the rest).
MAX_HISTORY_BYTES = 8 * 1024 * 1024
#: Bytes of archived events' frames kept for cursors resuming from the same seq.
BACKFILL_CACHE_BYTES = 16 * 1024 * 1024


class Hub:
    """Sequence counter, epoch, ring history and counters of one server.

    Args:
        history_size: events kept for replay, and the most a subscriber may lag
            before it skips ahead with a ``gap`` event.
        series_points: buckets kept per metric curve (see :mod:`stream_hub.core.series`).
        history_bytes: the most bytes of events kept (see :mod:`stream_hub.core.ring`).
        history_media_bytes: the most bytes of media events (histograms, images) kept,
            apart from ``history_bytes``.
        max_series: the most metric curves kept over all runs.
        run, rank: the default run and the rank of this process's own events.
        max_runs: the most runs summarised (the oldest finished ones make room).
        alert_outbox: also given every alert this hub commits (the webhook).
    """

    def __init__(
        self,
        history_size: int = 10_000,
        series_points: int = 1000,
        history_bytes: int = 64 * 1024 * 1024,
        max_series: int = 10_000,
        run: str = "default",
        rank: int | None = None,
        max_runs: int = 10_000,
        alert_outbox: AlertOutbox | None = None,
        history_media_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.epoch = uuid.uuid4().hex
        self.capacity = history_size
        self.counters = HubCounters()
        self.runs = RunIndex(series_points, max_runs=max_runs, max_series=max_series)
        # The detectors, fed by the run index (see stream_hub.core.watch).
        self.watch = self.runs.watch = Watch(Rules(), alert_outbox)
        self.ring = Ring(history_size, self.epoch, self.counters, history_bytes, history_media_bytes)
        self.intake = Intake(self.store_batch, max(4 * history_size, 50_000), run=run, rank=rank)
        # What keeps events beyond the ring, if anything (see Archive).
        self.archive: Archive | None = None
        # Events numbered by a Redis stream (this hub is one of its replicas).
        self.numbered_elsewhere = False
        # What subscribers get as their stream ends, besides history (see farewell).
        self.farewell_frames: dict[int, bytes] | None = None
        # Archived events' frames by (epoch, format, the seq they follow): see backfill_chunk.
        self._backfilled: dict[tuple[str, int, int], tuple[bytes, int, int, int]] = {}
        self._backfilled_bytes = 0

    def store_batch(self, batch: list[Any], count: int) -> None:
        """The intake's sink: a committed batch goes into the ring and the curves."""
        skipped = self.ring.store(batch, count, self.runs.observe, self.runs.runs)
        if skipped:  # an overloaded commit: its curves got a sample (and every extreme)
            self.runs.sampled(skipped)
        if self.intake.shed_runs:  # the intake forgot events before this commit
            self.runs.dropped("hub", self.intake.take_shed_runs())
        self.counters.published += count
        if self.archive is not None:
            self.archive.append(batch, count, self.epoch)
        if self.watch.raised:  # the hub's alerts: committed right after the batch that raised them
            self.intake.submit_from_sink(self.watch.take())

    def check_silence(self, now: float, live: Collection[tuple[str, int | None]]) -> None:
        """Alert the live publishers (run, rank) silent too long (see
        :meth:`Watch.check_silence`); the committing thread, outside a commit.
        Not on a replica of a Redis stream (see :meth:`store_numbered`)."""
        if not self.numbered_elsewhere and self.watch.check_silence(now, self.runs, live):
            self.intake.submit_many(self.watch.take())

    # -- the intake, for the server and for tests (the hot path calls it directly) -------

    def log(self, metrics: Any, step: Any = None, run: Any = None) -> int | None:
        return self.intake.log(metrics, step, run)

    def publish(self, event_type: Any, data: Any = None, run: Any = None, step: Any = None) -> int | None:
        return self.intake.publish(event_type, data, run, step)

    def submit(
        self,
        event_type: str,
        run: str | None,
        step: int | None,
        payload: Any,
        ts: float | None = None,
        rank: int | None = None,
    ) -> int:
        return self.intake.submit(event_type, run, step, payload, ts, rank)

    def submit_many(self, events: Sequence[Submission]) -> list[int]:
        return self.intake.submit_many(events)

    def commit(self) -> int:
        """Store every submitted event in the ring (on the committing thread)."""
        return self.intake.commit()

    def attach(self, notifier: Notifier) -> None:
        self.intake.attach(notifier)

    def detach(self, notifier: Notifier) -> None:
        self.intake.detach(notifier)

    @property
    def notifier(self) -> Notifier | None:
        return self.intake.notifier

    @property
    def last_seq(self) -> int:
        """The seq given to the newest submitted event (committed or not);
        the newest stored one when events are numbered elsewhere."""
        intake = self.intake
        return intake.last_seq if intake.numbered else self.ring.head

    def events_counts(self) -> dict[str, int]:
        """The contract's ``events`` dict (published, delivered, dropped, rejected)."""
        return self.counters.as_dict(shed=self.intake.shed)

    def drop_counts(self) -> dict[str, int]:
        """What this hub knows was lost, per cause (``status()["drops"]``):
        ``subscribers``, events clients skipped after falling behind (a
        ``gap``); ``hub``, events its intake forgot before committing them;
        ``forwarder``, events joined processes and forked children dropped
        before they reached it; ``store``, events its store did not write;
        ``curve``, metric values left out of the run curves (their bounds);
        ``sampled``, metric events overloaded commits did not give the
        curves (a sample of them and every extreme were given)."""
        totals = self.runs.drop_totals
        return {
            "subscribers": self.counters.dropped,
            "hub": self.intake.shed,
            "forwarder": totals["forwarder"],
            "store": totals["store"],
            "curve": self.runs.points_dropped,
            "sampled": totals["sampled"],
        }

    def state(self) -> dict[str, Any]:
        """The hub's history for a successor: epoch, last seq, the events in
        the ring (their JSON) and the run curves (committing thread only)."""
        self.encode_all()
        ring = self.ring
        return {
            "epoch": self.epoch,
            "last_seq": ring.head,
            "events": ring.json_range(ring.oldest, ring.head),
            "runs": self.runs.state(),
        }

    def adopt(self, state: dict[str, Any]) -> None:
        """Continue the history of another hub (:meth:`state`): same epoch,
        its events in the ring under their seqs, its curves; the next event
        gets the seq after its last (when the events, consecutive, end before
        it, the ring starts empty after it). Before serving (committing thread)."""
        self.epoch = self.ring.epoch = str(state["epoch"])
        events = [orjson.loads(text) for text in state["events"]]
        last_seq = int(state["last_seq"])
        self.ring.reset_at(int(events[0]["seq"]) - 1 if events else last_seq)
        self.ring.load(events)
        if self.ring.head != last_seq:  # a store that could not write the newest: start after them
            self.ring.reset_at(last_seq)
        self.runs.restore(state["runs"])
        self.intake.continue_from(last_seq)

    def encode_all(self) -> None:
        """Encode every committed event now (committing thread only)."""
        self.ring.encode_upto(self.ring.head)

    def encode_some(self, limit: int) -> None:
        """Encode at most ``limit`` more committed events (committing thread
        only): a bounded step for callers that must not hold the loop long."""
        ring = self.ring
        ring.encode_upto(min(ring.head, max(ring.encoded, ring.oldest - 1) + limit))

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
            return Cursor(head, fmt, runs, types, self.epoch)
        if since < 0:
            raise ValueError("since must be >= 0")
        if epoch is not None and epoch != self.epoch:
            cursor = Cursor(self.oldest - 1, fmt, runs, types, self.epoch)
            cursor.pending_gap = {"lost": None, "reason": "epoch", "from_epoch": epoch, "since": since}
            return cursor
        if since > self.last_seq:
            if self.numbered_elsewhere and epoch == self.epoch:
                # Seen on another replica of this epoch: ours catches up to it.
                return Cursor(since, fmt, runs, types, self.epoch)
            cursor = Cursor(head, fmt, runs, types, self.epoch)
            cursor.pending_gap = {"lost": 0, "reason": "ahead", "since": since, "last_seq": head}
            return cursor
        if since == 0:
            return Cursor(self.oldest - 1, fmt, runs, types, self.epoch)
        return Cursor(since, fmt, runs, types, self.epoch)

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
        new = Cursor(old.pos, old.fmt, runs, types, old.epoch)
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
        kept event. The writer adds ``frames`` to ``counters.delivered`` once
        the chunk is written.
        """
        if cursor.epoch != self.epoch:
            self._rebase(cursor)
        head = self.head
        ring = self.ring
        gaps: list[bytes] = []
        # What this read sends is encoded first; encoding may let old events
        # go, and a gap then moves the cursor on: what it sends instead is
        # encoded in turn (the cursor only moves forward, to the head at
        # most). The unread events before it are left for whoever reads them.
        while True:
            before = cursor.pos
            if before < head:
                ring.encode_range(before + 1, min(head, before + limit))
            gaps += self._gaps(cursor, "behind")
            if cursor.pos == before:
                break
        pos = cursor.pos
        if pos >= head:
            if not gaps:
                return b"", 0
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
        return (b"".join(gaps) + chunk if gaps else chunk), frames

    # -- events beyond the ring -------------------------------------------------------

    def history_backfill_range(self, since: int, epoch: str | None) -> tuple[int, int] | None:
        """The archived seqs a history answer after ``since`` would start with."""
        if self.archive is None or since <= 0 or (epoch is not None and epoch != self.epoch):
            return None
        oldest = self.oldest
        return (since + 1, oldest - 1) if since < oldest - 1 else None

    def backfill_range(self, cursor: Cursor) -> tuple[int, int] | None:
        """The seqs a cursor is owed that have left the ring, when an archive
        may still have them (ask it, then :meth:`backfill`); else None."""
        if cursor.epoch != self.epoch:
            self._rebase(cursor)
        if self.archive is None or cursor.pending_gap is not None:
            return None
        oldest = self.oldest
        if cursor.pos >= oldest - 1:
            return None
        return cursor.pos + 1, oldest - 1

    def backfill(self, cursor: Cursor, events: list[Archived]) -> list[bytes]:
        """Frames of archived events for a cursor (what it wants of them),
        advancing it; a ``gap`` for each stretch of seqs the archive does not
        have (before its first event, or between two of them).
        Nothing (and the cursor unmoved) when ``events`` is empty: :meth:`read`
        then announces the whole stretch. The caller counts what it sends."""
        if not events:
            return []
        parts: list[bytes] = []
        for seq, event_type, run, _rank, body in events:
            if seq <= cursor.pos:
                continue
            if seq > cursor.pos + 1:  # the archive lacks these (before or among its events)
                lost = seq - 1 - cursor.pos
                self.counters.dropped += lost
                data = {"lost": lost, "from": cursor.pos + 1, "to": seq - 1, "reason": "behind"}
                parts.append(self._gap_frame(cursor.fmt, seq - 1, data))
            if cursor.wants(run, event_type):
                parts.append(frame(cursor.fmt, seq, event_type, body))
            cursor.pos = seq
        return parts

    def cached_backfill(self, cursor: Cursor) -> tuple[bytes, int] | None:
        """What :meth:`backfill_chunk` gave the last unfiltered cursor of this
        format at ``cursor.pos`` (advancing this one the same way), or None."""
        if cursor.filtered or cursor.pending_gap is not None:
            return None
        found = self._backfilled.get((self.epoch, cursor.fmt, cursor.pos))
        if found is None:
            return None
        chunk, frames, pos, lost = found
        self.counters.dropped += lost
        cursor.pos = pos
        return chunk, frames

    def backfill_chunk(self, cursor: Cursor, events: list[Archived]) -> tuple[bytes, int]:
        """:meth:`backfill` as one chunk, and how many frames.

        An unfiltered cursor's chunk is kept (``BACKFILL_CACHE_BYTES`` of
        them, the oldest let go first) for the next cursor of its format at
        the same seq (:meth:`cached_backfill`): clients resuming from the same
        old seq, as every client does after a restart that replays from the
        start, then cost one archive read and one framing between them, not
        one each. An archived event never changes; the archive may let it go
        later (retention, Redis's MAXLEN), and a client resuming there then
        gets the kept chunk rather than a ``gap``.
        """
        start, dropped = cursor.pos, self.counters.dropped
        parts = self.backfill(cursor, events)
        if not parts:
            return b"", 0
        chunk = b"".join(parts)
        if not cursor.filtered and len(chunk) <= BACKFILL_CACHE_BYTES // 4:
            cache = self._backfilled
            key = (self.epoch, cursor.fmt, start)
            replaced = cache.pop(key, None)  # two cursors read it at once
            if replaced is not None:
                self._backfilled_bytes -= len(replaced[0])
            cache[key] = (chunk, len(parts), cursor.pos, self.counters.dropped - dropped)
            self._backfilled_bytes += len(chunk)
            while self._backfilled_bytes > BACKFILL_CACHE_BYTES:
                oldest = cache.pop(next(iter(cache)))
                self._backfilled_bytes -= len(oldest[0])
        return chunk, len(parts)

    def history(
        self,
        since: int = 0,
        *,
        runs: Collection[str] | None = None,
        types: Collection[str] | None = None,
        limit: int = 1000,
        epoch: str | None = None,
        archived: list[Archived] | None = None,
    ) -> tuple[list[bytes], bool]:
        """Event JSONs after ``since`` (a gap event first if some left history).

        ``archived``: what the archive had of the events older than the ring
        (:meth:`history_backfill_range`), put first. Returns ``(events,
        more)``; ``more`` is true when ``limit`` (or the size bound of one
        answer) cut it short.
        """
        # Only the events answered are encoded (Ring.json_of): a ring of a
        # million events nobody read yet is not encoded for a page of them.
        cursor = self.open_cursor(since, epoch=epoch, fmt=JSON, runs=runs, types=types)
        out = self.backfill(cursor, archived) if archived else []
        if len(out) >= limit:
            return out[:limit], True
        out += self._gaps(cursor, "history")
        if len(out) >= limit:
            return out[:limit], True
        head = self.head
        selected, last = self.ring.select_json(
            cursor.pos, head, cursor.wants, MAX_HISTORY_BYTES, limit - len(out)
        )
        events = out + [body for _seq, body in selected]
        return events, last < head

    def _rebase(self, cursor: Cursor) -> None:
        """The hub changed epoch under a cursor (its history was lost, e.g.
        Redis lost its data): it gets a ``gap`` and all of the new epoch."""
        cursor.pending_gap = {
            "lost": None,
            "reason": "epoch",
            "from_epoch": cursor.epoch,
            "since": cursor.pos,
        }
        cursor.pos = self.oldest - 1
        cursor.epoch = self.epoch

    # -- events numbered elsewhere (a Redis stream) ---------------------------------------

    def reset_epoch(self, epoch: str) -> None:
        """Start over in ``epoch``: the ring is emptied (its events belong to the
        old epoch); subscribers get a ``gap`` at their next read. The run curves
        stay (they describe the runs, whatever the numbering)."""
        self.epoch = self.ring.epoch = epoch
        self.ring.clear()

    def store_numbered(self, events: list[Numbered]) -> int:
        """Store events numbered elsewhere (in order; ones this hub already has
        are skipped, a jump forward drops the older ones from the ring).
        Returns how many were stored. Committing thread only."""
        stored = self.ring.store_encoded(events, self.runs.observe)
        self.counters.published += stored
        if self.watch.raised:
            # Every replica of the stream sees the same events, and each would
            # raise the same alerts into it: a replica raises none (users' alerts
            # are served like any event).
            self.watch.take()
        return stored

    def farewell(self, event_type: str, data: Any) -> None:
        """An event for this hub's own subscribers only, sent as their streams
        end (a replica's ``shutdown``: the other replicas go on). It is not in
        history: it carries the seq of the newest event, and no SSE id."""
        body = encode_event(self.head, self.epoch, time.time(), event_type, None, None, data)
        self.farewell_frames = {fmt: frame(fmt, None, event_type, body) for fmt in (JSON, SSE, WS)}

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
        return frame(fmt, seq, "gap", encode_event(seq, self.epoch, time.time(), "gap", None, None, data))
