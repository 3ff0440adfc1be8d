"""One bounded curve (stream_hub/core/series.py): buckets keep their first step,
last value and the finite min and max of their points, however far the curve
is downsampled."""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_hub.core.series import Series

NAN, INF = math.nan, math.inf


def same(a: float, b: float) -> bool:
    """Equal, NaN equal to NaN."""
    return a == b or (a != a and b != b)


def finite_min_max(points: list[float]) -> tuple[float, float]:
    finite = [v for v in points if math.isfinite(v)]
    return (min(finite), max(finite)) if finite else (NAN, NAN)


def check_buckets(snap: dict[str, list[Any]], steps: list[int], values: list[float]) -> None:
    """Each bucket covers the points from its step to the next bucket's:
    its first step, last value, and the finite min and max of those points."""
    starts = snap["steps"]
    assert starts == sorted(starts) and starts[0] == steps[0]
    bounds = [*starts[1:], steps[-1] + 1]
    for i, (start, end) in enumerate(zip(starts, bounds)):
        points = values[bisect_left(steps, start) : bisect_left(steps, end)]  # steps increase
        assert points, f"bucket {i} covers no point"
        low, high = finite_min_max(points)
        assert same(snap["mins"][i], low), (i, snap["mins"][i], low)
        assert same(snap["maxs"][i], high), (i, snap["maxs"][i], high)
        assert same(snap["values"][i], points[-1]), (i, snap["values"][i], points[-1])


# -- short curves: a bucket per point -----------------------------------------------------------


def test_a_short_curve_keeps_every_point() -> None:
    s = Series(10)
    for step, value in [(0, 1.0), (5, 3.0), (9, -2.0)]:
        s.append(step, value)
    assert s.snapshot() == {
        "steps": [0, 5, 9],
        "values": [1.0, 3.0, -2.0],
        "mins": [1.0, 3.0, -2.0],
        "maxs": [1.0, 3.0, -2.0],
    }
    assert s.seen == 3


def test_an_empty_curve_is_empty() -> None:
    assert Series(4).snapshot() == {"steps": [], "values": [], "mins": [], "maxs": []}
    assert Series(4).seen == 0


def test_non_finite_values_are_kept_as_values_but_not_as_extremes() -> None:
    s = Series(10)
    for step, value in enumerate([NAN, INF, 2.0, -INF]):
        s.append(step, value)
    snap = s.snapshot()
    assert math.isnan(snap["values"][0]) and snap["values"][1] == INF and snap["values"][3] == -INF
    assert [math.isnan(v) for v in snap["mins"]] == [True, True, False, True]
    assert snap["maxs"][2] == 2.0


# -- long curves: buckets merge, extremes survive ------------------------------------------------


def test_a_long_curve_stays_bounded_and_spans_the_whole_run() -> None:
    s = Series(100)
    for step in range(100_000):
        s.append(step, math.sin(step / 1000))
    snap = s.snapshot()
    assert len(snap["steps"]) <= 100
    assert snap["steps"][0] == 0 and snap["steps"][-1] > 95_000
    assert min(snap["mins"]) == pytest.approx(-1, abs=1e-3)
    assert max(snap["maxs"]) == pytest.approx(1, abs=1e-3)
    assert snap["values"][-1] == math.sin(99_999 / 1000)  # the latest value, exactly
    assert s.seen == 100_000


def test_a_single_spike_survives_any_downsampling() -> None:
    s = Series(16)
    for step in range(1000):
        s.append(step, 1000.0 if step == 517 else 1.0)
    snap = s.snapshot()
    spiked = [i for i, high in enumerate(snap["maxs"]) if high == 1000.0]
    assert len(spiked) == 1
    i = spiked[0]
    assert snap["steps"][i] <= 517 < (snap["steps"][i + 1] if i + 1 < len(snap["steps"]) else 1000)
    assert max(s.snapshot(3)["maxs"]) == 1000.0


