"""What is known about each run (stream_hub/core/run_index.py): counts,
latest values, curves per rank, caps, how a run ended, hyper-parameters."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from stream_hub.core.run_index import MAX_CONFIG_KEYS, RunIndex


class Feed:
    """Feeds a RunIndex events the way the hub does, numbering them."""

    def __init__(self, index: RunIndex) -> None:
        self.index = index
        self.seq = 0

    def metric(
        self, run: str | None, metrics: dict[str, float], step: int | None = None, rank: int | None = None
    ) -> None:
        self.seq += 1
        self.index.observe(self.seq, float(self.seq), run, step, "metric", metrics, rank)

    def event(self, run: str | None, event_type: str, data: Any, rank: int | None = None) -> None:
        self.seq += 1
        payload = orjson.dumps(data)  # non-metric events arrive pre-encoded
        self.index.observe(self.seq, float(self.seq), run, None, event_type, payload, rank)


def index(**kwargs: Any) -> tuple[RunIndex, Feed]:
    runs = RunIndex(series_points=kwargs.pop("series_points", 100), **kwargs)
    return runs, Feed(runs)


# -- counts and latest values ---------------------------------------------------------------------


def test_a_run_counts_its_events_and_keeps_its_latest_values() -> None:
    runs, feed = index()
    feed.metric("a", {"loss": 2.0, "acc": 0.1}, step=1)
    feed.metric("a", {"loss": 1.0}, step=2)
    feed.event("a", "log", {"text": "hi"})
    summary = runs.runs["a"]
    assert (summary.events, summary.metric_events, summary.last_step, summary.last_seq) == (3, 2, 2, 3)
    assert summary.last_ts == 3.0
    assert summary.latest == {"loss": 1.0, "acc": 0.1}
    assert summary.metric_names() == ["acc", "loss"]
    assert summary.series["loss"].snapshot()["values"] == [2.0, 1.0]


def test_events_without_a_run_are_not_summarised() -> None:
    runs, feed = index()
    feed.metric(None, {"x": 1.0})
    feed.event(None, "gap", {"lost": 3})
    assert runs.runs == {}


def test_metric_events_without_a_step_are_numbered_per_rank() -> None:
    runs, feed = index()
    for _ in range(3):
        feed.metric("a", {"x": 1.0})
    feed.metric("a", {"x": 1.0}, rank=1)
    assert runs.runs["a"].series["x"].snapshot()["steps"] == [1, 2, 3]
    assert runs.runs["a"].tracks[1].series["x"].snapshot()["steps"] == [1]


def test_describe_is_the_rest_summary() -> None:
    runs, feed = index()
    feed.metric("a", {"x": 1.0}, step=4, rank=1)
    feed.event("a", "config", {"lr": 0.1})
    assert runs.runs["a"].describe() == {
        "run": "a",
        "last_step": 4,
        "metrics": ["x"],
        "events": 2,
        "metric_events": 1,
        "first_ts": 1.0,
        "last_ts": 2.0,
        "last_seq": 2,
        "ranks": [1],
        "rank_last_ts": {"1": 1.0},
        "ended": None,
        "config": {"lr": 0.1},
        "alerts": None,
        "dropped": {"forwarder": 0, "hub": 0, "store": 0, "curve": 0, "sampled": 0},
    }


# -- ranks -----------------------------------------------------------------------------------------------


def test_each_rank_has_its_own_curves_and_the_newest_value_wins_overall() -> None:
    runs, feed = index()
    feed.metric("a", {"loss": 5.0}, step=1, rank=1)
    feed.metric("a", {"loss": 3.0}, step=1, rank=0)
    feed.metric("a", {"loss": 4.0, "lr": 0.1}, step=2, rank=1)
    summary = runs.runs["a"]
    assert summary.ranks == [0, 1]
    assert summary.series == {}  # nothing without a rank
    assert summary.tracks[0].series["loss"].snapshot()["values"] == [3.0]
    assert summary.tracks[1].series["loss"].snapshot()["values"] == [5.0, 4.0]
    assert summary.latest == {"loss": 4.0, "lr": 0.1}  # rank 1 published last
    feed.metric("a", {"loss": 2.5}, step=2, rank=0)
    assert summary.latest == {"loss": 2.5, "lr": 0.1}


def test_new_series_counts_the_curves_an_event_would_add() -> None:
    runs, feed = index()
    assert runs.new_series("a", ["x", "y"]) == 2
    feed.metric("a", {"x": 1.0})
    assert runs.new_series("a", ["x", "y"]) == 1
    assert runs.new_series("a", ["x", "y"], rank=0) == 2  # another rank, other curves
    assert runs.new_series("b", iter(["x"])) == 1


# -- how a run ends ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "ended"),
    [
        ({}, "finished"),
        ({"status": "finished"}, "finished"),
        ({"status": "failed"}, "failed"),
        ({"status": "killed"}, "killed"),
        ({"status": "exploded"}, "finished"),  # not a state: finished all the same
    ],
)
def test_run_end_says_how_a_run_ended(data: dict[str, Any], ended: str) -> None:
    runs, feed = index()
    feed.metric("a", {"x": 1.0})
    assert runs.runs["a"].ended is None
    feed.event("a", "run_end", data)
    assert runs.runs["a"].ended == ended


def test_a_run_of_many_ranks_ends_when_every_rank_has_ended_with_the_worst_state() -> None:
    runs, feed = index()
    for rank in (0, 1, 2):
        feed.metric("a", {"x": 1.0}, rank=rank)
    feed.event("a", "run_end", {"status": "finished"}, rank=0)
    feed.event("a", "run_end", {"status": "failed"}, rank=2)
    assert runs.runs["a"].ended is None  # rank 1 still runs
    feed.event("a", "run_end", {"status": "finished"}, rank=1)
    assert runs.runs["a"].ended == "failed"
    feed.event("a", "run_end", {"status": "killed"}, rank=0)
    assert runs.runs["a"].ended == "killed"


def test_logging_after_the_end_means_running_again() -> None:
    runs, feed = index()
    feed.metric("a", {"x": 1.0})
    feed.event("a", "run_end", {"status": "failed"})
    feed.metric("a", {"x": 2.0})
    assert runs.runs["a"].ended is None


def test_a_run_end_that_is_not_an_object_is_ignored() -> None:
    runs, feed = index()
    feed.metric("a", {"x": 1.0})
    feed.event("a", "run_end", ["finished"])
    runs.observe(99, 1.0, "a", None, "run_end", b"{not json", None)
    assert runs.runs["a"].ended is None
    assert runs.runs["a"].events == 3  # still counted as events of the run


def test_a_run_end_given_as_a_dict_counts_too() -> None:
    runs, _feed = index()
    runs.observe(1, 1.0, "a", None, "run_end", {"status": "killed"}, None)
    assert runs.runs["a"].ended == "killed"


# -- hyper-parameters ---------------------------------------------------------------------------------


def test_config_events_merge_into_the_runs_hyper_parameters() -> None:
    runs, feed = index()
    feed.event("a", "config", {"lr": 0.1, "batch": 32})
    feed.event("a", "config", {"lr": 0.2})
    assert runs.runs["a"].config == {"lr": 0.2, "batch": 32}
    assert runs.runs["a"].metric_names() == []


def test_config_beyond_the_cap_is_streamed_but_not_kept() -> None:
    runs, feed = index()
    feed.event("a", "config", {f"k{i}": i for i in range(MAX_CONFIG_KEYS)})
    feed.event("a", "config", {"one_more": 1})
    assert len(runs.runs["a"].config) == MAX_CONFIG_KEYS and "one_more" not in runs.runs["a"].config
    assert runs.runs["a"].events == 2


# -- caps ---------------------------------------------------------------------------------------------------


def test_a_new_run_past_max_runs_is_kept_and_the_least_recently_updated_forgotten() -> None:
    # Issue 22 M1: the run past the cap was accepted but never tracked.
    runs, feed = index(max_runs=2)
    for run in ("a", "b"):
        feed.metric(run, {"x": 1.0})
    feed.metric("a", {"x": 2.0})  # "b" is now the least recently updated
    feed.metric("c", {"x": 1.0})
    assert sorted(runs.runs) == ["a", "c"]
    assert runs.runs["a"].metric_events == 2 and runs.runs["c"].metric_names() == ["x"]
    assert runs.runs_evicted == 1
    assert runs.series_count == 2  # the forgotten run's curves make room too


def test_finished_runs_are_forgotten_before_running_ones() -> None:
    runs, feed = index(max_runs=3)
    for run in ("old", "done", "new"):
        feed.metric(run, {"x": 1.0})
    feed.event("done", "run_end", {"status": "finished"})
    feed.metric("old", {"x": 2.0})  # running, and updated after "done" ended
    feed.event("new", "run_end", {"status": "failed"})  # finished after "done": kept longer
    feed.metric("next", {"x": 1.0})
    assert sorted(runs.runs) == ["new", "next", "old"]
    feed.metric("later", {"x": 1.0})
    assert sorted(runs.runs) == ["later", "next", "old"]
    feed.metric("last", {"x": 1.0})  # no finished run left: the least recently updated goes
    assert sorted(runs.runs) == ["last", "later", "next"]
    assert runs.runs_evicted == 3


def test_a_flood_of_new_runs_evicts_a_hundredth_at_a_time() -> None:
    runs, feed = index(max_runs=1000)
    for i in range(1000):
        feed.metric(f"r{i}", {"x": 1.0})
    feed.metric("one-more", {"x": 1.0})
    assert len(runs.runs) == 991 and runs.runs_evicted == 10
    assert "r9" not in runs.runs and "r10" in runs.runs and "one-more" in runs.runs
    for i in range(9):
        feed.metric(f"more{i}", {"x": 1.0})
    assert runs.runs_evicted == 10  # no scan until the cap is reached again


def test_metrics_past_max_metrics_are_dropped_and_counted() -> None:
    runs, feed = index(max_metrics=2)
    feed.metric("a", {"m1": 1.0, "m2": 2.0, "m3": 3.0})
    summary = runs.runs["a"]
    assert summary.metric_names() == ["m1", "m2"]
    assert runs.points_dropped == 1
    assert summary.latest == {"m1": 1.0, "m2": 2.0}  # no latest value without a curve
    feed.metric("a", {"m1": 5.0, "m3": 6.0})
    assert summary.latest == {"m1": 5.0, "m2": 2.0}
    assert runs.points_dropped == 2
    assert runs.series_count == 2


def test_curves_past_max_series_over_all_runs_are_dropped() -> None:
    runs, feed = index(max_series=3)
    feed.metric("a", {"x": 1.0, "y": 1.0})
    feed.metric("b", {"x": 1.0, "y": 1.0})  # one more curve fits, not two
    feed.metric("a", {"x": 2.0, "y": 2.0}, rank=1)  # a rank's curves count too
    assert runs.series_count == 3
    assert runs.runs["b"].metric_names() == ["x"]
    assert runs.runs["a"].tracks[1].series == {}
    assert runs.points_dropped == 3
    assert runs.runs["a"].series["y"].snapshot()["values"] == [1.0]


def test_values_left_out_of_the_curves_are_counted_on_their_run() -> None:
    runs, feed = index(max_metrics=2)
    feed.metric("a", {"m1": 1.0, "m2": 2.0, "m3": 3.0, "m4": 4.0})
    feed.metric("b", {"m1": 1.0})
    assert runs.runs["a"].describe()["dropped"]["curve"] == 2
    assert runs.runs["b"].describe()["dropped"]["curve"] == 0


def test_drops_are_counted_per_run_and_cause_even_for_a_run_never_seen() -> None:
    runs, feed = index()
    feed.metric("a", {"x": 1.0})
    runs.dropped("store", {"a": 5, "ghost": 2})
    runs.dropped("store", {"a": 1})
    runs.sampled({"a": 7})
    assert runs.runs["a"].describe()["dropped"] == {
        "forwarder": 0,
        "hub": 0,
        "store": 6,
        "curve": 0,
        "sampled": 7,
    }
    assert runs.runs["a"].events == 8  # the sampled-out events still happened
    assert runs.runs["ghost"].describe()["dropped"]["store"] == 2  # listed: its events were lost
    assert runs.drop_totals == {"store": 8, "sampled": 7}


def test_forwarder_drops_are_each_sources_own_total() -> None:
    runs, _feed = index()
    runs.forwarder_dropped("a", "src1", 100)
    runs.forwarder_dropped("a", "src1", 100)  # the same total again (a resend): nothing more
    runs.forwarder_dropped("a", "src1", 150)
    runs.forwarder_dropped("a", "src2", 10)
    runs.forwarder_dropped("a", "src1", 120)  # an older message after a newer one
    assert runs.runs["a"].describe()["dropped"]["forwarder"] == 160
    assert runs.drop_totals["forwarder"] == 160
    state = orjson.loads(orjson.dumps(runs.state()))  # a new host: the same sources report again
    copy = RunIndex(series_points=8)
    copy.restore(state)
    copy.forwarder_dropped("a", "src1", 150)
    assert copy.runs["a"].describe()["dropped"]["forwarder"] == 160
    assert copy.drop_totals["forwarder"] == 160


def test_clear_forgets_every_run_and_frees_the_curve_budget() -> None:
    runs, feed = index(max_series=1)
    feed.metric("a", {"x": 1.0})
    runs.clear()
    assert runs.runs == {} and runs.series_count == 0
    feed.metric("b", {"y": 1.0})
    assert runs.runs["b"].metric_names() == ["y"]


# -- state and restore -----------------------------------------------------------------------------------


def filled() -> RunIndex:
    runs, feed = index(series_points=8)
    for step in range(40):
        feed.metric("a", {"loss": 1.0 / (step + 1), "bad": math.nan}, step=step)
        feed.metric("b", {"acc": step / 40}, step=step, rank=step % 2)
    feed.event("a", "config", {"lr": 0.1})
    feed.event("b", "run_end", {"status": "failed"}, rank=0)
    feed.event("b", "run_end", {"status": "finished"}, rank=1)
    return runs


def test_state_is_json_and_restore_gives_back_the_same_runs() -> None:
    runs = filled()
    state = orjson.loads(orjson.dumps(runs.state()))  # through the wire, as a hand-over sends it
    copy = RunIndex(series_points=8)
    copy.restore(state)
    for name in ("a", "b"):
        assert copy.runs[name].describe() == runs.runs[name].describe()
    assert copy.runs["b"].ended == "failed"
    assert (
        copy.runs["b"].tracks[1].series["acc"].snapshot() == runs.runs["b"].tracks[1].series["acc"].snapshot()
    )
    assert math.isnan(copy.runs["a"].latest["bad"])  # NaN travelled as null
    assert copy.series_count == runs.series_count == 4


def test_state_of_named_runs_only() -> None:
    runs = filled()
    assert [r["run"] for r in runs.state(["b", "missing"])] == ["b"]


def test_restore_replaces_or_keeps_and_adds() -> None:
    source = filled()
    runs, feed = index()
    feed.metric("a", {"other": 1.0})
    feed.metric("c", {"z": 1.0})
    runs.restore(source.state(), keep=True)
    assert sorted(runs.runs) == ["a", "b", "c"]
    assert runs.runs["a"].metric_names() == ["other"]  # its own "a" stays
    runs.restore(source.state())
    assert sorted(runs.runs) == ["a", "b"]
    assert runs.runs["a"].metric_names() == ["bad", "loss"]


def test_restore_stays_within_the_caps() -> None:
    source = filled()
    runs = RunIndex(series_points=8, max_runs=1)
    runs.restore(source.state())
    assert list(runs.runs) == ["a"]
    tight = RunIndex(series_points=8, max_series=3)
    tight.restore(source.state())
    assert tight.series_count == 3
