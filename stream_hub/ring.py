"""The ring: the last ``capacity`` committed events, their encodings, and
the joined chunks readers send (I/O-free).

Parallel lists indexed by ``seq % capacity`` hold each event's fields; the
JSON, SSE and WebSocket encodings are filled in lazily, once, by the first
reader that needs them (:meth:`Ring.encode_upto`), so events nobody reads cost
no encoding at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .events import encode_event, sse_frame, ws_text_frame

if TYPE_CHECKING:
    from .hub import HubCounters

__all__ = ["FIELDS", "JSON", "SSE", "WS", "Ring"]

logger = logging.getLogger(__name__)

SSE = 0  # frame formats a reader can ask for
WS = 1
JSON = 2
FIELDS = 6  # values per event in a flat batch: seq, ts, type, run, step, payload

Observe = Callable[[int, float, "str | None", "int | None", "dict[str, Any] | None"], None]


class Ring:
    """Storage of the newest ``capacity`` events of one hub.

    ``counters`` is the hub's :class:`~stream_hub.hub.HubCounters`; encoding
    failures are counted there as ``rejected``.
    """

    def __init__(self, capacity: int, epoch: str, counters: HubCounters) -> None:
        self.capacity = capacity
        self.epoch = epoch
        self.counters = counters
        self.head = 0  # seq of the newest committed event
        self._json: list[bytes] = [b""] * capacity
        self._sse: list[bytes] = [b""] * capacity
        self._ws: list[bytes] = [b""] * capacity
        self.runs: list[str | None] = [None] * capacity
        self.types: list[str] = [""] * capacity
        self._ts: list[float] = [0.0] * capacity
        self._step: list[int | None] = [None] * capacity
        self._payload: list[Any] = [None] * capacity
        self._encoded = 0  # events up to this seq are encoded
        self._formats = (self._sse, self._ws, self._json)
        self._chunk_cache: dict[tuple[int, int, int], bytes] = {}

    @property
    def oldest(self) -> int:
        """The seq of the oldest event still in the ring (head + 1 when empty)."""
        return max(1, self.head - self.capacity + 1)

    @property
    def size(self) -> int:
        return min(self.head, self.capacity)

    def ts_of(self, seq: int) -> float:
        """Publish time of a committed event still in the ring."""
        return self._ts[seq % self.capacity]

    def store(self, batch: list[Any], count: int, observe: Observe, known: dict[str, Any]) -> None:
        """Store a flat batch of ``count`` events, newest last; feed ``observe``.

        ``known`` maps the runs the summaries already know.
        """
        cap = self.capacity
        runs_, types_, tss = self.runs, self.types, self._ts
        steps, payloads = self._step, self._payload
        if count > cap:
            # Overload: more events than the ring holds arrived since the last
            # commit. Only the newest ``cap`` can still be in the ring
            # afterwards, so only they are stored; the summaries get a sample
            # of ``cap`` events spread over the whole batch, plus every run's
            # first (its curve starts there) and last (its latest values)
            # event. No Python-level work per event here.
            overflow = count - cap
            # Field columns of the newest ``cap`` events, copied with slice
            # assignments (two per column: the ring may wrap).
            columns = [batch[overflow * FIELDS + f :: FIELDS] for f in range(FIELDS)]
            start = columns[0][0] % cap
            head_part = cap - start
            for ring, column in (
                (tss, columns[1]),
                (types_, columns[2]),
                (runs_, columns[3]),
                (steps, columns[4]),
                (payloads, columns[5]),
            ):
                ring[start:] = column[:head_part]
                ring[:start] = column[head_part:]
            all_runs = batch[3::FIELDS]
            picks = set(range(0, count, count // cap + 1))
            picks.update({run: k for k, run in enumerate(all_runs)}.values())
            for run in set(all_runs) - known.keys():
                picks.add(all_runs.index(run))
            for k in sorted(picks):
                seq, ts, event_type, run, step, payload = batch[k * FIELDS : (k + 1) * FIELDS]
                observe(seq, ts, run, step, payload if event_type == "metric" else None)
        else:
            it = iter(batch)
            for seq, ts, event_type, run, step, payload in zip(it, it, it, it, it, it):
                i = seq % cap
                runs_[i] = run
                types_[i] = event_type
                tss[i] = ts
                steps[i] = step
                payloads[i] = payload
                observe(seq, ts, run, step, payload if event_type == "metric" else None)
        self.head = batch[-FIELDS]
        self._chunk_cache.clear()

    def encode_all(self) -> None:
        """Encode every committed event now (committing thread only)."""
        self.encode_upto(self.head)

    def encode_upto(self, end: int) -> None:
        """Encode committed events up to seq ``end`` (JSON, SSE and WS frames)."""
        start = max(self._encoded + 1, self.oldest)
        if start > end:
            return
        cap, epoch = self.capacity, self.epoch
        js, sse, ws, runs_, types_ = self._json, self._sse, self._ws, self.runs, self.types
        tss, steps, payloads = self._ts, self._step, self._payload
        for seq in range(start, end + 1):
            i = seq % cap
            event_type, run, step = types_[i], runs_[i], steps[i]
            try:
                body = encode_event(seq, epoch, tss[i], event_type, run, step, payloads[i])
            except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
                self.counters.rejected += 1
                logger.warning("event %d (%s) dropped: cannot encode it as JSON: %s", seq, event_type, exc)
                # Keep the sequence contiguous: the slot explains the hole.
                event_type = types_[i] = "gap"
                runs_[i] = None
                body = encode_event(
                    seq,
                    epoch,
                    tss[i],
                    "gap",
                    None,
                    step,
                    {"lost": 1, "from": seq, "to": seq, "reason": "rejected", "error": str(exc)[:200]},
                )
            js[i] = body
            sse[i] = sse_frame(seq, event_type, body)
            ws[i] = ws_text_frame(body)
            payloads[i] = None
        self._encoded = end

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

    def select(self, fmt: int, pos: int, end: int, wants: Callable[[str | None, str], bool]) -> list[bytes]:
        """The frames of seqs pos+1..end that ``wants(run, type)`` accepts."""
        ring, runs_, types_, cap = self._formats[fmt], self.runs, self.types, self.capacity
        return [ring[s % cap] for s in range(pos + 1, end + 1) if wants(runs_[s % cap], types_[s % cap])]
