"""A step range of one curve at the best resolution the hub holds
(``GET /api/runs/{run}/series?metric=&from_step=&to_step=``).

A whole-run curve (:mod:`stream_hub.core.series`) keeps at most
``series_points`` buckets, so a zoom into a long run needs finer data: the
ring's events of that run and metric, downsampled to ``max_points`` buckets
of equal step width (min and max kept). When the ring cannot serve the range
— its events of the run start after ``from_step`` while the curve started
earlier — or when the series' buckets are already as fine as asked, the
answer is the series' buckets within the range. ``source`` says which.

Reading a value out of an encoded event is the costly part, so
:class:`RingCurves` keeps, per (run, rank), where its metric events sit in
the ring (seq, step, time) and each metric's values once read: a zoom reads
only the events in its range, and only once.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from itertools import compress, repeat
from operator import and_, eq, le
from typing import Any

import orjson

from ..core.hub import Hub
from ..core.ring import Ring
from ..core.run_index import RunSummary, Series
from .run_views import NotFound

__all__ = ["RingCurves", "range_body"]

_WIRE_FLOATS = {b'"NaN"': math.nan, b'"Infinity"': math.inf, b'"-Infinity"': -math.inf}
_COMMA, _OPEN = ord(","), ord("{")
_READ, _ABSENT = 1, 2  # what a value's state byte says (0: not read yet)
# Curves of at least this many points in a ring at least this long are read
# ahead of a zoom (RingCurves.prepare), this many events or values a slice.
WARM_POINTS = 50_000
WARM_INDEX_SLICE = 20_000
WARM_VALUE_SLICE = 5_000


class RingCurves:
    """The columns of the ``capacity`` most recently asked (run, rank) pairs,
    each brought up to date with the ring (events that left it dropped, new
    ones added) before it answers.

    Runs on the loop thread, the ring's committing thread. It reads the
    ring's step, time, payload and JSON columns directly: the ring has no
    public reader for them.
    """

    def __init__(self, hub: Hub, capacity: int = 32) -> None:
        self.hub = hub
        self.capacity = capacity
        self._epoch = hub.epoch
        self._tracks: OrderedDict[tuple[str, int | None], RingTrack] = OrderedDict()
        self._warming: set[tuple[str, int | None]] = set()

    def track(self, run: str, rank: int | None) -> RingTrack:
        """The (run, rank)'s columns, up to date with the ring."""
        track = self._get(run, rank)
        track.update(self.hub.ring)
        return track

    def _get(self, run: str, rank: int | None) -> RingTrack:
        if self._epoch != self.hub.epoch:  # another history (a hand-over, a new hub)
            self._tracks.clear()
            self._epoch = self.hub.epoch
        key = (run, rank)
        track = self._tracks.pop(key, None) or RingTrack(run, rank)
        self._tracks[key] = track
        while len(self._tracks) > self.capacity:
            self._tracks.popitem(last=False)
        return track

    def prepare(self, summary: RunSummary) -> None:
        """Read a long run's curves out of the ring ahead of a zoom, in the
        background (slices on the loop, other work in between), when the ring
        holds far more of its points than its bucketed curves show: a zoom
        into it then reads nothing but the range's values. Runs on the loop."""
        ring = self.hub.ring
        for rank, track in summary.tracks.items():
            names = [
                name
                for name, series in track.series.items()
                if series.seen >= WARM_POINTS and series.seen > 8 * len(series.steps) + len(series.raw_steps)
            ]
            key = (summary.run, rank)
            if names and ring.size >= WARM_POINTS and key not in self._warming:
                self._warming.add(key)
                asyncio.get_running_loop().call_soon(self._warm_slice, summary.run, rank, names)

    def _warm_slice(self, run: str, rank: int | None, names: list[str]) -> None:
        ring = self.hub.ring
        track = self._get(run, rank)
        if track.update(ring, WARM_INDEX_SLICE):
            budget = WARM_VALUE_SLICE
            for name in names:
                state = track.state.get(name)
                start = state.find(0) if state is not None else 0
                if start < 0:
                    continue
                end = min(len(track.seqs), start + budget)
                track.read(ring, name, start, end)
                budget -= end - start
                if budget <= 0:
                    break
            else:
                self._warming.discard((run, rank))
                return
        asyncio.get_running_loop().call_soon(self._warm_slice, run, rank, names)


