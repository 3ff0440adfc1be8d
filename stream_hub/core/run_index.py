"""What is known about each run (I/O-free): counts, last step, latest values,
hyper-parameters, how it ended, and its curves — one per metric and rank, in
bounded memory (:mod:`stream_hub.core.series`).

Fed by the hub once per committed event, on the committing thread; bounded in
runs, metrics per run and curves over all runs, so a publisher that invents
names cannot grow memory without limit.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .series import Series
from .watch import LossWindow, Watch, is_loss, worse

__all__ = ["DROP_CAUSES", "END_STATES", "RunIndex", "RunSummary", "Series", "Track"]

# Hyper-parameters kept per run (config events beyond it are streamed, not kept).
MAX_CONFIG_KEYS = 1000

# What a run_end event may say, and the run states /api/runs reports.
END_STATES = ("finished", "failed", "killed")

#: Why a run misses events or values, as /api/runs' ``dropped`` reports it:
#: ``forwarder``: events a joined process or forked child dropped before they
#: reached the hub (its buffer was full, or an event could not be sent);
#: ``hub``: events the hub forgot before committing them (publishers outran
#: its loop far enough); ``store``: events the store could not write (its
#: queue was full); ``curve``: metric values left out of the run's curves
#: (``max_series``, ``max_metrics``); ``sampled``: metric events the run's
#: curves were not given while commits overloaded the ring (they got a
#: sample, every extreme and every other event: see core/extremes.py).
DROP_CAUSES = ("forwarder", "hub", "store", "curve", "sampled")


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
    #: Metrics NaN or infinite now, alerted once (see :mod:`stream_hub.core.watch`).
    nonfinite: set[str] | None = None


@dataclass
class RunSummary:
    """What is known about one run: counts, last step, latest values, curves
    (per rank), hyper-parameters (``config`` events) and how it ended."""

    run: str
    first_ts: float | None = None
    events: int = 0
    metric_events: int = 0
    last_step: int | None = None
    last_ts: float | None = None
    last_seq: int = 0
    tracks: dict[int | None, Track] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: Alert events of the run: how many, the worst level, the latest title.
    alerts: int = 0
    alert_level: str | None = None
    alert_title: str | None = None
    #: The divergence rule's window of each loss metric (with a watch).
    losses: dict[str, LossWindow] = field(default_factory=dict)
    #: A failed end was alerted (again only after the run logs again).
    failure_alerted: bool = False
    #: What is missing of the run, per cause of DROP_CAUSES but ``forwarder``.
    drops: dict[str, int] = field(default_factory=dict)
    #: What each joined process or forked child (by source id) dropped of the
    #: run: each reports its own total, so a resend or a new host counts nothing twice.
    forwarder_drops: dict[str, int] = field(default_factory=dict)

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
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "last_seq": self.last_seq,
            "ranks": self.ranks,
            # When each rank last logged a metric: a rank that fell off shows.
            "rank_last_ts": {str(r): t.last_ts for r, t in self.tracks.items() if r is not None},
            "ended": self.ended,
            "config": self.config,
            "alerts": self.alert_summary(),
            "dropped": self.dropped(),
        }

    def dropped(self) -> dict[str, int]:
        """How many events (``curve``: values) of the run are missing, per cause
        (see ``DROP_CAUSES``), zeros included."""
        drops = self.drops
        out = {cause: drops.get(cause, 0) for cause in DROP_CAUSES}
        out["forwarder"] = sum(self.forwarder_drops.values())
        return out

    def alert_summary(self) -> dict[str, Any] | None:
        """The run's alerts (``count``, worst ``level``, latest ``title``); None without any."""
        if not self.alerts:
            return None
        return {"count": self.alerts, "level": self.alert_level, "title": self.alert_title}


