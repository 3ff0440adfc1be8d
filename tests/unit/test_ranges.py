"""A step range of one curve (stream_hub/transports/ranges.py): the ring's
points bucketed when the ring holds the range, the series' buckets when it
does not or when they are fine enough; values read from events encoded or not."""

from __future__ import annotations

import math
from array import array
from typing import Any

import orjson
import pytest

from stream_hub.core.hub import Hub
from stream_hub.transports.ranges import RingCurves, _fewer_buckets, _finite, _read_value, range_body
from stream_hub.transports.run_views import NotFound


def loss(step: int) -> float:
    return float((step * 7919) % 1000)  # jumps around: extremes land anywhere in a bucket


def hub_with(steps: range, history: int = 1000, series_points: int = 10, **metrics: Any) -> Hub:
    hub = Hub(history_size=history, series_points=series_points)
    for step in steps:
        hub.log({"loss": loss(step), **metrics}, step=step, run="a")
    return hub


def zoom(hub: Hub, first: int, last: int, max_points: int, **kwargs: Any) -> dict[str, Any]:
    summary = hub.runs.runs[kwargs.pop("run", "a")]
    return range_body(
        RingCurves(hub),
        summary,
        kwargs.pop("metric", "loss"),
        kwargs.pop("rank", None),
        first,
        last,
        max_points,
    )


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b))


# -- from the ring ------------------------------------------------------------------------------------


def test_a_zoom_the_ring_holds_is_every_point_when_few_enough() -> None:
    hub = hub_with(range(500))
    body = zoom(hub, 100, 199, max_points=200)
    assert body["source"] == "ring"
    assert (body["run"], body["metric"], body["from_step"], body["to_step"]) == ("a", "loss", 100, 199)
    assert body["steps"] == list(range(100, 200))
    assert body["values"] == body["mins"] == body["maxs"] == [loss(s) for s in range(100, 200)]
    assert len(body["ts"]) == 100 and body["ts"] == sorted(body["ts"])
    assert body["points_seen"] == 500


def test_a_zoom_bucketed_by_equal_step_width_keeps_each_buckets_extremes() -> None:
    hub = hub_with(range(500))
    body = zoom(hub, 100, 199, max_points=30)  # width ceil(100 / 30) = 4 steps
    assert body["source"] == "ring"
    assert len(body["steps"]) <= 30
    assert body["steps"] == list(range(100, 200, 4))
    for i, start in enumerate(body["steps"]):
        points = [loss(s) for s in range(start, min(start + 4, 200))]
        assert body["mins"][i] == min(points) and body["maxs"][i] == max(points)
        assert body["values"][i] == points[-1]


def test_values_read_from_encoded_events_equal_those_read_from_payloads() -> None:
    hub = hub_with(range(300), other=1.0)
    hub.log({"loss": math.nan}, step=300, run="a")
    before = zoom(hub, 50, 300, max_points=1000)
    hub.encode_all()  # payloads dropped: values now come out of the JSON
    after = zoom(hub, 50, 300, max_points=1000)
    assert after["source"] == before["source"] == "ring"
    for key in ("steps", "values", "mins", "maxs"):
        assert same(after[key], before[key]), key
    assert math.isnan(after["values"][-1]) and math.isnan(after["maxs"][-1])


def test_events_without_the_metric_or_a_step_are_not_points() -> None:
    hub = Hub(history_size=1000, series_points=4)
    for step in range(100):
        hub.log({"loss": loss(step)} if step % 2 else {"acc": 1.0}, step=step, run="a")
    hub.log({"loss": 5.0}, run="a")  # no step: no place on a step axis
    hub.log({"loss": 6.0}, step=50, run="b")  # another run
    body = zoom(hub, 0, 99, max_points=1000)
    assert body["steps"] == list(range(1, 100, 2))
    hub.encode_all()
    assert zoom(hub, 0, 99, max_points=1000)["steps"] == list(range(1, 100, 2))


def test_a_run_that_went_back_to_earlier_steps_is_sorted_by_step() -> None:
    hub = Hub(history_size=1000, series_points=4)
    for step in [*range(0, 50), *range(20, 40)]:  # a restart from a checkpoint
        hub.log({"loss": float(step)}, step=step, run="a")
    body = zoom(hub, 10, 45, max_points=1000)
    assert body["source"] == "ring"
    assert body["steps"] == sorted(body["steps"])
    assert sorted(set(body["steps"])) == list(range(10, 46))
    assert len(body["steps"]) == 36 + 20


def test_the_same_curves_follow_the_ring_as_it_moves() -> None:
    hub = Hub(history_size=100, series_points=4)
    curves = RingCurves(hub)
    for step in range(100):
        hub.log({"loss": loss(step)}, step=step, run="a")
    summary = hub.runs.runs["a"]
    first = range_body(curves, summary, "loss", None, 0, 99, 1000)
    assert first["steps"] == list(range(100))
    for step in range(100, 150):
        hub.log({"loss": loss(step)}, step=step, run="a")
    body = range_body(curves, summary, "loss", None, 60, 149, 1000)
    assert body["source"] == "ring" and body["steps"] == list(range(60, 150))
    assert body["values"] == [loss(s) for s in range(60, 150)]
    track = curves.track("a", None)
    assert track.seqs[0] == hub.oldest  # what left the ring was dropped