class RingTrack:
    """One (run, rank)'s metric events in the ring, as columns."""

    def __init__(self, run: str, rank: int | None) -> None:
        self.run = run
        self.rank = rank
        self.upto = 0  # the ring's events up to this seq have been looked at
        self.seqs = array("q")
        self.steps = array("q")
        self.ts = array("d")
        self.ordered = True  # steps never go down, so ranges are binary searches
        # Per metric: its value in each event, and a state byte (0: not read
        # yet, _READ, _ABSENT: the event has no such metric).
        self.values: dict[str, array[float]] = {}
        self.state: dict[str, bytearray] = {}

    def update(self, ring: Ring, limit: int | None = None) -> bool:
        """Drop what left the ring, add its new events of this run and rank
        (looking at ``limit`` of the ring's events at most); whether it is
        up to date."""
        oldest, head = ring.oldest, ring.head
        if head < self.upto:  # the ring started over
            self.__init__(self.run, self.rank)  # type: ignore[misc]
        if self.seqs and self.seqs[0] < oldest:
            self._drop(bisect_left(self.seqs, oldest))
        start = max(self.upto + 1, oldest)
        if limit is not None:
            head = min(head, start + limit - 1)
        self.upto = max(self.upto, head)
        if start > head:
            return self.upto >= ring.head
        cap = ring.capacity
        a, b = start % cap, head % cap

        def span(column: list[Any]) -> list[Any]:
            return column[a : b + 1] if a <= b else column[a:] + column[: b + 1]

        # One pass of C-level maps over the ring's columns: no Python code
        # runs per event here (a long ring holds millions).
        steps = span(ring._step)
        mine = map(eq, span(ring.runs), repeat(self.run))
        metric = map(eq, span(ring.types), repeat("metric"))
        rank = map(eq, span(ring.ranks), repeat(self.rank))
        stepped = map(int.__instancecheck__, steps)  # no step: no place on a step axis
        keep = list(map(and_, map(and_, mine, metric), map(and_, rank, stepped)))
        added = len(self.steps)
        self.seqs.extend(compress(range(start, head + 1), keep))
        self.steps.extend(compress(steps, keep))
        self.ts.extend(compress(span(ring._ts), keep))
        grown = len(self.steps) - added
        if grown:
            new = self.steps[max(0, added - 1) :]
            self.ordered = self.ordered and all(map(le, new[:-1], new[1:]))
            for name, values in self.values.items():
                values.extend(array("d", [math.nan]) * grown)
                self.state[name].extend(bytes(grown))
        return self.upto >= ring.head

    def _drop(self, k: int) -> None:
        del self.seqs[:k], self.steps[:k], self.ts[:k]
        for values in self.values.values():
            del values[:k]
        for state in self.state.values():
            del state[:k]

    def read(self, ring: Ring, metric: str, i: int, j: int) -> tuple[array[float], bytearray]:
        """The metric's values, read for positions i..j-1 where not read yet
        (from the event's payload while it is not encoded, else its JSON)."""
        values = self.values.get(metric)
        if values is None:
            values = self.values[metric] = array("d", [math.nan]) * len(self.seqs)
            self.state[metric] = bytearray(len(self.seqs))
        state = self.state[metric]
        key = orjson.dumps(metric) + b":"
        cap, seqs, payloads, bodies = ring.capacity, self.seqs, ring._payload, ring._json
        p = state.find(0, i, j)
        while p >= 0:
            slot = seqs[p] % cap
            payload = payloads[slot]
            if type(payload) is dict:
                value: Any = payload.get(metric)
                found = value is not None
                if found:
                    values[p] = float(value)
            else:
                found = _read_value(bodies[slot], key, values, p)
            state[p] = _READ if found else _ABSENT
            p = state.find(0, p + 1, j)
        return values, state


def _read_value(body: bytes, key: bytes, values: array[float], p: int) -> bool:
    """Read ``"<metric>":<value>`` of an encoded metric event into values[p].

    The metrics object is the event's last member, so a value ends at the
    next comma or brace; a key follows ``{`` or ``,`` (not an escaped quote
    inside a longer key).
    """
    start = body.rfind(b'"metrics":{')
    if start < 0:
        return False
    k = body.find(key, start)
    while k >= 0 and body[k - 1] not in (_COMMA, _OPEN):
        k = body.find(key, k + 1)
    if k < 0:
        return False
    s = k + len(key)
    comma, close = body.find(b",", s), body.find(b"}", s)
    token = body[s : close if comma < 0 or close < comma else comma]
    try:
        values[p] = _WIRE_FLOATS[token] if token[:1] == b'"' else float(token)
    except (KeyError, ValueError):
        return False
    return True


def range_body(
    curves: RingCurves,
    summary: RunSummary,
    metric: str,
    rank: int | None,
    first: int,
    last: int,
    max_points: int,
) -> dict[str, Any]:
    """One metric's curve(s) between steps ``first`` and ``last``, at most
    ``max_points`` buckets each: steps (each bucket's first), values (its
    last), mins, maxs, and ``ts`` (the time of its last point) when read
    from the ring; per rank like :func:`~stream_hub.transports.run_views.series_body`.
    Buckets of the whole-run curve (``source``: ``series``) come with
    ``next_step``, the first step of the bucket after the last one (None:
    it is the curve's last), so a client knows how many steps each stands for.

    Raises:
        NotFound: no such metric or rank in the run.
    """
    body: dict[str, Any] = {"run": summary.run, "metric": metric, "from_step": first, "to_step": last}
    ranks = summary.ranks
    if rank is not None or not ranks:
        track = summary.tracks.get(rank)
        if track is None and rank is not None:
            raise NotFound(f"run {summary.run!r} has no rank {rank}", ranks=ranks)
        if track is None or metric not in track.series:
            raise NotFound(f"run {summary.run!r} has no metric {metric!r}", metrics=summary.metric_names())
        if rank is not None:
            body["rank"] = rank
        series = track.series[metric]
        body.update(_curve_range(curves, summary.run, rank, series, metric, first, last, max_points))
        return body
    per_rank = {
        str(r): _curve_range(curves, summary.run, r, curve, metric, first, last, max_points)
        for r in ranks
        if (curve := summary.tracks[r].series.get(metric)) is not None
    }
    if not per_rank:
        raise NotFound(f"run {summary.run!r} has no metric {metric!r}", metrics=summary.metric_names())
    body["ranks"] = per_rank
    return body