def test_a_bucket_of_only_nan_has_no_extremes_and_merges_cleanly() -> None:
    s = Series(4)
    for step in range(16):
        s.append(step, NAN if step < 8 else float(step))
    snap = s.snapshot()
    check_buckets(snap, list(range(16)), [NAN] * 8 + [float(v) for v in range(8, 16)])
    assert math.isnan(snap["mins"][0]) and math.isnan(snap["maxs"][0])
    assert max(v for v in snap["maxs"] if v == v) == 15.0
    assert min(v for v in snap["mins"] if v == v) == 8.0


def test_snapshot_with_fewer_points_merges_buckets_without_losing_extremes() -> None:
    s = Series(64)
    values = [float((step * 37) % 101) for step in range(64)]
    for step, value in enumerate(values):
        s.append(step, value)
    reduced = s.snapshot(max_points=10)
    assert len(reduced["steps"]) <= 10
    check_buckets(reduced, list(range(64)), values)
    assert s.snapshot()["steps"] == list(range(64))  # the curve itself is untouched


def test_state_round_trips_and_the_copy_goes_on_like_the_original() -> None:
    a = Series(8)
    for step in range(50):
        a.append(step, NAN if step == 49 else float(step % 7))
    state = a.state()
    assert None in state["values"]  # NaN as None: the state is JSON-able
    b = Series.from_state(state)
    for step in range(50, 90):
        a.append(step, float(step))
        b.append(step, float(step))
    snap_a, snap_b = a.snapshot(), b.snapshot()
    assert snap_a["steps"] == snap_b["steps"]
    for key in ("values", "mins", "maxs"):
        assert all(same(x, y) for x, y in zip(snap_a[key], snap_b[key], strict=True)), key
    assert a.seen == b.seen == 90


# -- properties --------------------------------------------------------------------------------------

value_st = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([NAN, INF, -INF]),
)


@settings(max_examples=150, deadline=None)
@given(
    max_points=st.integers(2, 12),
    values=st.lists(value_st, min_size=1, max_size=200),
    snapshots=st.sets(st.integers(0, 199), max_size=6),
    gaps=st.lists(st.integers(1, 5), min_size=200, max_size=200),
)
def test_every_bucket_holds_the_extremes_and_last_value_of_its_points(
    max_points: int, values: list[float], snapshots: set[int], gaps: list[int]
) -> None:
    """Whenever the curve is folded (a snapshot at any point), each bucket is
    exactly the summary of the points between its step and the next one's."""
    steps = []
    step = 0
    for gap in gaps[: len(values)]:
        step += gap
        steps.append(step)
    s = Series(max_points)
    for k, (step, value) in enumerate(zip(steps, values)):
        s.append(step, value)
        if k in snapshots:
            s.snapshot()
    snap = s.snapshot()
    assert 1 <= len(snap["steps"]) <= max_points
    check_buckets(snap, steps, values)
    low, high = finite_min_max(values)
    assert same(min((v for v in snap["mins"] if v == v), default=NAN), low)
    assert same(max((v for v in snap["maxs"] if v == v), default=NAN), high)
    for fewer in (1, 2, max(1, max_points // 3)):
        reduced = s.snapshot(fewer)
        assert len(reduced["steps"]) <= fewer
        check_buckets(reduced, steps, values)
    assert s.seen == len(values)


@settings(max_examples=100, deadline=None)
@given(
    max_points=st.integers(2, 10),
    first=st.lists(st.floats(-100, 100), min_size=0, max_size=60),
    then=st.lists(st.floats(-100, 100), min_size=1, max_size=60),
)
def test_a_curve_rebuilt_from_its_state_continues_exactly(
    max_points: int, first: list[float], then: list[float]
) -> None:
    a = Series(max_points)
    for step, value in enumerate(first):
        a.append(step, value)
    b = Series.from_state(a.state())
    for step, value in enumerate(then, len(first)):
        a.append(step, value)
        b.append(step, value)
    assert a.snapshot() == b.snapshot()
    check_buckets(b.snapshot(), list(range(len(first) + len(then))), first + then)
