"""Per-run summaries and whole-run curves in bounded memory (I/O-free).

The event ring keeps only the last ``history_size`` events; a dashboard opened
at step 1 000 000 still wants the whole curve. :class:`Series` keeps every
metric's curve as at most ``max_points`` buckets: while a series is short each
point is its own bucket; when it fills, neighbouring buckets merge pairwise and
each new bucket covers twice as many points. A bucket remembers its first step,
its last value and the min and max of its values, so spikes survive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunIndex", "RunSummary", "Series"]


class Series:
    """One metric of one run, downsampled to at most ``max_points`` buckets."""

    __slots__ = ("_fill", "_width", "count", "max_points", "maxs", "mins", "steps",
                 "values")

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self.steps: list[int] = []
        self.values: list[float] = []
        self.mins: list[float] = []
        self.maxs: list[float] = []
        self.count = 0  # points seen
        self._width = 1  # points per bucket for new buckets
        self._fill = 0  # points in the newest bucket

    def append(self, step: int, value: float) -> None:
        self.count += 1
        finite = value == value and value not in (math.inf, -math.inf)
        if self._fill and self._fill < self._width:
            self._fill += 1
            self.values[-1] = value
            if finite:
                low, high = self.mins[-1], self.maxs[-1]
                if low != low or value < low:
                    self.mins[-1] = value
                if high != high or value > high:
                    self.maxs[-1] = value
            return
        if len(self.steps) >= self.max_points:
            self._halve()
        self.steps.append(step)
        self.values.append(value)
        self.mins.append(value if finite else math.nan)
        self.maxs.append(value if finite else math.nan)
        self._fill = 1

    def _halve(self) -> None:
        """Merge neighbouring buckets pairwise; new buckets get twice as wide."""
        steps, values, mins, maxs = self.steps, self.values, self.mins, self.maxs
        n = len(steps) - (len(steps) % 2)
        self.steps = steps[0:n:2] + steps[n:]
        self.values = values[1:n:2] + values[n:]
        self.mins = [_nanmin(a, b) for a, b in zip(mins[0:n:2], mins[1:n:2])] + mins[n:]
        self.maxs = [_nanmax(a, b) for a, b in zip(maxs[0:n:2], maxs[1:n:2])] + maxs[n:]
        if n == len(steps):
            # The newest bucket was merged with its (full) predecessor.
            self._fill += self._width
        self._width *= 2

    def snapshot(self, max_points: int | None = None) -> dict[str, list[Any]]:
        """The curve, reduced further to ``max_points`` buckets if asked."""
        steps, values, mins, maxs = self.steps, self.values, self.mins, self.maxs
        if max_points is not None and len(steps) > max_points:
            k = math.ceil(len(steps) / max_points)
            steps = steps[::k]
            values = [values[min(i + k, len(values)) - 1] for i in range(0, len(values), k)]
            mins = [_reduce(_nanmin, mins[i:i + k]) for i in range(0, len(mins), k)]
            maxs = [_reduce(_nanmax, maxs[i:i + k]) for i in range(0, len(maxs), k)]
        return {"steps": list(steps), "values": list(values), "mins": list(mins), "maxs": list(maxs)}


def _nanmin(a: float, b: float) -> float:
    if a != a:
        return b
    if b != b:
        return a
    return a if a <= b else b


def _nanmax(a: float, b: float) -> float:
    if a != a:
        return b
    if b != b:
        return a
    return a if a >= b else b


def _reduce(fn: Any, items: list[float]) -> float:
    out = items[0]
    for item in items[1:]:
        out = fn(out, item)
    return out


@dataclass
class RunSummary:
    """What is known about one run: counts, last step, latest values, curves."""

    run: str
    events: int = 0
    metric_events: int = 0
    last_step: int | None = None
    last_ts: float | None = None
    last_seq: int = 0
    latest: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "last_step": self.last_step,
            "metrics": sorted(self.latest),
            "events": self.events,
            "metric_events": self.metric_events,
            "last_ts": self.last_ts,
            "last_seq": self.last_seq,
        }


class RunIndex:
    """Summaries of every run seen, fed by the hub as events are committed.

    The number of runs and of metrics per run is bounded (``max_runs``,
    ``max_metrics``) so a publisher that invents names cannot grow memory
    without limit; events past the bounds are still streamed, just not indexed.
    """

    def __init__(self, series_points: int, max_runs: int = 1000, max_metrics: int = 1000) -> None:
        self.series_points = series_points
        self.max_runs = max_runs
        self.max_metrics = max_metrics
        self.runs: dict[str, RunSummary] = {}

    def _summary(self, run: str) -> RunSummary | None:
        summary = self.runs.get(run)
        if summary is None:
            if len(self.runs) >= self.max_runs:
                return None
            summary = self.runs[run] = RunSummary(run)
        return summary

    def observe(self, seq: int, ts: float, run: str | None, step: int | None,
                metrics: dict[str, Any] | None) -> None:
        """Record one committed event (``metrics`` is None for non-metric events)."""
        if run is None:
            return
        summary = self._summary(run)
        if summary is None:
            return
        summary.events += 1
        summary.last_ts = ts
        summary.last_seq = seq
        if metrics is None:
            return
        summary.metric_events += 1
        if step is None:
            step = summary.metric_events
        summary.last_step = step
        latest = summary.latest
        series = summary.series
        for name, value in metrics.items():
            s = series.get(name)
            if s is None:
                if len(series) >= self.max_metrics:
                    continue
                s = series[name] = Series(self.series_points)
            s.append(step, value)
            latest[name] = value

    def clear(self) -> None:
        self.runs.clear()
