"""What REST says about runs: the list with their ranks and state, and their
whole curves, per rank when a run has ranks.

A run's state is how it ended (``finished``, ``failed``, ``killed``: from
its ``run_end`` events, once every rank that published has ended), else
``running`` while a live publisher of the hub has logged to it or it got an
event in the last ``STALE_AFTER`` seconds, else ``stale`` (its publishers
vanished without saying it ended).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson

from ..core.run_index import RunSummary, Series, Track

__all__ = [
    "STALE_AFTER",
    "NotFound",
    "export_csv",
    "export_jsonl",
    "run_state",
    "runs_body",
    "series_body",
]

#: Silence after which a run no live publisher holds counts as stale.
STALE_AFTER = 60.0


class NotFound(LookupError):
    """What was asked for does not exist; ``extra`` says what does."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


def run_state(summary: RunSummary, live: Iterable[str], now: float | None = None) -> str:
    ended = summary.ended
    if ended is not None:
        return ended
    if summary.run in live:
        return "running"
    now = time.time() if now is None else now
    return "running" if summary.last_ts is not None and now - summary.last_ts < STALE_AFTER else "stale"


def runs_body(runs: dict[str, RunSummary], live: set[str]) -> list[dict[str, Any]]:
    now = time.time()
    return [{**s.describe(), "state": run_state(s, live, now)} for s in runs.values()]


def _curve(s: Series, max_points: int, compact: bool = False) -> dict[str, Any]:
    curve = {**s.snapshot(max_points), "points_seen": s.seen}
    if compact and _single_points(curve):
        del curve["mins"], curve["maxs"]  # each bucket is one point: mins and maxs are its value
    return curve


def _single_points(curve: dict[str, Any]) -> bool:
    return all(
        (lo == v == hi) or (lo != lo and hi != hi)
        for v, lo, hi in zip(curve["values"], curve["mins"], curve["maxs"])
    )


def series_body(
    summary: RunSummary, metric: str | None, rank: int | None, max_points: int, compact: bool = False
) -> dict[str, Any]:
    """The curve(s) of a run: one metric or all; one rank, all ranks, or (a
    run without ranks) its only curves. ``compact``: a curve whose buckets
    are single points comes without ``mins`` and ``maxs``.

    Raises:
        NotFound: no such metric or rank in the run.
    """
    body: dict[str, Any] = {"run": summary.run}
    ranks = summary.ranks
    if rank is not None:
        track = summary.tracks.get(rank)
        if track is None:
            raise NotFound(f"run {summary.run!r} has no rank {rank}", ranks=ranks)
        body["rank"] = rank
        body.update(_track_body(summary.run, track, metric, max_points, compact))
        return body
    if not ranks:
        track = summary.tracks.get(None) or Track()
        body.update(_track_body(summary.run, track, metric, max_points, compact))
        return body
    if metric is not None:
        body["metric"] = metric
    per_rank: dict[str, Any] = {}
    for r in ranks:
        track = summary.tracks[r]
        if metric is None:
            per_rank[str(r)] = {name: _curve(s, max_points, compact) for name, s in track.series.items()}
        elif metric in track.series:
            per_rank[str(r)] = _curve(track.series[metric], max_points, compact)
    if metric is not None and not per_rank:
        raise NotFound(f"run {summary.run!r} has no metric {metric!r}", metrics=summary.metric_names())
    body["ranks"] = per_rank
    return body


def _track_body(
    run: str, track: Track, metric: str | None, max_points: int, compact: bool = False
) -> dict[str, Any]:
    if metric is None:
        return {"series": {name: _curve(s, max_points, compact) for name, s in track.series.items()}}
    s = track.series.get(metric)
    if s is None:
        raise NotFound(f"run {run!r} has no metric {metric!r}", metrics=sorted(track.series))
    return {"metric": metric, **_curve(s, max_points, compact)}


# -- export ---------------------------------------------------------------------------------

# The CSV columns are the metrics seen in this many first events.
CSV_SCAN = 10_000


async def export_jsonl(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for event in events:
        yield orjson.dumps(event) + b"\n"


async def export_csv(events: AsyncIterator[dict[str, Any]], metric: str | None) -> AsyncIterator[bytes]:
    """Metric events as CSV: ``seq,ts,step,rank`` then one column per metric
    (those seen in the first ``CSV_SCAN`` events, or just ``metric``)."""
    buffered: list[dict[str, Any]] = []
    names: list[str] = []
    started = False
    async for event in events:
        if event.get("type") != "metric":
            continue
        if started:
            yield _csv_row(event, names)
            continue
        buffered.append(event)
        names.extend(n for n in event["metrics"] if n not in names and (metric is None or n == metric))
        if len(buffered) >= CSV_SCAN:
            started = True
            yield _csv_header(names)
            for row in buffered:
                yield _csv_row(row, names)
            buffered = []
    if not started:
        yield _csv_header(names)
        for row in buffered:
            yield _csv_row(row, names)


def _csv_header(names: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(["seq", "ts", "step", "rank", *names])
    return buffer.getvalue().encode()


def _csv_row(event: dict[str, Any], names: list[str]) -> bytes:
    metrics = event["metrics"]
    buffer = io.StringIO()
    rank = event.get("rank")
    csv.writer(buffer).writerow(
        [event["seq"], event["ts"], event.get("step"), "" if rank is None else rank]
        + [metrics.get(name, "") for name in names]
    )
    return buffer.getvalue().encode()
