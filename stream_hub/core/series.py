"""Per-run summaries and whole-run curves in bounded memory (I/O-free).

The event ring keeps only the last ``history_size`` events; a dashboard opened
at step 1 000 000 still wants the whole curve. :class:`Series` keeps every
metric's curve as at most ``max_points`` buckets: while a series is short each
point is its own bucket; when it fills, neighbouring buckets merge pairwise and
new buckets cover twice as many points. A bucket remembers its first step, its
last value and the min and max of its finite values, so spikes survive.

Points arrive on the loop thread once per metric per event, so appending is
two list appends; the bucketing runs in batches (``fold``) where min and max
over a bucket are single builtin calls.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Series"]

_NAN = math.nan


def _finite_range(chunk: list[float]) -> tuple[float, float]:
    """(min, max) of the finite values, NaN when there are none."""
    total = sum(chunk)
    if total - total == 0:  # every value finite (the common case): two C calls
        return min(chunk), max(chunk)
    finite = [v for v in chunk if v - v == 0]
    return (min(finite), max(finite)) if finite else (_NAN, _NAN)


def _merge(a: float, b: float, pick: Any) -> float:
    if a != a:
        return b
    if b != b:
        return a
    return pick(a, b)  # type: ignore[no-any-return]


class Series:
    """One metric of one run, downsampled to at most ``max_points`` buckets.

    ``raw_steps``/``raw_values`` collect new points; :meth:`fold` moves them
    into buckets (it runs by itself when they reach ``max_points``, and before
    every snapshot).
    """

    __slots__ = (
        "count",
        "max_points",
        "maxs",
        "mins",
        "points",
        "raw_steps",
        "raw_values",
        "steps",
        "values",
        "width",
    )

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self.steps: list[int] = []
        self.values: list[float] = []
        self.mins: list[float] = []
        self.maxs: list[float] = []
        self.raw_steps: list[int] = []
        self.raw_values: list[float] = []
        self.points = 0  # points folded so far
        self.count = 0  # the same, counted from the last realignment of buckets
        self.width = 1  # points per bucket for new buckets

    def append(self, step: int, value: float) -> None:
        self.raw_steps.append(step)
        self.raw_values.append(value)
        if len(self.raw_values) >= self.max_points:
            self.fold()

    def fold(self) -> None:
        """Move the raw points into buckets, halving the resolution as needed."""
        steps, values = self.raw_steps, self.raw_values
        if not values:
            return
        self.raw_steps, self.raw_values = [], []
        w = self.width
        start = 0
        # First top up the newest bucket if it is not full yet.
        filled = (self.count - 1) % w + 1 if self.count and self.steps else w
        if filled < w:
            take = min(w - filled, len(values))
            low, high = _finite_range(values[:take])
            self.values[-1] = values[take - 1]
            self.mins[-1] = _merge(self.mins[-1], low, min)
            self.maxs[-1] = _merge(self.maxs[-1], high, max)
            start = take
        if w == 1:
            ranges = [(v, v) if v - v == 0 else (_NAN, _NAN) for v in values[start:]]
            self.steps += steps[start:]
            self.values += values[start:]
            self.mins += [r[0] for r in ranges]
            self.maxs += [r[1] for r in ranges]
        else:
            for i in range(start, len(values), w):
                chunk = values[i : i + w]
                low, high = _finite_range(chunk)
                self.steps.append(steps[i])
                self.values.append(chunk[-1])
                self.mins.append(low)
                self.maxs.append(high)
        self.count += len(values)
        self.points += len(values)
        while len(self.steps) > self.max_points:
            self._halve()

    def _halve(self) -> None:
        """Merge neighbouring buckets pairwise; new buckets get twice as wide."""
        steps, values, mins, maxs = self.steps, self.values, self.mins, self.maxs
        n = len(steps) - (len(steps) % 2)
        self.steps = steps[0:n:2] + steps[n:]
        self.values = values[1:n:2] + values[n:]
        self.mins = [_merge(a, b, min) for a, b in zip(mins[0:n:2], mins[1:n:2])] + mins[n:]
        self.maxs = [_merge(a, b, max) for a, b in zip(maxs[0:n:2], maxs[1:n:2])] + maxs[n:]
        self.width *= 2
        # Realign so the newest bucket counts as full: new points start a new one.
        self.count = len(self.steps) * self.width

    def snapshot(self, max_points: int | None = None) -> dict[str, list[Any]]:
        """The curve, reduced further to ``max_points`` buckets if asked."""
        self.fold()
        steps, values, mins, maxs = self.steps, self.values, self.mins, self.maxs
        if max_points is not None and len(steps) > max_points:
            k = math.ceil(len(steps) / max_points)
            steps = steps[::k]
            values = [values[min(i + k, len(values)) - 1] for i in range(0, len(values), k)]
            mins = [_reduce(mins[i : i + k], min) for i in range(0, len(mins), k)]
            maxs = [_reduce(maxs[i : i + k], max) for i in range(0, len(maxs), k)]
        return {"steps": list(steps), "values": list(values), "mins": list(mins), "maxs": list(maxs)}

    @property
    def seen(self) -> int:
        """Points received so far."""
        return self.points + len(self.raw_values)

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild this curve elsewhere (JSON-able: NaN as None)."""
        self.fold()
        return {
            "max_points": self.max_points,
            "steps": self.steps,
            "values": _json_floats(self.values),
            "mins": _json_floats(self.mins),
            "maxs": _json_floats(self.maxs),
            "points": self.points,
            "count": self.count,
            "width": self.width,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Series:
        series = cls(int(state["max_points"]))
        series.steps = list(state["steps"])
        series.values = _floats(state["values"])
        series.mins = _floats(state["mins"])
        series.maxs = _floats(state["maxs"])
        series.points = int(state["points"])
        series.count = int(state["count"])
        series.width = int(state["width"])
        return series


def _json_floats(values: list[float]) -> list[float | None]:
    return [None if v != v or v in (math.inf, -math.inf) else v for v in values]


def _floats(values: list[Any]) -> list[float]:
    return [_NAN if v is None else v for v in values]


def _reduce(items: list[float], pick: Any) -> float:
    out = items[0]
    for item in items[1:]:
        out = _merge(out, item, pick)
    return out
