"""The ring: the newest committed events, their encodings, and the joined
chunks readers send (I/O-free).

Parallel lists indexed by ``seq % capacity`` hold each event's fields; the
JSON, SSE and WebSocket encodings are filled in lazily, once, by the first
reader that needs them (:meth:`Ring.encode_upto`), so events nobody reads cost
no encoding at all.

History is bounded twice: by events (``capacity``) and by bytes
(``max_bytes``). Each kept event is charged what it costs: an estimate while
it waits to be encoded, the size of its three encodings afterwards. When the
total passes ``max_bytes`` the oldest events leave early, so a publisher of
large events cannot make memory grow with ``capacity``.

Media (``histogram`` and ``image`` events, :data:`~stream_hub.events.MEDIA_TYPES`)
are charged to a budget of their own (``media_max_bytes``), so a run logging
images never pushes metrics out of history. Past it, the oldest media event
still kept leaves: its slot becomes a one-event ``gap`` (reason ``media``),
as a rejected event's does, so the ring stays one unbroken stretch and a
client replaying it is told what it missed. An archive (the store) still has it.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from itertools import accumulate
from typing import Any, Protocol

import orjson

from ..events import MEDIA_TYPES, encode_event, sse_frame, ws_text_frame
from .extremes import must_observe
from .intake import FIELDS

__all__ = ["FIELDS", "JSON", "SSE", "WS", "Numbered", "Ring", "frame"]

logger = logging.getLogger(__name__)

SSE = 0  # frame formats a reader can ask for
WS = 1
JSON = 2


class RejectCounter(Protocol):
    """Where encoding failures are counted (the hub's counters)."""

    rejected: int


#: An event numbered elsewhere: (seq, ts, type, run, step, rank, its JSON, payload
#: for the run curves: the metrics of a metric event, else its data).
Numbered = tuple[int, float, str, "str | None", "int | None", "int | None", bytes, Any]

# observe(seq, ts, run, step, type, payload, rank), for each committed event
Observe = Callable[[int, float, "str | None", "int | None", str, Any, "int | None"], None]

# What an event is charged before it is encoded: a fixed part (the slot, the
# tuple fields, the three bytes objects to come) plus its payload.
_BASE_COST = 300
_METRIC_COST = 100  # per metric: dict entry, float, its share of the JSON


_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _ignore(*_args: Any) -> None:
    """An observer that takes no notice (events whose curves arrive separately)."""


def _estimate(payload: Any) -> int:
    if type(payload) is bytes:  # pre-encoded data: three encodings of it to come
        return _BASE_COST + 3 * len(payload)
    if type(payload) is dict:
        return _BASE_COST + _METRIC_COST * len(payload)
    return _BASE_COST


class Ring:
    """Storage of the newest events of one hub: at most ``capacity`` events
    and about ``max_bytes`` bytes.

    Encoding failures are counted in ``counters.rejected``.
    """

    def __init__(
        self,
        capacity: int,
        epoch: str,
        counters: RejectCounter,
        max_bytes: int = 64 * 1024 * 1024,
        media_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.media_max_bytes = media_max_bytes
        self.media_bytes = 0  # what the kept media events are charged (not in ``bytes``)
        self.media_dropped = 0  # media events that left early for the media budget
        # The kept media events, oldest first: seq -> what each is charged.
        self._media: dict[int, int] = {}
        self.epoch = epoch
        self.counters = counters
        self.head = 0  # seq of the newest committed event
        self.bytes = 0  # what the kept events are charged
        self._floor = 1  # events below this seq left early (the byte bound)
        self._json: list[bytes] = [b""] * capacity
        self._sse: list[bytes] = [b""] * capacity
        self._ws: list[bytes] = [b""] * capacity
        self._cost: list[int] = [0] * capacity
        self.runs: list[str | None] = [None] * capacity
        self.types: list[str] = [""] * capacity
        self._ts: list[float] = [0.0] * capacity
        self._step: list[int | None] = [None] * capacity
        self._payload: list[Any] = [None] * capacity
        self.ranks: list[int | None] = [None] * capacity
        self._encoded = 0  # events up to this seq are encoded
        # Events past ``_encoded`` a reader needed are encoded alone
        # (encode_range): the seq each such slot holds (0: none), and the
        # newest of them, so the common path checks nothing.
        self._enc: list[int] = [0] * capacity
        self._ahead = 0
        self._formats = (self._sse, self._ws, self._json)
        self._chunk_cache: dict[tuple[int, int, int], bytes] = {}

    @property
    def oldest(self) -> int:
        """The seq of the oldest event still in the ring (head + 1 when empty)."""
        return max(1, self.head - self.capacity + 1, self._floor)

    @property
    def size(self) -> int:
        return self.head - self.oldest + 1

    def ts_of(self, seq: int) -> float:
        """Publish time of a committed event still in the ring."""
        return self._ts[seq % self.capacity]

    # -- writing (the committing thread) ----------------------------------------------

    def store(
        self, batch: list[Any], count: int, observe: Observe, known: dict[str, Any]
    ) -> Counter[str] | None:
        """Store a flat batch of ``count`` events, newest last; feed ``observe``.

        ``known`` maps the runs the summaries already know. Returns, when the
        batch overloaded the ring, how many metric events of each run
        ``observe`` was not given (the curves got a sample: see
        :mod:`stream_hub.core.extremes`); else None.
        """
        skipped: Counter[str] | None = None
        cap = self.capacity
        runs_, types_, tss = self.runs, self.types, self._ts
        steps, payloads, costs, ranks = self._step, self._payload, self._cost, self.ranks
        charged = self.bytes
        if count > cap:
            # Overload: more events than the ring holds arrived since the last
            # commit. Only the newest ``cap`` can still be in the ring
            # afterwards, so only they are stored; the summaries get a sample
            # of ``cap`` events spread over the whole batch, plus every run's
            # first (its curve starts there) and last (its latest values)
            # event, and what a sample may not miss (core/extremes.py: every
            # event that is not a metric, each curve's extremes). No
            # Python-level work per event here but the charges.
            overflow = count - cap
            columns = [batch[overflow * FIELDS + f :: FIELDS] for f in range(FIELDS)]
            start = columns[0][0] % cap
            head_part = cap - start
            column_costs = [_estimate(p) for p in columns[5]]
            if not MEDIA_TYPES.isdisjoint(columns[2]):  # C-level: media are rare in a flood
                for k, event_type in enumerate(columns[2]):
                    if event_type in MEDIA_TYPES:
                        self._media[columns[0][k]] = column_costs[k]
                        self.media_bytes += column_costs[k]
                        column_costs[k] = 0
            targets: tuple[list[Any], ...] = (tss, types_, runs_, steps, payloads, ranks, costs)
            for ring, column in zip(targets, (*columns[1:], column_costs)):
                ring[start:] = column[:head_part]
                ring[:start] = column[head_part:]
            charged = sum(column_costs)
            all_runs = batch[3::FIELDS]
            try:
                picks, per_run = must_observe(batch, count, cap // 4)
            except (TypeError, ValueError):  # a payload past log()'s checks: the sample alone
                picks, per_run = set(), Counter()
            picks.update(range(0, count, count // cap + 1))
            picks.update({run: k for k, run in enumerate(all_runs)}.values())
            for run in set(all_runs) - known.keys():
                picks.add(all_runs.index(run))
            for k in sorted(picks):
                seq, ts, event_type, run, step, payload, rank = batch[k * FIELDS : (k + 1) * FIELDS]
                if event_type == "metric" and run is not None:
                    per_run[run] -= 1
                observe(seq, ts, run, step, event_type, payload, rank)
            skipped = +per_run  # the runs' metric events left out of their curves
        else:
            it = iter(batch)
            for seq, ts, event_type, run, step, payload, rank in zip(it, it, it, it, it, it, it):
                i = seq % cap
                runs_[i] = run
                types_[i] = event_type
                tss[i] = ts
                steps[i] = step
                payloads[i] = payload
                ranks[i] = rank
                # _estimate(payload), inlined: this runs once per event.
                kind = type(payload)
                if kind is dict:
                    cost = _BASE_COST + _METRIC_COST * len(payload)
                elif kind is bytes:
                    cost = _BASE_COST + 3 * len(payload)
                    if event_type in MEDIA_TYPES:  # charged to the media budget instead
                        self._media[seq] = cost
                        self.media_bytes += cost
                        cost = 0
                else:
                    cost = _BASE_COST
                charged += cost - costs[i]  # the slot's previous event leaves
                costs[i] = cost
                observe(seq, ts, run, step, event_type, payload, rank)
        self.head = batch[-FIELDS]
        self.bytes = charged
        self._chunk_cache.clear()
        self._trim()
        if self._media:
            self._trim_media()
        return skipped

    def _trim_media(self) -> None:
        """Forget media events that left the ring, then let the oldest kept
        ones go (each a one-event ``gap``) until the rest fit ``media_max_bytes``.

        The newest media event always stays, however large.
        """
        media = self._media
        oldest = self.oldest
        while media:
            seq = next(iter(media))
            if seq >= oldest:
                break
            self.media_bytes -= media.pop(seq)
        while self.media_bytes > self.media_max_bytes and len(media) > 1:
            seq = next(iter(media))
            self.media_bytes -= media.pop(seq)
            self._drop_media(seq)
        self._chunk_cache.clear()

    def _drop_media(self, seq: int) -> None:
        """The slot of media event ``seq`` now holds a one-event ``gap``."""
        i = seq % self.capacity
        data = {"lost": 1, "from": seq, "to": seq, "reason": "media", "type": self.types[i]}
        self.media_dropped += 1
        self.types[i] = "gap"
        self.runs[i] = None
        if seq <= self._encoded or self._enc[i] == seq:  # encoded (ahead, for one reader, too)
            body = encode_event(seq, self.epoch, self._ts[i], "gap", None, self._step[i], data)
            self._json[i] = body
            self._sse[i] = frame = sse_frame(seq, "gap", body)
            self._ws[i] = ws_frame = ws_text_frame(body)
            self._payload[i] = None
            cost = _BASE_COST + len(body) + len(frame) + len(ws_frame)
        else:
            self._payload[i] = data
            cost = _BASE_COST
        self.bytes += cost - self._cost[i]
        self._cost[i] = cost

    def _trim(self) -> None:
        """Let the oldest events go until the kept ones fit ``max_bytes``.

        The newest event always stays, however large.
        """
        if self.bytes <= self.max_bytes:
            return
        cap, head = self.capacity, self.head
        seq = self.oldest
        while self.bytes > self.max_bytes and seq < head:
            i = seq % cap
            self.bytes -= self._cost[i]
            self._cost[i] = 0
            self._payload[i] = None
            self._json[i] = self._sse[i] = self._ws[i] = b""
            self._enc[i] = 0
            seq += 1
        self._floor = seq
        self._chunk_cache.clear()

    def encode_all(self) -> None:
        """Encode every committed event now (committing thread only)."""
        self.encode_upto(self.head)

    @property
    def encoded(self) -> int:
        """Events up to this seq are encoded."""
        return self._encoded

    def encode_upto(self, end: int) -> None:
        """Encode committed events up to seq ``end`` (JSON, SSE and WS frames).

        The events are then charged their real size, which may let old
        events go (call this before deciding what is still in the ring).
        """
        start = max(self._encoded + 1, self.oldest)
        if start > end:
            return
        self._encode(start, end)
        self._encoded = end
        self._trim()
        if self._media:
            self._trim_media()

    def encode_range(self, first: int, end: int) -> None:
        """Encode the committed events of seqs ``first..end`` (what one reader
        is about to send), not the events before them that nobody has read:
        a client following from the head of a ring of a million unread
        events encodes its own, not the million. May let old events go, as
        :meth:`encode_upto`."""
        if first <= self._encoded + 1:
            self.encode_upto(end)
            return
        start = max(first, self.oldest)
        if start > end:
            return
        self._encode(start, end, ahead=True)
        self._ahead = max(self._ahead, end)
        self._trim()
        if self._media:
            self._trim_media()

    def _encode(self, start: int, end: int, ahead: bool = False) -> None:
        """Encode seqs start..end (those not encoded yet) and charge them;
        ``ahead``: past ``_encoded`` (each slot marked)."""
        cap, epoch = self.capacity, self.epoch
        js, sse, ws, runs_, types_ = self._json, self._sse, self._ws, self.runs, self.types
        tss, steps, payloads, costs, ranks = self._ts, self._step, self._payload, self._cost, self.ranks
        charged = self.bytes
        enc = self._enc
        marked = ahead or start <= self._ahead  # else no slot of the span was encoded ahead
        for seq in range(start, end + 1):
            i = seq % cap
            if marked:
                if enc[i] == seq:
                    continue  # encoded already, for a reader ahead of the others
                enc[i] = seq
            event_type, run, step = types_[i], runs_[i], steps[i]
            try:
                body = encode_event(seq, epoch, tss[i], event_type, run, step, payloads[i], ranks[i])
            except (TypeError, ValueError, OverflowError, orjson.JSONEncodeError) as exc:
                # OverflowError: an int too large for a float, which log() refuses;
                # one such event must not stop every later one from being encoded.
                self.counters.rejected += 1
                logger.warning("event %d (%s) dropped: cannot encode it as JSON: %s", seq, event_type, exc)
                # Keep the sequence contiguous: the slot explains the hole.
                event_type = types_[i] = "gap"
                runs_[i] = None
                data = {"lost": 1, "from": seq, "to": seq, "reason": "rejected", "error": str(exc)[:200]}
                body = encode_event(seq, epoch, tss[i], "gap", None, step, data)
            js[i] = body
            sse[i] = frame = sse_frame(seq, event_type, body)
            ws[i] = ws_frame = ws_text_frame(body)
            payloads[i] = None
            cost = _BASE_COST + len(body) + len(frame) + len(ws_frame)
            if event_type in MEDIA_TYPES and seq in self._media:  # its own budget
                self.media_bytes += cost - self._media[seq]
                self._media[seq] = cost
                cost = 0
            charged += cost - costs[i]
            costs[i] = cost
        self.bytes = charged

    def clear(self) -> None:
        """Forget every event (a new epoch starts at seq 1)."""
        cap = self.capacity
        self.head = 0
        self.bytes = 0
        self._floor = 1
        self._encoded = 0
        for column in (self._json, self._sse, self._ws):
            column[:] = [b""] * cap
        self._cost[:] = [0] * cap
        self._payload[:] = [None] * cap
        self._media.clear()
        self.media_bytes = 0
        self._enc[:] = [0] * cap  # seqs start again from 1
        self._ahead = 0
        self._chunk_cache.clear()

    def store_encoded(self, events: list[Numbered], observe: Observe) -> int:
        """Store events numbered and encoded elsewhere (a Redis stream), newest
        last: those at or below the head are skipped; a jump past head + 1
        lets everything older go (the ring holds one unbroken stretch).
        Returns how many were stored."""
        cap = self.capacity
        stored = 0
        for seq, ts, event_type, run, step, rank, body, payload in events:
            if seq <= self.head:
                continue
            if seq > self.head + 1:
                # Nothing before it joins this stretch: what was kept leaves
                # (and stops being charged for), as when an epoch starts.
                self.reset_at(seq - 1)
            elif self._encoded < seq - 1:
                # Events stored here still wait to be encoded (``load``,
                # ``store``): encode them now, ``encoded`` is about to pass them.
                self.encode_upto(seq - 1)
            i = seq % cap
            self.runs[i] = run
            self.types[i] = event_type
            self._ts[i] = ts
            self._step[i] = step
            self.ranks[i] = rank
            self._payload[i] = None
            self._json[i] = body
            self._sse[i] = frame = sse_frame(seq, event_type, body)
            self._ws[i] = ws_frame = ws_text_frame(body)
            self._enc[i] = seq
            cost = _BASE_COST + len(body) + len(frame) + len(ws_frame)
            if event_type in MEDIA_TYPES:  # charged to the media budget instead
                self._media[seq] = cost
                self.media_bytes += cost
                cost = 0
            self.bytes += cost - self._cost[i]
            self._cost[i] = cost
            self.head = self._encoded = seq
            observe(seq, ts, run, step, event_type, payload, rank)
            stored += 1
        if stored:
            self._chunk_cache.clear()
            self._trim()
            if self._media:
                self._trim_media()
        return stored

    def reset_at(self, seq: int) -> None:
        """Empty the ring, positioned after ``seq``: the next event stored is
        ``seq + 1``, and nothing up to ``seq`` counts as kept."""
        self.clear()
        self.head = self._encoded = seq
        self._floor = seq + 1

    def load(self, events: list[dict[str, Any]]) -> None:
        """Put another hub's events (decoded JSON, oldest first, consecutive
        seqs) in an empty ring, under their own seqs."""
        batch: list[Any] = []
        for event in events[-self.capacity :]:
            if event.get("type") == "metric":
                payload: Any = {
                    k: _FLOATS.get(v, v) if type(v) is str else v for k, v in event["metrics"].items()
                }
            else:
                payload = orjson.dumps(event.get("data"))
            batch += (event["seq"], event["ts"], event["type"], event.get("run"), event.get("step"), payload)
            batch.append(event.get("rank"))
        if batch:
            self.store(batch, len(batch) // FIELDS, _ignore, {})
            # Not below where the byte bound left it: those events are gone.
            self._floor = max(self._floor, batch[0])
            self._encoded = batch[0] - 1

    def json_range(self, first: int, last: int) -> list[str]:
        """The JSON of the events of seqs first..last (encoded ones only)."""
        cap = self.capacity
        return [self._json[s % cap].decode() for s in range(first, last + 1) if self._json[s % cap]]

    # -- reading (the committing thread) -------------------------------------------------

    def cut(self, fmt: int, pos: int, end: int, max_bytes: int) -> int:
        """The last seq in pos+1..end such that the frames up to it stay within
        ``max_bytes`` (always at least pos+1)."""
        if end - pos <= 16:
            return end
        ring, cap = self._formats[fmt], self.capacity
        a, b = (pos + 1) % cap, end % cap
        frames = ring[a : b + 1] if a <= b else ring[a:] + ring[: b + 1]
        fit = bisect_right(list(accumulate(map(len, frames))), max_bytes)
        return pos + max(1, fit)

    def slice(self, fmt: int, pos: int, end: int) -> bytes:
        """Frames of seqs pos+1..end joined; shared by all cursors at ``pos``."""
        key = (fmt, pos, end)
        chunk = self._chunk_cache.get(key)
        if chunk is None:
            ring = self._formats[fmt]
            cap = self.capacity
            a, b = (pos + 1) % cap, end % cap
            if a <= b:
                chunk = b"".join(ring[a : b + 1])
            else:
                chunk = b"".join(ring[a:]) + b"".join(ring[: b + 1])
            if len(self._chunk_cache) > 64:
                self._chunk_cache.clear()
            self._chunk_cache[key] = chunk
        return chunk

    def select(
        self,
        fmt: int,
        pos: int,
        end: int,
        wants: Callable[[str | None, str], bool],
        max_bytes: int | None = None,
    ) -> tuple[list[bytes], int]:
        """The frames of seqs pos+1..end that ``wants(run, type)`` accepts.

        Returns ``(frames, last)``: ``last`` is the last seq looked at, less
        than ``end`` when ``max_bytes`` cut the selection short.
        """
        ring, runs_, types_, cap = self._formats[fmt], self.runs, self.types, self.capacity
        if max_bytes is None:
            frames = [
                ring[s % cap] for s in range(pos + 1, end + 1) if wants(runs_[s % cap], types_[s % cap])
            ]
            return frames, end
        out: list[bytes] = []
        size = 0
        for seq in range(pos + 1, end + 1):
            i = seq % cap
            if wants(runs_[i], types_[i]):
                frame = ring[i]
                out.append(frame)
                size += len(frame)
                if size >= max_bytes:
                    return out, seq
        return out, end

    def json_of(self, seq: int) -> bytes:
        """The JSON of a committed event still in the ring, encoded for this
        answer only when the ring has not encoded it yet: a few answers'
        worth of events costs that much, not every event before them."""
        i = seq % self.capacity
        if seq <= self._encoded or self._enc[i] == seq:
            return self._json[i]
        try:
            return encode_event(
                seq,
                self.epoch,
                self._ts[i],
                self.types[i],
                self.runs[i],
                self._step[i],
                self._payload[i],
                self.ranks[i],
            )
        except (TypeError, ValueError, OverflowError, orjson.JSONEncodeError):
            self.encode_upto(seq)  # the ring turns it into a gap, and counts it
            return self._json[i]

    def select_json(
        self, pos: int, end: int, wants: Callable[[str | None, str], bool], max_bytes: int, limit: int
    ) -> tuple[list[tuple[int, bytes]], int]:
        """(seq, JSON) of the events of seqs pos+1..end that ``wants(run,
        type)`` accepts, at most ``limit`` of them and about ``max_bytes``,
        encoding only those (:meth:`json_of`). Returns them and the last seq
        looked at (less than ``end`` when cut short)."""
        runs_, types_, cap = self.runs, self.types, self.capacity
        out: list[tuple[int, bytes]] = []
        size = 0
        for seq in range(pos + 1, end + 1):
            i = seq % cap
            if wants(runs_[i], types_[i]):
                body = self.json_of(seq)
                out.append((seq, body))
                size += len(body)
                if len(out) >= limit or size >= max_bytes:
                    return out, seq
        return out, end

    def newest_json(
        self, before: int, wants: Callable[[str | None, str], bool], limit: int, after: int = 0
    ) -> list[tuple[int, bytes]]:
        """(seq, JSON) of the newest ``limit`` events of seqs after+1..before-1
        that ``wants(run, type)`` accepts, oldest first (:meth:`json_of`)."""
        runs_, types_, cap = self.runs, self.types, self.capacity
        seqs: list[int] = []
        for seq in range(min(before, self.head + 1) - 1, max(self.oldest, after + 1) - 1, -1):
            i = seq % cap
            if wants(runs_[i], types_[i]):
                seqs.append(seq)
                if len(seqs) >= limit:
                    break
        return [(seq, self.json_of(seq)) for seq in reversed(seqs)]

    def matching(self, pos: int, end: int, wants: Callable[[str | None, str], bool]) -> int:
        """How many events of seqs pos+1..end ``wants(run, type)`` accepts."""
        runs_, types_, cap = self.runs, self.types, self.capacity
        return sum(1 for s in range(pos + 1, end + 1) if wants(runs_[s % cap], types_[s % cap]))


def frame(fmt: int, seq: int | None, event_type: str, body: bytes) -> bytes:
    """An event's JSON as a frame of ``fmt``; with ``seq`` None, an SSE frame
    without ``id:`` (an event that is not in history)."""
    if fmt == SSE:
        if seq is None:
            return b"event: %s\ndata: %s\n\n" % (event_type.encode(), body)
        return sse_frame(seq, event_type, body)
    if fmt == WS:
        return ws_text_frame(body)
    return body