def _curve_range(
    curves: RingCurves,
    run: str,
    rank: int | None,
    series: Series,
    metric: str,
    first: int,
    last: int,
    max_points: int,
) -> dict[str, Any]:
    whole = series.snapshot()
    starts = whole["steps"]
    lo = max(0, bisect_right(starts, first) - 1)  # the bucket that holds ``first``
    hi = bisect_right(starts, last)
    # A bucket carries its min and max: series buckets at half the points
    # asked for are as fine as the client draws (two points per pixel).
    if 2 * (hi - lo) < max_points and starts:
        track = curves.track(run, rank)
        if track.steps and (track.steps[0] <= first or track.steps[0] <= starts[0]):
            buckets = _ring_buckets(curves.hub.ring, track, metric, first, last, max_points)
            return {**buckets, "points_seen": series.seen}
    clipped = {k: v[lo:hi] for k, v in whole.items()}
    if hi - lo > max_points:
        clipped = _fewer_buckets(clipped, max_points)
    # Where the last bucket ends: before the next one starts (None: the curve's last bucket).
    following = starts[hi] if hi < len(starts) else None
    return {**clipped, "points_seen": series.seen, "source": "series", "next_step": following}


def _ring_buckets(
    ring: Ring, track: RingTrack, metric: str, first: int, last: int, max_points: int
) -> dict[str, Any]:
    """The ring's points of one metric in [first, last], in at most
    ``max_points`` buckets of equal step width: each bucket's first step,
    last value and time, and its finite min and max."""
    steps = track.steps
    if track.ordered:
        i, j = bisect_left(steps, first), bisect_right(steps, last)
        values, state = track.read(ring, metric, i, j)
        positions: Sequence[int] = range(i, j)
    else:  # a run that went back to earlier steps: its points sorted by step
        inside = [p for p in range(len(steps)) if first <= steps[p] <= last]
        for p in inside:
            track.read(ring, metric, p, p + 1)
        values, state = track.values[metric], track.state[metric]
        positions = sorted(inside, key=steps.__getitem__)
    points = [p for p in positions if state[p] == _READ]
    out: dict[str, Any] = {"steps": [], "values": [], "mins": [], "maxs": [], "ts": [], "source": "ring"}
    if len(points) <= max_points:
        chosen = [values[p] for p in points]
        out.update(
            steps=[steps[p] for p in points],
            values=chosen,
            mins=[v if v - v == 0 else math.nan for v in chosen],
            maxs=[v if v - v == 0 else math.nan for v in chosen],
            ts=[track.ts[p] for p in points],
        )
        return out
    width = math.ceil((last - first + 1) / max_points)
    point_steps = [steps[p] for p in points]
    k = 0
    n = len(points)
    while k < n:
        bound = first + ((point_steps[k] - first) // width + 1) * width
        end = bisect_left(point_steps, bound, k + 1, n)
        chunk = [values[p] for p in points[k:end]]
        out["steps"].append(point_steps[k])
        out["values"].append(chunk[-1])
        out["mins"].append(_finite(chunk, min))
        out["maxs"].append(_finite(chunk, max))
        out["ts"].append(track.ts[points[end - 1]])
        k = end
    return out


def _fewer_buckets(curve: dict[str, list[Any]], max_points: int) -> dict[str, list[Any]]:
    """Series buckets merged k at a time (as Series.snapshot does)."""
    k = math.ceil(len(curve["steps"]) / max_points)
    starts = range(0, len(curve["steps"]), k)
    values = curve["values"]
    return {
        "steps": curve["steps"][::k],
        "values": [values[min(i + k, len(values)) - 1] for i in starts],
        "mins": [_finite(curve["mins"][i : i + k], min) for i in starts],
        "maxs": [_finite(curve["maxs"][i : i + k], max) for i in starts],
    }


def _finite(values: Sequence[float], pick: Callable[[Iterable[float]], float]) -> float:
    """min or max of the finite values (NaN when none)."""
    total = sum(values)
    if total - total == 0:  # all finite, the common case: one C call more
        return pick(values)
    finite = [v for v in values if v - v == 0]
    return pick(finite) if finite else math.nan
