"""What an overloaded commit may not leave out of the run curves
(stream_hub/core/extremes.py): every extreme, every event that is not a metric."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_hub.core.extremes import MAX_SEGMENTS, must_observe
from stream_hub.core.intake import FIELDS


def flat(events: list[tuple[str, str | None, int | None, Any]]) -> list[Any]:
    """(type, run, rank, payload) events as an intake's flat batch."""
    batch: list[Any] = []
    for seq, (event_type, run, rank, payload) in enumerate(events, 1):
        batch += [seq, float(seq), event_type, run, seq, payload, rank]
    return batch


def picked_values(batch: list[Any], picks: set[int], name: str) -> list[float]:
    return [batch[k * FIELDS + 5][name] for k in sorted(picks) if name in batch[k * FIELDS + 5]]


def test_the_batches_min_and_max_of_each_metric_are_picked() -> None:
    values = [1.0 + (i % 7) / 100 for i in range(1000)]
    values[417], values[733] = 60.0, -3.0
    batch = flat([("metric", "r", None, {"loss": v, "acc": 0.5 + i / 10_000}) for i, v in enumerate(values)])
    picks, per_run = must_observe(batch, 1000, budget=2)  # one stretch per curve
    assert {417, 733} <= picks
    assert 0 in picks and 999 in picks  # acc's min and max
    assert per_run == {"r": 1000}
    assert len(picks) <= 4


def test_each_stretch_keeps_its_own_extremes_within_the_budget() -> None:
    n = 1600
    values = [0.0] * n
    spikes = [k * 100 + 37 for k in range(MAX_SEGMENTS)]  # one spike per stretch, each smaller
    for rank, k in enumerate(spikes):
        values[k] = 100.0 - rank
    batch = flat([("metric", "r", None, {"x": v}) for v in values])
    picks, _ = must_observe(batch, n, budget=10_000)
    assert set(spikes) <= picks
    small, _ = must_observe(batch, n, budget=4)  # two stretches fit
    assert spikes[0] in small and len(small) <= 4


def test_curves_are_per_run_and_rank() -> None:
    events = []
    for i in range(400):
        rank = i % 4
        events.append(("metric", "job", rank, {"loss": 10.0 + rank if i // 4 == 50 else 1.0}))
    events.append(("metric", "other", None, {"loss": 2.0}))
    batch = flat(events)
    picks, per_run = must_observe(batch, len(events), budget=8)
    assert {200, 201, 202, 203} <= picks  # each rank's spike, though rank 3's tops them all
    assert 400 in picks
    assert per_run == {"job": 400, "other": 1}


def test_every_event_that_is_not_a_metric_is_picked() -> None:
    events: list[tuple[str, str | None, int | None, Any]] = [("metric", "r", None, {"x": 1.0})] * 300
    events[10] = ("config", "r", None, b'{"lr":0.1}')
    events[150] = ("run_end", "r", None, b'{"status":"failed"}')
    events[290] = ("log", None, None, b'{"text":"hi"}')
    batch = flat(events)
    picks, per_run = must_observe(batch, len(events), budget=100)
    assert {10, 150, 290} <= picks
    assert per_run == {"r": 297}


def test_a_metric_some_events_lack_still_has_its_extremes_picked() -> None:
    events = []
    for i in range(500):
        metrics = {"loss": 1.0}
        if i % 100 == 0:
            metrics["eval"] = 5.0 if i == 300 else 0.5
        events.append(("metric", "r", None, metrics))
    picks, _ = must_observe(flat(events), 500, budget=2)
    assert 300 in picks


def test_non_finite_values_are_picked_and_left_out_of_the_extremes() -> None:
    values = [1.0] * 200
    values[5] = math.nan
    values[50] = math.inf
    values[120] = 9.0
    values[121] = -9.0
    batch = flat([("metric", "r", None, {"x": v}) for v in values])
    picks, _ = must_observe(batch, 200, budget=2)
    assert 5 in picks  # the first non-finite value: a NaN alert, a break in the curve
    assert {120, 121} <= picks


def test_wide_events_are_read_as_rows_with_the_same_answer() -> None:
    events = []
    for i in range(300):
        metrics = {f"m{k}": float((i * (k + 3)) % 101) for k in range(12)}
        events.append(("metric", "r", None, metrics))
    batch = flat(events)
    picks, _ = must_observe(batch, 300, budget=24)
    for k in range(12):
        name = f"m{k}"
        got = picked_values(batch, picks, name)
        column = [e[3][name] for e in events]
        assert max(column) in got and min(column) in got


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from([None, 0, 1]),
            st.floats(allow_nan=True, allow_infinity=True, width=32),
        ),
        min_size=1,
        max_size=300,
    ),
    st.integers(1, 200),
)
def test_every_curves_finite_min_and_max_are_picked(
    events: list[tuple[str, Any, float]], budget: int
) -> None:
    batch = flat([("metric", run, rank, {"v": value}) for run, rank, value in events])
    picks, per_run = must_observe(batch, len(events), budget)
    for owner in {(run, rank) for run, rank, _ in events}:
        finite = [
            (v, k) for k, (run, rank, v) in enumerate(events) if (run, rank) == owner and math.isfinite(v)
        ]
        if not finite:
            continue
        chosen = [v for v, k in finite if k in picks]
        assert max(v for v, _ in finite) in chosen and min(v for v, _ in finite) in chosen
    assert sum(per_run.values()) == len(events)
