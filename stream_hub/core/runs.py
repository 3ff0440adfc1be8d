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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["END_STATES", "RunIndex", "RunSummary", "Series", "Track"]

# Hyper-parameters kept per run (config events beyond it are streamed, not kept).
MAX_CONFIG_KEYS = 1000

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


# What a run_end event may say, and the run states /api/runs reports.
END_STATES = ("finished", "failed", "killed")


@dataclass
class Track:
    """One rank's part of a run (rank None: events without a rank): its
    curves, latest values, last step, and how it ended."""

    series: dict[str, Series] = field(default_factory=dict)
    latest: dict[str, Any] = field(default_factory=dict)
    last_step: int | None = None
    last_ts: float | None = None
    metric_events: int = 0
    ended: str | None = None


@dataclass
class RunSummary:
    """What is known about one run: counts, last step, latest values, curves
    (per rank), hyper-parameters (``config`` events) and how it ended."""

    run: str
    events: int = 0
    metric_events: int = 0
    last_step: int | None = None
    last_ts: float | None = None
    last_seq: int = 0
    tracks: dict[int | None, Track] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def track(self, rank: int | None) -> Track:
        track = self.tracks.get(rank)
        if track is None:
            track = self.tracks[rank] = Track()
        return track

    @property
    def ranks(self) -> list[int]:
        """The ranks that published to this run, in order."""
        return sorted(rank for rank in self.tracks if rank is not None)

    @property
    def series(self) -> dict[str, Series]:
        """The curves of events without a rank (a run of one process)."""
        track = self.tracks.get(None)
        return track.series if track is not None else {}

    @property
    def latest(self) -> dict[str, Any]:
        """The latest value of every metric, over all ranks (the newest wins)."""
        tracks = sorted(self.tracks.values(), key=lambda t: t.last_ts or 0.0)
        out: dict[str, Any] = {}
        for track in tracks:
            out.update(track.latest)
        return out

    @property
    def ended(self) -> str | None:
        """How the run ended, once every rank that published has ended (the
        worst of theirs: killed, failed, finished); None while any still runs."""
        ends = [track.ended for track in self.tracks.values()]
        if not ends or None in ends:
            return None
        return next(state for state in ("killed", "failed", "finished") if state in ends)

    def metric_names(self) -> list[str]:
        return sorted({name for track in self.tracks.values() for name in track.series})

    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "last_step": self.last_step,
            "metrics": self.metric_names(),
            "events": self.events,
            "metric_events": self.metric_events,
            "last_ts": self.last_ts,
            "last_seq": self.last_seq,
            "ranks": self.ranks,
            "ended": self.ended,
            "config": self.config,
        }