# -- from the series ----------------------------------------------------------------------------------


def test_a_range_older_than_the_ring_comes_from_the_series() -> None:
    hub = hub_with(range(500), history=50, series_points=10)
    body = zoom(hub, 0, 200, max_points=100)
    assert body["source"] == "series"
    whole = hub.runs.runs["a"].series["loss"].snapshot()
    assert body["steps"] == [s for s in whole["steps"] if s <= 200]  # the bucket holding 0 on
    assert "ts" not in body


def test_series_buckets_fine_enough_are_served_as_they_are_and_merged_past_max_points() -> None:
    hub = hub_with(range(500), series_points=1000)
    body = zoom(hub, 100, 199, max_points=150)  # 100 buckets: at least half of 150
    assert body["source"] == "series"
    assert body["steps"] == list(range(100, 200))
    merged = zoom(hub, 100, 199, max_points=20)
    assert merged["source"] == "series" and len(merged["steps"]) <= 20
    assert max(merged["maxs"]) == max(loss(s) for s in range(100, 200))
    assert min(merged["mins"]) == min(loss(s) for s in range(100, 200))


# -- ranks and errors ---------------------------------------------------------------------------------


def test_one_rank_or_every_rank() -> None:
    hub = Hub(history_size=1000, series_points=4)
    for step in range(20):
        for rank in (0, 1):
            hub.submit("metric", "a", step, {"loss": float(step + 100 * rank)}, rank=rank)
    hub.commit()
    one = zoom(hub, 5, 9, max_points=100, rank=1)
    assert one["rank"] == 1 and one["values"] == [105.0, 106.0, 107.0, 108.0, 109.0]
    both = zoom(hub, 5, 9, max_points=100)
    assert set(both["ranks"]) == {"0", "1"}
    assert both["ranks"]["0"]["values"] == [5.0, 6.0, 7.0, 8.0, 9.0]


def test_what_does_not_exist_is_not_found_with_what_does() -> None:
    hub = hub_with(range(10))
    with pytest.raises(NotFound) as missing_metric:
        zoom(hub, 0, 9, max_points=10, metric="nope")
    assert missing_metric.value.extra == {"metrics": ["loss"]}
    with pytest.raises(NotFound) as missing_rank:
        zoom(hub, 0, 9, max_points=10, rank=3)
    assert missing_rank.value.extra == {"ranks": []}


# -- the pure helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metrics", "key", "expected"),
    [
        ({"loss": 1.5}, "loss", 1.5),
        ({"xloss": 9, "loss": 2}, "loss", 2.0),  # not the end of a longer name
        ({'a"loss': 9, "loss": 3}, "loss", 3.0),  # nor after an escaped quote
        ({"loss": "NaN"}, "loss", math.nan),
        ({"loss": "Infinity"}, "loss", math.inf),
        ({"loss": "-Infinity", "b": 1}, "loss", -math.inf),
        ({"loss": 1e300}, "loss", 1e300),
        ({"other": 1}, "loss", None),
        ({"loss": "text"}, "loss", None),
    ],
)
def test_read_value_finds_a_metric_in_an_encoded_event(
    metrics: dict[str, Any], key: str, expected: float | None
) -> None:
    body = orjson.dumps({"seq": 1, "type": "metric", "run": "loss", "step": 1, "metrics": metrics})
    values = array("d", [0.0])
    found = _read_value(body, orjson.dumps(key) + b":", values, 0)
    assert found is (expected is not None)
    if expected is not None:
        assert same([values[0]], [expected])


def test_read_value_of_an_event_without_metrics() -> None:
    assert not _read_value(b'{"seq":1,"data":{"loss":1}}', b'"loss":', array("d", [0.0]), 0)


def test_finite_min_and_max_ignore_non_finite_values() -> None:
    assert _finite([3.0, 1.0, 2.0], min) == 1.0
    assert _finite([math.nan, 5.0, math.inf, -1.0], max) == 5.0
    assert math.isnan(_finite([math.nan, math.inf], min))


def test_fewer_buckets_merges_k_at_a_time() -> None:
    curve = {
        "steps": [0, 10, 20, 30, 40],
        "values": [1.0, 2.0, 3.0, 4.0, 5.0],
        "mins": [1.0, math.nan, -3.0, 4.0, 0.5],
        "maxs": [1.0, math.nan, 30.0, 4.0, 5.0],
    }
    merged = _fewer_buckets(curve, 2)  # k = 3
    assert merged["steps"] == [0, 30]
    assert merged["values"] == [3.0, 5.0]
    assert merged["mins"] == [-3.0, 0.5] and merged["maxs"] == [30.0, 5.0]
