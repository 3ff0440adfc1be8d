"""The hub's detectors (stream_hub/core/watch.py), fed the way the hub feeds
them: a RunIndex with a Watch observing events. Plain values, no I/O, no
clock: times are the events' own."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from stream_hub.core.hub import Hub
from stream_hub.core.run_index import RunIndex
from stream_hub.core.watch import LossWindow, Rules, Watch

from .test_run_index import Feed


class Outbox:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def offer(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)


def watched(**rules: Any) -> tuple[RunIndex, Feed, Watch]:
    runs = RunIndex(series_points=100)
    watch = runs.watch = Watch(Rules(**rules))
    return runs, Feed(runs), watch


def raised(watch: Watch) -> list[dict[str, Any]]:
    """The alerts raised so far, as (run, rank, step, data) dicts; taken."""
    out = []
    for event_type, run, step, payload, ts, rank in watch.take():
        assert event_type == "alert" and ts is None
        out.append({"run": run, "rank": rank, "step": step, **orjson.loads(payload)})
    return out


# -- NaN and ±inf ------------------------------------------------------------------------------------------


def test_a_nan_is_alerted_once_until_the_metric_is_finite_again() -> None:
    _runs, feed, watch = watched()
    feed.metric("a", {"loss": 1.0, "acc": 0.5}, step=1)
    assert raised(watch) == []
    feed.metric("a", {"loss": math.nan, "acc": 0.5}, step=2)
    [alert] = raised(watch)
    assert alert["level"] == "error" and alert["source"] == "hub"
    assert (alert["run"], alert["rank"], alert["step"], alert["metric"]) == ("a", None, 2, "loss")
    assert alert["title"] == "loss is NaN" and "step 2" in alert["text"]
    for step in range(3, 10):
        feed.metric("a", {"loss": math.nan, "acc": 0.5}, step=step)
    assert raised(watch) == []  # still NaN: said once
    feed.metric("a", {"loss": 0.9, "acc": 0.5}, step=10)
    feed.metric("a", {"loss": -math.inf, "acc": 0.5}, step=11)
    [again] = raised(watch)
    assert again["title"] == "loss is -inf" and again["step"] == 11


def test_each_metric_and_rank_is_alerted_on_its_own() -> None:
    _runs, feed, watch = watched()
    feed.metric("a", {"loss": math.nan, "acc": math.inf}, step=1, rank=0)
    feed.metric("a", {"loss": math.nan}, step=1, rank=1)
    feed.metric("b", {"loss": math.nan}, step=1)
    alerts = raised(watch)
    assert sorted((a["run"], a["rank"], a["metric"]) for a in alerts) == [
        ("a", 0, "acc"),
        ("a", 0, "loss"),
        ("a", 1, "loss"),
        ("b", None, "loss"),
    ]
    assert next(a for a in alerts if a["metric"] == "acc")["title"] == "acc is +inf"


def test_a_metric_absent_from_an_event_stays_alerted() -> None:
    _runs, feed, watch = watched()
    feed.metric("a", {"loss": math.nan}, step=1)
    feed.metric("a", {"acc": 1.0}, step=2)  # loss not logged: not finite again
    feed.metric("a", {"loss": math.nan}, step=3)
    assert len(raised(watch)) == 1


def test_finite_sums_that_overflow_raise_nothing() -> None:
    runs, feed, watch = watched()
    feed.metric("a", {"x": 1e308, "y": 1e308, "z": -5}, step=1)  # the sum is inf, every value finite
    assert raised(watch) == []
    assert runs.runs["a"].tracks[None].nonfinite is None


# -- a diverging loss --------------------------------------------------------------------------------------


def test_a_loss_above_ten_times_its_median_is_alerted_once_per_episode() -> None:
    _runs, feed, watch = watched()
    for step in range(50):
        feed.metric("a", {"train/Loss": 1.0 + (step % 5) / 10, "acc": 100.0}, step=step)
    assert raised(watch) == []
    median = sorted(1.0 + (s % 5) / 10 for s in range(50))[25]
    feed.metric("a", {"train/Loss": 10 * median}, step=50)  # at the limit: not above it
    assert raised(watch) == []
    feed.metric("a", {"train/Loss": 10 * median + 0.01}, step=51)
    [alert] = raised(watch)
    assert alert["level"] == "warning" and alert["metric"] == "train/Loss" and alert["step"] == 51
    assert alert["title"] == "train/Loss diverging" and "median (1.2)" in alert["text"]
    for step in range(52, 60):  # the episode goes on: no more alerts
        feed.metric("a", {"train/Loss": 1e6}, step=step)
    assert raised(watch) == []
    # Values past the limit did not enter the window: back to normal ends the episode...
    feed.metric("a", {"train/Loss": 1.1}, step=60)
    feed.metric("a", {"train/Loss": 50.0}, step=61)
    # ...and the next divergence is a new one.
    assert [a["step"] for a in raised(watch)] == [61]


def test_no_divergence_before_the_window_is_full() -> None:
    _runs, feed, watch = watched()
    for step in range(49):
        feed.metric("a", {"loss": 0.01}, step=step)
    feed.metric("a", {"loss": 100.0}, step=49)  # the 50th value fills the window
    feed.metric("a", {"loss": 0.01}, step=50)
    assert raised(watch) == []
    feed.metric("a", {"loss": 100.0}, step=51)
    assert len(raised(watch)) == 1


def test_only_metrics_named_loss_are_watched_for_divergence() -> None:
    runs, feed, watch = watched(loss_window=5)
    for step in range(5):
        feed.metric("a", {"acc": 1.0, "grad_norm": 1.0}, step=step)
    feed.metric("a", {"acc": 1000.0, "grad_norm": 1000.0}, step=5)
    assert raised(watch) == []
    assert runs.runs["a"].losses == {}


def test_nan_values_stay_out_of_the_loss_window() -> None:
    runs, feed, watch = watched(loss_window=5)
    for step in range(4):
        feed.metric("a", {"loss": 1.0}, step=step)
    feed.metric("a", {"loss": math.nan}, step=4)
    assert len(runs.runs["a"].losses["loss"].ring) == 4
    assert [a["title"] for a in raised(watch)] == ["loss is NaN"]


def test_a_non_positive_median_never_diverges() -> None:
    _runs, feed, watch = watched(loss_window=5)
    for step in range(5):
        feed.metric("a", {"nll_loss": -2.0}, step=step)
    feed.metric("a", {"nll_loss": 50.0}, step=5)
    assert raised(watch) == []


def test_ranks_share_their_runs_loss_window() -> None:
    _runs, feed, watch = watched(loss_window=4)
    for step in range(2):
        for rank in (0, 1):
            feed.metric("a", {"loss": 1.0}, step=step, rank=rank)
    feed.metric("a", {"loss": 20.0}, step=2, rank=1)
    feed.metric("a", {"loss": 30.0}, step=2, rank=0)
    [alert] = raised(watch)  # once per run and metric
    assert (alert["rank"], alert["step"]) == (1, 2)


def test_the_window_keeps_the_last_values_sorted() -> None:
    window = LossWindow(4)
    for value in (5.0, 1.0, 3.0, 2.0, 4.0, 0.5):
        window.push(value)
    assert window.ring == [4.0, 0.5, 3.0, 2.0] and window.sorted == [0.5, 2.0, 3.0, 4.0]
    assert window.median() == 3.0


# -- a run that failed ---------------------------------------------------------------------------------------


def test_a_failed_or_killed_end_is_alerted_once_per_run_until_it_logs_again() -> None:
    _runs, feed, watch = watched()
    feed.metric("a", {"x": 1.0}, step=7, rank=0)
    feed.metric("a", {"x": 1.0}, step=7, rank=1)
    feed.event("a", "run_end", {"status": "failed"}, rank=0)
    feed.event("a", "run_end", {"status": "killed"}, rank=1)
    [alert] = raised(watch)
    assert (alert["level"], alert["title"], alert["rank"], alert["step"]) == ("error", "run failed", 0, 7)
    feed.event("b", "run_end", {"status": "finished"})
    assert raised(watch) == []
    feed.metric("a", {"x": 1.0}, step=8, rank=0)  # resumed
    feed.event("a", "run_end", {"status": "killed"}, rank=0)
    assert [a["title"] for a in raised(watch)] == ["run killed"]


# -- a silent publisher ----------------------------------------------------------------------------------


def feed_at(feed: Feed, run: str, ts: float, rank: int | None = None) -> None:
    feed.seq += 1
    feed.index.observe(feed.seq, ts, run, None, "metric", {"x": 1.0}, rank)


def test_a_live_publisher_silent_past_the_floor_is_alerted_once() -> None:
    runs, feed, watch = watched(silence_floor=60.0)
    live = {("a", 0), ("a", 1)}
    for i in range(69):
        feed_at(feed, "a", 1000.0 + i, rank=0)
        if i < 10:
            feed_at(feed, "a", 1000.0 + i, rank=1)  # rank 1 goes quiet after 1009
        if i % 5 == 0:
            assert not watch.check_silence(1000.0 + i, runs, live)
    assert not watch.check_silence(1069.0, runs, live)  # 60 s: not past the floor
    assert watch.check_silence(1069.5, runs, live)
    [alert] = raised(watch)
    assert (alert["run"], alert["rank"], alert["level"], alert["title"]) == (
        "a",
        1,
        "warning",
        "rank 1 silent",
    )
    assert "usually every 1 s" in alert["text"] and "while its process lives" in alert["text"]
    assert not watch.check_silence(1100.0, runs, live)  # once per silence
    live = {("a", 1)}  # rank 0's process ended: it is not watched any more
    feed_at(feed, "a", 1201.0, rank=1)
    assert not watch.check_silence(1202.0, runs, live)
    assert watch.check_silence(1201.0 + 61.0, runs, live)  # a new silence
    assert [a["rank"] for a in raised(watch)] == [1]


def test_a_slow_publisher_gets_ten_times_its_usual_interval() -> None:
    runs, feed, watch = watched(silence_floor=60.0)
    live = {("slow", None)}
    for i in range(10):
        feed_at(feed, "slow", 1000.0 + 30 * i)
        watch.check_silence(1000.0 + 30 * i + 1, runs, live)
    last = 1000.0 + 30 * 9
    assert not watch.check_silence(last + 299.0, runs, live)  # 10 x 30 s
    assert watch.check_silence(last + 301.0, runs, live)
    assert raised(watch)[0]["title"] == "run silent"


def test_silence_is_only_watched_in_live_ended_or_known_publishers() -> None:
    runs, feed, watch = watched(silence_floor=10.0)
    feed_at(feed, "gone", 1000.0)
    feed_at(feed, "done", 1000.0)
    feed.event("done", "run_end", {"status": "finished"})
    live = {("done", None), ("never-logged", None), ("other-rank", 3)}
    feed_at(feed, "other-rank", 1000.0, rank=0)
    assert not watch.check_silence(5000.0, runs, live)  # "gone" is not live: its process ended
    assert raised(watch) == []


def test_the_check_interval_follows_the_floor() -> None:
    assert Rules().check_interval == 5.0
    assert Rules(silence_floor=0.4).check_interval == pytest.approx(0.1)


# -- alerts committed, and no loop ---------------------------------------------------------------------


def test_committed_alerts_are_counted_summarised_and_handed_to_the_outbox() -> None:
    runs, feed, watch = watched()
    outbox = watch.outbox = Outbox()
    feed.event("a", "alert", {"level": "warning", "title": "slow", "text": "t", "source": "user"}, rank=2)
    feed.event("a", "alert", {"level": "error", "title": "boom", "text": "t", "source": "hub"})
    feed.event("a", "alert", {"level": "info", "title": "fyi", "text": "t", "source": "user"})
    assert watch.counts == {("warning", "user"): 1, ("error", "hub"): 1, ("info", "user"): 1}
    assert runs.runs["a"].describe()["alerts"] == {"count": 3, "level": "error", "title": "fyi"}
    first = outbox.alerts[0]
    assert first["type"] == "alert" and first["run"] == "a" and first["rank"] == 2
    assert first["text"] == "[warning] a: slow — t" and first["data"]["title"] == "slow"
    assert raised(watch) == []  # an alert is never looked at by the rules


def test_the_hub_commits_its_alerts_right_after_the_event_that_raised_them() -> None:
    hub = Hub(history_size=100)
    for step in range(3):
        hub.log({"loss": 1.0}, step=step, run="r")
    seq = hub.log({"loss": math.nan}, step=3, run="r")
    after = hub.log({"loss": math.nan}, step=4, run="r")
    assert seq is not None and after is not None
    events, _ = hub.history(0, types=["alert"])
    [alert] = [orjson.loads(e) for e in events]
    assert alert["seq"] == seq + 1 and after == seq + 2  # numbered right after, before the next event
    assert alert["data"]["source"] == "hub" and alert["run"] == "r" and alert["step"] == 3
    assert hub.watch.counts == {("error", "hub"): 1}
    assert hub.runs.runs["r"].alerts == 1


def test_a_replayed_history_raises_nothing() -> None:
    hub = Hub(history_size=100)
    outbox = hub.watch.outbox = Outbox()
    data = orjson.dumps({"level": "error", "title": "t", "text": "x", "source": "hub"})
    hub.runs.replay(
        [
            (1, 1.0, "r", 1, "metric", {"loss": math.nan}, None),
            (2, 2.0, "r", 1, "alert", data, None),
        ]
    )
    assert hub.watch.raised == [] and outbox.alerts == [] and hub.watch.counts == {}
    assert hub.runs.runs["r"].alerts == 1 and hub.runs.watch is hub.watch


def test_an_index_without_a_watch_watches_nothing() -> None:
    runs = RunIndex(series_points=100)
    Feed(runs).metric("a", {"loss": math.nan})
    assert runs.runs["a"].tracks[None].nonfinite is None and runs.runs["a"].losses == {}


def test_restored_runs_get_empty_loss_windows() -> None:
    source = RunIndex(series_points=100)
    Feed(source).metric("a", {"loss": 1.0, "acc": 1.0}, rank=0)
    runs, _feed, _watch = watched()
    runs.restore(source.state())
    assert list(runs.runs["a"].losses) == ["loss"]


def test_a_metric_name_longer_than_an_alerts_fields_still_alerts() -> None:
    _runs, feed, watch = watched()
    name = "loss/" + "x" * 300  # log() takes it; an alert's metric holds 200 characters
    feed.metric("a", {name: math.nan}, step=1)
    [alert] = raised(watch)
    assert alert["metric"] == name[:200] and len(alert["title"]) == 200


def test_alerts_from_unchecked_sources_are_counted_under_known_labels() -> None:
    runs, feed, watch = watched()
    feed.event("a", "alert", {"level": "catastrophic", "title": "t", "text": "x", "source": "martians"})
    feed.event("a", "alert", {"title": "t"})
    assert watch.counts == {("warning", "user"): 2}
    assert runs.runs["a"].alert_level == "warning"


def test_names_an_alert_cannot_carry_never_break_the_commit() -> None:
    hub = Hub(history_size=100)
    hub.log({"": math.nan, "bad\udcff": math.nan, "ok": math.nan}, step=1, run="r")
    events, _ = hub.history(0, types=["alert"])
    alerts = [orjson.loads(e) for e in events]
    titles = sorted(a["data"]["title"] for a in alerts if a["type"] == "alert")
    assert titles == [" is NaN", "ok is NaN"]  # the lone surrogate's alert is left out
    assert hub.log({"x": 1.0}, run="r") is not None
