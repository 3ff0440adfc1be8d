"""The hub watches for you (I/O-free): the detectors that raise ``alert``
events of source ``"hub"``, and what the hub counts of every alert.

The rules (contract v3, "New event types"; README, "The hub watches for you"):

- **NaN or ±inf**: a metric of a run's rank turns NaN or infinite — one
  ``error`` alert, then none for that run, rank and metric until a finite
  value has come again.
- **A diverging loss**: a metric whose name contains ``loss`` (any case)
  takes a value above ``loss_factor`` (10) times the median of its last
  ``loss_window`` (50) finite values in the run (every rank's), once the
  window is full and its median is positive — one ``warning`` alert per
  episode. A value past that limit does not enter the window (the median
  stays the healthy one); the episode ends at the next value within it.
- **A silent publisher**: a rank (or a run without ranks) whose process is
  alive (a live publisher of the hub) logged no metric for longer than
  ``max(silence_floor, silence_factor x its usual interval)`` — 60 s and
  10x by default; the usual interval is the median, over the last 20
  checks during which it logged, of its mean time between metric events.
  One ``warning`` per silence; checked every ``check_interval`` on the loop.
- **A failed run**: a ``run_end`` with status ``failed`` or ``killed`` — one
  ``error`` alert per run until it logs again.

Cost: the checks of the first two rules run inside
:meth:`RunIndex.observe <stream_hub.core.run_index.RunIndex.observe>`, on the
committing thread, once per committed metric event: while nothing is wrong
they are one C-level ``sum`` of the values (NaN and ±inf make it
non-finite), a truth test of the track's non-finite set, and for each loss
metric of the run a dict lookup, a comparison with the window's median and
a bisect-insort in a list of 50. Nothing is kept per event (the sum's float
and the values' view come and go at once), and no state is made until
something is wrong but a run's loss windows.
``scripts/bench_watch.py`` measures it: about 0.15 µs per metric event,
0.6 µs for a run with a loss, beside about 1 µs of the commit without them.
Raised alerts wait in :attr:`Watch.raised` until the hub numbers them right
after the batch that raised them; alerts are never fed back to the rules
(only ``metric`` and ``run_end`` events are looked at).
"""

from __future__ import annotations

import logging
import sys
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import ALERT_LEVELS, alert_data, encode_data
from .intake import Submission

__all__ = [
    "AlertOutbox",
    "LossWindow",
    "Rules",
    "Watch",
    "WatchedRun",
    "WatchedRuns",
    "WatchedTrack",
    "is_loss",
    "level_of",
    "worse",
]

logger = logging.getLogger(__name__)

#: Every finite float lies in [-MAX, MAX]; NaN and ±inf fail ``-MAX <= v <= MAX``.
MAX = sys.float_info.max
_LEVEL_RANK = {level: i for i, level in enumerate(ALERT_LEVELS)}
# Pacing samples kept per silent-watched publisher.
_PACE_SAMPLES = 20


def is_loss(name: str) -> bool:
    """Whether the divergence rule watches a metric of this name."""
    return "loss" in name.lower()


def level_of(value: object) -> str:
    """An alert's level as counted: one of ``ALERT_LEVELS`` (else ``warning``:
    an alert that did not pass :func:`~stream_hub.events.alert_data`)."""
    return value if isinstance(value, str) and value in _LEVEL_RANK else "warning"


def worse(a: str | None, b: object) -> str:
    """The worse of two alert levels (``a`` None: none yet)."""
    level = level_of(b)
    if a is None or _LEVEL_RANK[level] > _LEVEL_RANK.get(a, 0):
        return level
    return a


@dataclass(frozen=True)
class Rules:
    """The detectors' parameters (see the module docstring)."""

    loss_window: int = 50
    loss_factor: float = 10.0
    silence_floor: float = 60.0
    silence_factor: float = 10.0

    @property
    def check_interval(self) -> float:
        """Seconds between two silence checks: a silence is noticed at most
        this late (a quarter of the floor, at most 5 s)."""
        return min(5.0, self.silence_floor / 4)


class WatchedTrack(Protocol):
    """What the rules read and keep of one rank of a run (a ``run_index.Track``)."""

    nonfinite: set[str] | None
    last_ts: float | None
    last_step: int | None
    metric_events: int
    ended: str | None

    @property
    def series(self) -> Mapping[str, object]: ...


class WatchedRun(Protocol):
    """What the rules read and keep of a run (a ``run_index.RunSummary``)."""

    run: str
    last_step: int | None
    failure_alerted: bool

    @property
    def tracks(self) -> Mapping[int | None, WatchedTrack]: ...