class RunIndex:
    """Summaries of every run seen, fed by the hub as events are committed.

    The number of runs, of metrics per run and of curves over all runs is
    bounded (``max_runs``, ``max_metrics``, ``max_series``) so a publisher
    that invents names cannot grow memory without limit: events past the
    bounds are still streamed, just not kept in curves (``points_dropped``
    counts the values left out). A curve is one metric of one rank of a run.
    """

    def __init__(
        self, series_points: int, max_runs: int = 1000, max_metrics: int = 1000, max_series: int = 10_000
    ) -> None:
        self.series_points = series_points
        self.max_runs = max_runs
        self.max_metrics = max_metrics
        self.max_series = max_series
        self.series_count = 0
        self.points_dropped = 0
        self.runs: dict[str, RunSummary] = {}

    def new_series(self, run: str, names: Iterable[str], rank: int | None = None) -> int:
        """How many curves ``names`` would add to ``run`` (for ``rank``)."""
        summary = self.runs.get(run)
        track = summary.tracks.get(rank) if summary is not None else None
        if track is None:
            return sum(1 for _ in names)
        return sum(1 for name in names if name not in track.series)

    def observe(
        self,
        seq: int,
        ts: float,
        run: str | None,
        step: int | None,
        event_type: str,
        payload: Any,
        rank: int | None,
    ) -> None:
        """Record one committed event."""
        if run is None:
            return
        summary = self.runs.get(run)
        if summary is None:
            if len(self.runs) >= self.max_runs:
                return
            summary = self.runs[run] = RunSummary(run)
        summary.events += 1
        summary.last_ts = ts
        summary.last_seq = seq
        if event_type != "metric":
            if event_type == "run_end" or event_type == "config":
                self._note(summary, event_type, payload, rank)
            return
        summary.metric_events += 1
        track = summary.tracks.get(rank)
        if track is None:
            track = summary.track(rank)
        track.metric_events += 1
        if step is None:
            step = track.metric_events
        summary.last_step = track.last_step = step
        track.last_ts = ts
        track.ended = None  # logging again after an end: running again
        series = track.series
        refused = 0
        for name, value in payload.items():
            s = series.get(name)
            if s is None:
                if self.series_count >= self.max_series or len(series) >= self.max_metrics:
                    refused += 1
                    continue
                s = series[name] = Series(self.series_points)
                self.series_count += 1
            # Series.append, inlined: this runs once per metric per event.
            s.raw_steps.append(step)
            raw = s.raw_values
            raw.append(value)
            if len(raw) >= s.max_points:
                s.fold()
        if not refused:
            track.latest.update(payload)
            return
        self.points_dropped += refused
        latest = track.latest
        for name in payload.keys() & series.keys():
            latest[name] = payload[name]

    def _note(self, summary: RunSummary, event_type: str, payload: Any, rank: int | None) -> None:
        """A run_end or config event: how a rank ended, the run's hyper-parameters."""
        try:
            data = orjson.loads(payload) if type(payload) is bytes else payload
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        if event_type == "run_end":
            status = data.get("status", "finished")
            summary.track(rank).ended = status if status in END_STATES else "finished"
        elif len(summary.config) + len(data) <= MAX_CONFIG_KEYS:
            summary.config.update(data)

    def clear(self) -> None:
        self.runs.clear()
        self.series_count = 0

    def state(self) -> list[dict[str, Any]]:
        """Every run, its tracks and curves, JSON-able (a hand-over to another host)."""
        out = []
        for summary in self.runs.values():
            tracks = []
            for rank, track in summary.tracks.items():
                tracks.append(
                    {
                        "rank": rank,
                        "series": {name: s.state() for name, s in track.series.items()},
                        "latest": _json_latest(track.latest),
                        "last_step": track.last_step,
                        "last_ts": track.last_ts,
                        "metric_events": track.metric_events,
                        "ended": track.ended,
                    }
                )
            out.append(
                {
                    "run": summary.run,
                    "events": summary.events,
                    "metric_events": summary.metric_events,
                    "last_step": summary.last_step,
                    "last_ts": summary.last_ts,
                    "last_seq": summary.last_seq,
                    "config": summary.config,
                    "tracks": tracks,
                }
            )
        return out

    def restore(self, runs: list[dict[str, Any]]) -> None:
        """Take over the runs of :meth:`state` (replacing what is here)."""
        self.clear()
        for item in runs[: self.max_runs]:
            summary = RunSummary(
                run=item["run"],
                events=item["events"],
                metric_events=item["metric_events"],
                last_step=item["last_step"],
                last_ts=item["last_ts"],
                last_seq=item["last_seq"],
                config=dict(item["config"]),
            )
            for t in item["tracks"]:
                series = {}
                for name, s in t["series"].items():
                    if self.series_count >= self.max_series:
                        break
                    series[name] = Series.from_state(s)
                    self.series_count += 1
                summary.tracks[t["rank"]] = Track(
                    series=series,
                    latest={k: _NAN if v is None else v for k, v in t["latest"].items()},
                    last_step=t["last_step"],
                    last_ts=t["last_ts"],
                    metric_events=t["metric_events"],
                    ended=t["ended"],
                )
            self.runs[summary.run] = summary


def _json_latest(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: None if type(v) is float and (v != v or v in (math.inf, -math.inf)) else v
        for k, v in values.items()
    }
