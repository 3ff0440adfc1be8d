"""Which events of an overloaded commit the run curves must not miss (I/O-free).

When one commit brings more events than the ring holds, the run curves get a
sample of the batch (:meth:`stream_hub.core.ring.Ring.store`): observing
every event is the work the overload path exists to skip. A sample misses
extremes, though — a loss spike at one step would be missing from the
whole-run curve at every zoom. :func:`must_observe` names the events a
sample may not leave out:

- every event that is not a metric (``config``, ``run_end``, ``alert``, logs:
  few, and each one changes what is known about its run);
- for each (run, rank) and metric, the events carrying the minimum and the
  maximum of each of up to ``MAX_SEGMENTS`` equal stretches of the batch
  (at least the batch's own minimum and maximum), so each extreme reaches
  its bucket of the curve (buckets keep their min and max: see
  :mod:`stream_hub.core.series`);
- for each of them, the first non-finite value (NaN, ±inf): it breaks the
  curve where it happened, and the NaN detector sees it.

Cost: the values are read with C-level passes (``map`` over ``itemgetter``,
``sum``, ``min``/``max``, ``index``), about 60-180 ns per value; Python
code runs per (run, rank), metric and stretch, and per event only in a
batch that mixes several (run, rank) pairs (grouping them), or for a metric
missing from some events. ``scripts/bench_extremes.py`` measures it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import compress, repeat
from operator import eq, is_not, itemgetter, methodcaller, ne
from typing import Any

from .intake import FIELDS

__all__ = ["MAX_SEGMENTS", "must_observe"]

#: The most stretches of a batch whose extremes are each kept, per curve.
MAX_SEGMENTS = 16
#: Events of at least this many metrics are read row by row (see _columns).
WIDE = 8


def must_observe(batch: list[Any], count: int, budget: int) -> tuple[set[int], Counter[str]]:
    """The positions (0-based, in the batch) of the events the run curves
    must be fed, and how many metric events each run has in the batch.

    ``budget``: about how many extreme-carrying events may be picked over all
    curves; the stretches per curve shrink to fit it, down to one (the
    batch's own minimum and maximum are always picked).
    """
    types = batch[2::FIELDS]
    runs = batch[3::FIELDS]
    payloads = batch[5::FIELDS]
    ranks = batch[6::FIELDS]
    picks: set[int] = set()
    if types.count("metric") == count:
        metric_positions: Sequence[int] = range(count)
    else:
        picks.update(compress(range(count), map(ne, types, repeat("metric"))))
        metric_positions = list(compress(range(count), map(eq, types, repeat("metric"))))
    per_run: Counter[str] = Counter()
    if not metric_positions:
        return picks, per_run
    groups = _groups(runs, ranks, metric_positions, per_run)
    # The stretches per curve: as many as the budget allows, 1 to MAX_SEGMENTS.
    curves = sum(len(payloads[positions[0]]) for positions in groups)
    segments = max(1, min(MAX_SEGMENTS, budget // max(1, 2 * curves)))
    for positions in groups:
        events = list(map(payloads.__getitem__, positions))
        for values, where in _columns(events, positions):
            _extremes(values, where, segments, picks)
    return picks, per_run


def _groups(
    runs: list[Any], ranks: list[Any], positions: Sequence[int], per_run: Counter[str]
) -> list[Sequence[int]]:
    """The metric events' positions per (run, rank), in order; counts per run."""
    first = positions[0]
    run, rank = runs[first], ranks[first]
    n = len(positions)
    if runs.count(run) == n and ranks.count(rank) == n:  # one curve owner (the usual case)
        if run is not None:
            per_run[run] = n
        return [positions]
    groups: dict[tuple[Any, Any], list[int]] = {}
    for k in positions:  # per event, but only in a batch of several runs or ranks
        key = (runs[k], ranks[k])
        try:
            groups[key].append(k)
        except KeyError:
            groups[key] = [k]
    for (run, _rank), group in groups.items():
        if run is not None:
            per_run[run] += len(group)
    return list(groups.values())


def _columns(events: list[Any], positions: Sequence[int]) -> Iterator[tuple[Sequence[Any], Sequence[int]]]:
    """Each metric of a (run, rank)'s events: its values and their positions
    in the batch."""
    names = list(events[0])
    if len(set(map(len, events))) == 1:  # as many metrics in each: the same ones, usually
        try:
            columns: list[Sequence[Any]]
            if len(names) < WIDE:
                # A pass over the events per metric: one C-level map each.
                columns = [list(map(itemgetter(name), events)) for name in names]
            else:
                # Wide events: one pass over them (each dict is visited once,
                # not once per metric: the memory traffic is what costs).
                columns = list(zip(*map(itemgetter(*names), events)))
        except KeyError:  # some other metric in some events
            pass
        else:
            for column in columns:
                yield column, positions
            return
    for name in set().union(*events):  # metrics that some events lack
        values = list(map(methodcaller("get", name), events))
        present = list(compress(range(len(values)), map(is_not, values, repeat(None))))
        yield list(map(values.__getitem__, present)), list(map(positions.__getitem__, present))


def _extremes(values: Sequence[Any], where: Sequence[int], segments: int, picks: set[int]) -> None:
    """Pick the events with the min and max of one metric in each stretch, and its first non-finite value."""
    try:
        total = sum(values)
        finite = total - total == 0
    except OverflowError:  # an int too large for a float: no fast path
        finite = False
    if not finite:
        values, where = _finite_only(values, where, picks)
    n = len(values)
    if not n:
        return
    segments = min(segments, n)
    for s in range(segments):
        a, b = n * s // segments, n * (s + 1) // segments
        stretch = values[a:b]
        picks.add(where[a + stretch.index(max(stretch))])
        picks.add(where[a + stretch.index(min(stretch))])


def _finite_only(values: Sequence[Any], where: Sequence[int], picks: set[int]) -> tuple[list[Any], list[int]]:
    """The finite values and their positions; the first non-finite one is picked."""
    keep_values: list[Any] = []
    keep_where: list[int] = []
    flagged = False
    for value, k in zip(values, where):
        if value - value == 0:  # an int of any size passes; NaN and ±inf do not
            keep_values.append(value)
            keep_where.append(k)
        elif not flagged:
            picks.add(k)
            flagged = True
    return keep_values, keep_where