class RunIndex:
    """Summaries of every run seen, fed by the hub as events are committed.

    The number of runs, of metrics per run and of curves over all runs is
    bounded (``max_runs``, ``max_metrics``, ``max_series``) so a publisher
    that invents names cannot grow memory without limit. A new run is always
    tracked: at ``max_runs``, the oldest finished runs are forgotten first,
    then the least recently updated (a hundredth of ``max_runs`` at a time,
    so a flood of new names costs one scan per hundred; counted in
    ``runs_evicted``). Past the other bounds, events are still streamed,
    just not kept in curves (``points_dropped`` counts the values left out).
    A curve is one metric of one rank of a run.
    """

    def __init__(
        self,
        series_points: int,
        max_runs: int = 10_000,
        max_metrics: int = 1000,
        max_series: int = 10_000,
    ) -> None:
        self.series_points = series_points
        self.max_runs = max_runs
        self.max_metrics = max_metrics
        self.max_series = max_series
        self.series_count = 0
        self.points_dropped = 0
        self.runs_evicted = 0
        # Drops counted on runs (sampled, hub, store, forwarder), over all runs.
        self.drop_totals: Counter[str] = Counter()
        self.runs: dict[str, RunSummary] = {}
        self.watch: Watch | None = None

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
                self.evict(len(self.runs) - self.max_runs + max(1, self.max_runs // 100))
            summary = self.runs[run] = RunSummary(run, ts)
        summary.events += 1
        summary.last_ts = ts
        summary.last_seq = seq
        if event_type != "metric":
            if summary.first_ts is None:  # listed by its drops before any event came
                summary.first_ts = ts
            if event_type == "run_end" or event_type == "config" or event_type == "alert":
                self._note(summary, event_type, payload, rank, seq, ts, step)
            return
        summary.metric_events += 1
        track = summary.tracks.get(rank)
        if track is None:
            track = summary.track(rank)
            if summary.first_ts is None:  # listed by its drops before any event came
                summary.first_ts = ts
        track.metric_events += 1
        if step is None:
            step = track.metric_events
        summary.last_step = track.last_step = step
        track.last_ts = ts
        if track.ended is not None:  # logging again after an end: running again
            track.ended = None
            summary.failure_alerted = False
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
                if self.watch is not None and name not in summary.losses and is_loss(name):
                    summary.losses[name] = LossWindow(self.watch.rules.loss_window)
            # Series.append, inlined: this runs once per metric per event.
            s.raw_steps.append(step)
            raw = s.raw_values
            raw.append(value)
            if len(raw) >= s.max_points:
                s.fold()
        watch = self.watch
        if watch is not None:
            # The detectors (core/watch.py), in their cheapest form: one C-level
            # sum tells all values finite (a sum that overflows takes the slow
            # path, and finds nothing).
            try:
                total = sum(payload.values())
            except OverflowError:  # an int too large for a float (submitted past log()'s checks)
                total = math.inf
            if total - total != 0 or track.nonfinite:
                watch.nonfinite(run, rank, step, payload, track)
            if summary.losses:
                watch.losses(run, rank, step, payload, summary.losses)
        if not refused:
            track.latest.update(payload)
            return
        self.points_dropped += refused
        summary.drops["curve"] = summary.drops.get("curve", 0) + refused
        latest = track.latest
        for name in payload.keys() & series.keys():
            latest[name] = payload[name]

    def _note(
        self,
        summary: RunSummary,
        event_type: str,
        payload: Any,
        rank: int | None,
        seq: int,
        ts: float,
        step: int | None,
    ) -> None:
        """A run_end, config or alert event: how a rank ended, the run's
        hyper-parameters, its alerts."""
        try:
            data = orjson.loads(payload) if type(payload) is bytes else payload
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        if event_type == "run_end":
            status = data.get("status", "finished")
            ended = summary.track(rank).ended = status if status in END_STATES else "finished"
            if ended != "finished" and self.watch is not None:
                self.watch.failed(summary, rank, ended)
        elif event_type == "alert":
            summary.alerts += 1
            summary.alert_level = worse(summary.alert_level, data.get("level"))
            summary.alert_title = str(data.get("title"))
            if self.watch is not None:
                self.watch.committed(seq, ts, summary.run, step, rank, data)
        elif len(summary.config) + len(data) <= MAX_CONFIG_KEYS:
            summary.config.update(data)

    def sampled(self, counts: Mapping[str, int]) -> None:
        """Metric events of each run an overloaded commit did not feed to its
        curves (:meth:`Ring.store <stream_hub.core.ring.Ring.store>`): counted
        in the run's events, and as ``sampled``."""
        for run, n in counts.items():
            summary = self.runs.get(run)
            if summary is not None:  # one of its events of the batch was observed
                summary.events += n
                summary.metric_events += n
                summary.drops["sampled"] = summary.drops.get("sampled", 0) + n
                self.drop_totals["sampled"] += n

    def dropped(self, cause: str, counts: Mapping[str, int]) -> None:
        """Events of each run lost for ``cause`` (one of ``DROP_CAUSES``): a
        run not known yet is listed from now on, its drops with it."""
        for run, n in counts.items():
            drops = self._summary(run).drops
            drops[cause] = drops.get(cause, 0) + n
            self.drop_totals[cause] += n

    def forwarder_dropped(self, run: str, source: str, total: int) -> None:
        """A joined process or forked child (``source``) says it has dropped
        ``total`` events of ``run`` so far."""
        drops = self._summary(run).forwarder_drops
        before = drops.get(source, 0)
        if total > before:
            drops[source] = total
            self.drop_totals["forwarder"] += total - before

    def _summary(self, run: str) -> RunSummary:
        summary = self.runs.get(run)
        if summary is None:
            if len(self.runs) >= self.max_runs:
                self.evict(len(self.runs) - self.max_runs + max(1, self.max_runs // 100))
            summary = self.runs[run] = RunSummary(run)
        return summary

    def replay(self, events: Iterable[tuple[Any, ...]]) -> None:
        """Observe events an earlier hub already served (a store's newest, after
        its saved curves): into the curves and counts, unwatched — their
        alerts were raised and sent then."""
        watch, self.watch = self.watch, None
        try:
            for args in events:
                self.observe(*args)
        finally:
            self.watch = watch

    def evict(self, count: int) -> list[str]:
        """Forget ``count`` runs to make room: the finished ones that ended
        longest ago first, then those updated least recently. Returns their names."""
        victims = heapq.nsmallest(count, self.runs.values(), key=lambda s: (s.ended is None, s.last_seq))
        for summary in victims:
            del self.runs[summary.run]
            self.series_count -= sum(len(track.series) for track in summary.tracks.values())
        self.runs_evicted += len(victims)
        return [summary.run for summary in victims]

    def clear(self) -> None:
        self.runs.clear()
        self.series_count = 0
        self.drop_totals.clear()

    def state(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every run (or the runs named), its tracks and curves, JSON-able
        (a hand-over to another host, a store's snapshot)."""
        out = []
        summaries = self.runs.values() if names is None else [self.runs[n] for n in names if n in self.runs]
        for summary in summaries:
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
                    "first_ts": summary.first_ts,
                    "events": summary.events,
                    "metric_events": summary.metric_events,
                    "last_step": summary.last_step,
                    "last_ts": summary.last_ts,
                    "last_seq": summary.last_seq,
                    "config": summary.config,
                    "tracks": tracks,
                    "alerts": summary.alert_summary(),
                    "drops": summary.drops,
                    "forwarder_drops": summary.forwarder_drops,
                }
            )
        return out

    def restore(self, runs: list[dict[str, Any]], keep: bool = False) -> None:
        """Take over the runs of :meth:`state`: replacing what is here, or
        (``keep``) adding those not known yet, within ``max_runs``."""
        if not keep:
            self.clear()
        for item in runs:
            if len(self.runs) >= self.max_runs:
                break
            if item["run"] in self.runs:
                continue
            summary = RunSummary(
                run=item["run"],
                first_ts=item.get("first_ts"),
                events=item["events"],
                metric_events=item["metric_events"],
                last_step=item["last_step"],
                last_ts=item["last_ts"],
                last_seq=item["last_seq"],
                config=dict(item["config"]),
            )
            alerts = item.get("alerts")  # absent from states written before alerts
            if isinstance(alerts, dict):
                summary.alerts = int(alerts.get("count") or 0)
                summary.alert_level, summary.alert_title = alerts.get("level"), alerts.get("title")
            # Absent from states written before drops were counted per run.
            summary.drops = _counts(item.get("drops"))
            summary.forwarder_drops = _counts(item.get("forwarder_drops"))
            self.drop_totals.update(summary.drops)
            self.drop_totals["forwarder"] += sum(summary.forwarder_drops.values())
            for t in item["tracks"]:
                series = {}
                for name, s in t["series"].items():
                    if self.series_count >= self.max_series:
                        break
                    series[name] = Series.from_state(s)
                    self.series_count += 1
                summary.tracks[t["rank"]] = Track(
                    series=series,
                    latest={k: math.nan if v is None else v for k, v in t["latest"].items()},
                    last_step=t["last_step"],
                    last_ts=t["last_ts"],
                    metric_events=t["metric_events"],
                    ended=t["ended"],
                )
            if self.watch is not None:
                size = self.watch.rules.loss_window
                names = {name for track in summary.tracks.values() for name in track.series}
                summary.losses = {name: LossWindow(size) for name in sorted(names) if is_loss(name)}
            self.runs[summary.run] = summary


def _counts(value: Any) -> dict[str, int]:
    """A saved dict of counts (anything else: none)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if type(v) is int and v > 0}


def _json_latest(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: None if type(v) is float and (v != v or v in (math.inf, -math.inf)) else v
        for k, v in values.items()
    }