class WatchedRuns(Protocol):
    """The runs the silence rule looks through (a ``run_index.RunIndex``)."""

    @property
    def runs(self) -> Mapping[str, WatchedRun]: ...


class AlertOutbox(Protocol):
    """Where every alert the hub commits is handed, besides its clients (the
    webhook): called on the committing thread, it must not block."""

    def offer(self, alert: dict[str, Any]) -> None: ...


class LossWindow:
    """The last ``size`` finite values of one loss metric of a run: in
    arrival order (a ring) and sorted (the median is the middle one)."""

    __slots__ = ("diverged", "next", "ring", "size", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring: list[float] = []
        self.sorted: list[float] = []
        self.next = 0  # the ring's oldest value, once it is full
        self.diverged = False

    def median(self) -> float:
        """The window's median (the upper middle of an even count)."""
        values = self.sorted
        return values[len(values) // 2]

    def push(self, value: float) -> None:
        """Add a finite value, letting the oldest go once the window is full."""
        ring, ordered = self.ring, self.sorted
        if len(ring) < self.size:
            ring.append(value)
        else:
            i = self.next
            del ordered[bisect_left(ordered, ring[i])]
            ring[i] = value
            self.next = i + 1 if i + 1 < self.size else 0
        insort(ordered, value)


@dataclass
class _Pace:
    """What the silence rule remembers of one live publisher of a run."""

    events: int
    last_ts: float
    samples: list[float] = field(default_factory=list)
    silent: bool = False


class Watch:
    """The detectors of one hub, their raised alerts, and the count of every
    alert committed (by level and source).

    Args:
        rules: the detectors' parameters.
        outbox: also given every committed alert (the webhook), if any.
    """

    def __init__(self, rules: Rules | None = None, outbox: AlertOutbox | None = None) -> None:
        self.rules = rules if rules is not None else Rules()
        self.outbox = outbox
        #: Alerts raised and not yet handed to the intake (see :meth:`take`).
        self.raised: list[Submission] = []
        #: Alerts committed, by (level, source).
        self.counts: dict[tuple[str, str], int] = {}
        self._paces: dict[tuple[str, int | None], _Pace] = {}

    def take(self) -> list[Submission]:
        """The alerts raised since the last call, as submissions for the intake."""
        raised, self.raised = self.raised, []
        return raised

    def _raise(
        self,
        run: str,
        rank: int | None,
        step: int | None,
        level: str,
        title: str,
        text: str,
        metric: str | None = None,
    ) -> None:
        # Names are not bounded as an alert's fields are (a metric's name, from log()).
        try:
            data = alert_data(title[:200], text[:4000], level, metric[:200] if metric else None, "hub")
            self.raised.append(("alert", run, step, encode_data(data), None, rank))
        except (TypeError, ValueError) as exc:  # a name JSON cannot carry (a lone surrogate)
            logger.debug("alert %r of run %r not raised: %s", title[:80], run, exc)

    # -- per committed event (RunIndex.observe) -------------------------------------------

    def nonfinite(
        self, run: str, rank: int | None, step: int | None, payload: Any, track: WatchedTrack
    ) -> None:
        """A metric event with a NaN or infinite value, or of a track that had
        one: alert each metric newly not finite; forget those finite again."""
        bad = track.nonfinite
        for name, value in payload.items():
            if type(value) is not float or -MAX <= value <= MAX:
                if bad and name in bad:
                    bad.discard(name)
                continue
            if name not in track.series or (bad is not None and name in bad):
                continue  # a metric not kept (max_series), or already alerted
            if bad is None:
                bad = track.nonfinite = set()
            bad.add(name)
            what = "NaN" if value != value else ("+inf" if value > 0 else "-inf")
            where = f"run {run!r}" if rank is None else f"rank {rank} of run {run!r}"
            at = "" if step is None else f" at step {step}"
            self._raise(
                run,
                rank,
                step,
                "error",
                f"{name} is {what}",
                f"{name} of {where} is {what}{at}; not said again until it is finite",
                name,
            )

    def losses(
        self, run: str, rank: int | None, step: int | None, payload: Any, windows: dict[str, LossWindow]
    ) -> None:
        """A metric event of a run with loss metrics: check and record each."""
        # HOT PATH (committing thread): once per metric event of a run with a loss.
        # LossWindow.median and .push inlined: a method call costs as much as the work.
        factor = self.rules.loss_factor
        for name, window in windows.items():
            value = payload.get(name)
            if value is None or not -MAX <= value <= MAX:
                continue  # absent here; or NaN/inf, the other rule's (or an int no float holds)
            ring, ordered = window.ring, window.sorted
            size = window.size
            if len(ring) < size:
                ring.append(value)
                insort(ordered, value)
                continue
            median = ordered[size >> 1]
            if median > 0 and value > factor * median:
                if not window.diverged:
                    window.diverged = True
                    self._diverged(run, rank, step, name, value, median)
                continue
            window.diverged = False
            i = window.next
            del ordered[bisect_left(ordered, ring[i])]
            ring[i] = value
            window.next = i + 1 if i + 1 < size else 0
            insort(ordered, value)

    def _diverged(
        self, run: str, rank: int | None, step: int | None, name: str, value: float, median: float
    ) -> None:
        rules = self.rules
        at = "" if step is None else f" at step {step}"
        who = "" if rank is None else f" (rank {rank})"
        self._raise(
            run,
            rank,
            step,
            "warning",
            f"{name} diverging",
            f"{name} of run {run!r}{who} is {value:.4g}{at}, over {rules.loss_factor:g}x the median "
            f"({median:.4g}) of its last {rules.loss_window} values",
            name,
        )

    def failed(self, summary: WatchedRun, rank: int | None, status: str) -> None:
        """A ``run_end`` of ``status`` failed or killed: once per run until it logs again."""
        if summary.failure_alerted:
            return
        summary.failure_alerted = True
        who = "" if rank is None else f" (rank {rank})"
        self._raise(
            summary.run,
            rank,
            summary.last_step,
            "error",
            f"run {status}",
            f"run {summary.run!r}{who} ended {status} at step {summary.last_step}",
        )

    def committed(
        self, seq: int, ts: float, run: str, step: int | None, rank: int | None, data: dict[str, Any]
    ) -> None:
        """An ``alert`` event was committed (the hub's or a user's): count it,
        hand it to the outbox."""
        # Normalised: a label's values stay few, whatever an unchecked source sent.
        key = (level_of(data.get("level")), "hub" if data.get("source") == "hub" else "user")
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.outbox is not None:
            level, title, text = data.get("level"), data.get("title"), data.get("text")
            self.outbox.offer(
                {
                    # Chat webhooks (Slack, Mattermost) show "text"; the rest is the event.
                    "text": f"[{level}] {run}: {title} — {text}",
                    "seq": seq,
                    "ts": ts,
                    "type": "alert",
                    "run": run,
                    "rank": rank,
                    "step": step,
                    "data": data,
                }
            )

    # -- now and then (the loop) ----------------------------------------------------------------

    def check_silence(self, now: float, runs: WatchedRuns, live: Iterable[tuple[str, int | None]]) -> bool:
        """Alert each live publisher (a run and rank whose process lives) that
        has been silent too long (see the module docstring); whether any was.
        ``now`` is Unix time (event times are)."""
        rules = self.rules
        raised = len(self.raised)
        paces: dict[tuple[str, int | None], _Pace] = {}
        for key in live:
            run, rank = key
            summary = runs.runs.get(run)
            track = summary.tracks.get(rank) if summary is not None else None
            if track is None or track.last_ts is None or track.ended is not None:
                continue
            pace = self._paces.get(key)
            if pace is None:
                pace = _Pace(track.metric_events, track.last_ts)
            elif track.metric_events > pace.events:
                interval = (track.last_ts - pace.last_ts) / (track.metric_events - pace.events)
                pace.samples.append(max(0.0, interval))
                del pace.samples[:-_PACE_SAMPLES]
                pace.events, pace.last_ts, pace.silent = track.metric_events, track.last_ts, False
            paces[key] = pace
            usual = _median(pace.samples)
            limit = max(rules.silence_floor, rules.silence_factor * usual)
            quiet = now - track.last_ts
            if quiet > limit and not pace.silent:
                pace.silent = True
                who = f"run {run!r}" if rank is None else f"rank {rank} of run {run!r}"
                usually = f" (usually every {usual:.3g} s)" if pace.samples else ""
                self._raise(
                    run,
                    rank,
                    track.last_step,
                    "warning",
                    f"{'run' if rank is None else f'rank {rank}'} silent",
                    f"{who} has logged no metric for {quiet:.0f} s{usually}, while its process lives",
                )
        self._paces = paces  # publishers gone are forgotten
        return len(self.raised) > raised


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
