"""Where events enter (stream_hub/core/intake.py): numbering, batching, who
commits, backlog shedding, and validation in the caller's thread — with a list
as the sink and a plain object as the notifier."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from stream_hub.core.intake import FIELDS, Intake


class Sink:
    """Remembers every batch committed, as lists of per-event tuples."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[Any, ...]]] = []

    def __call__(self, batch: list[Any], count: int) -> None:
        assert len(batch) == count * FIELDS
        self.batches.append([tuple(batch[k : k + FIELDS]) for k in range(0, len(batch), FIELDS)])

    @property
    def events(self) -> list[tuple[Any, ...]]:
        return [event for batch in self.batches for event in batch]

    @property
    def seqs(self) -> list[int]:
        return [event[0] for event in self.events]


class Notifier:
    """A notifier whose thread never comes: commits wait for the test."""

    def __init__(self, closed: bool = False) -> None:
        self.closed = closed  # its loop has closed: wake raises
        self.wakes = 0
        self.urgent = 0
        self.commits = 0

    def wake(self) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.wakes += 1

    def wake_urgent(self) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.urgent += 1

    def committed(self) -> None:
        self.commits += 1


def intake(**kwargs: Any) -> tuple[Intake, Sink]:
    sink = Sink()
    return Intake(sink, **kwargs), sink


# -- numbering -------------------------------------------------------------------------------------


def test_events_are_numbered_from_one_in_submission_order() -> None:
    it, sink = intake()
    assert it.last_seq == 0
    assert it.log({"x": 1.0}) == 1
    assert it.publish("note", {"a": 1}) == 2
    assert it.submit("note", None, None, b"{}") == 3
    assert it.submit_many([("note", "r", None, b"1", None, None)] * 3) == [4, 5, 6]
    assert it.last_seq == 6
    assert sink.seqs == [1, 2, 3, 4, 5, 6]


def test_a_flat_event_holds_seq_ts_type_run_step_payload_rank() -> None:
    it, sink = intake(run="job", rank=3)
    before = time.time()
    it.log({"loss": 0.5}, step=7)
    it.publish("note", {"k": [1]}, run="other", step=2)
    it.submit("note", None, None, b"{}", ts=12.5, rank=None)
    (seq, ts, kind, run, step, payload, rank), note, given = sink.events
    assert (seq, kind, run, step, payload, rank) == (1, "metric", "job", 7, {"loss": 0.5}, 3)
    assert before <= ts <= time.time()
    assert note[2:] == ("note", "other", 2, b'{"k":[1]}', 3)
    assert given[1] == 12.5 and given[6] is None  # a given ts and rank are kept


def test_not_numbered_here_returns_none_but_still_numbers_the_batch() -> None:
    it, sink = intake(numbered=False)
    assert it.log({"x": 1.0}) is None
    assert it.publish("note", {}) is None
    assert sink.seqs == [1, 2]  # the sink still gets a sequence (the forwarder's own)


def test_continue_from_moves_numbering_forward_only() -> None:
    it, _sink = intake()
    it.continue_from(41)
    assert it.log({"x": 1.0}) == 42
    it.continue_from(10)
    assert it.log({"x": 1.0}) == 43


# -- validation in the caller's thread -------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda it: it.log({"loss": "0.1"}),
        lambda it: it.log({"loss": None}),
        lambda it: it.log({3: 1.0}),
        lambda it: it.log([1, 2]),
        lambda it: it.log({"x": 1.0}, step="3"),
        lambda it: it.log({"x": 1.0}, step=True),
        lambda it: it.log({"x": 1.0}, run=5),
        lambda it: it.log({"x": 1.0}, run=""),
        lambda it: it.log({"x": 1.0}, run="r" * 201),
        lambda it: it.publish("gap", {}),
        lambda it: it.publish("two words", {}),
        lambda it: it.publish("note", {"bad": {1, 2}}),
        lambda it: it.publish("note", {}, step=1.5),
        lambda it: it.publish("metric", {"x": "y"}),
    ],
)
def test_invalid_events_raise_in_the_caller_and_take_no_seq(call: Any) -> None:
    it, sink = intake()
    with pytest.raises(TypeError):
        call(it)
    assert it.last_seq == 0 and sink.events == []
    assert it.log({"x": 1.0}) == 1


def test_log_copies_and_normalises_the_metrics() -> None:
    it, sink = intake()
    notifier = Notifier()
    it.attach(notifier)
    metrics: dict[str, Any] = {"flag": True, "nested": {"a": 1}, "f": 2.5}
    it.log(metrics)
    metrics["f"] = 99.0
    it.commit()
    assert sink.events[0][5] == {"flag": 1, "nested/a": 1, "f": 2.5}


def test_publish_of_a_metric_is_a_logged_metric() -> None:
    it, sink = intake()
    it.publish("metric", {"x": 1.0}, run="r", step=3)
    assert sink.events[0][2:6] == ("metric", "r", 3, {"x": 1.0})


def test_publish_keeps_a_snapshot_of_the_data() -> None:
    it, sink = intake()
    it.attach(Notifier())
    data = {"text": "before"}
    it.publish("note", data)
    data["text"] = "after"
    it.commit()
    assert orjson.loads(sink.events[0][5]) == {"text": "before"}


# -- runs this process logged to -------------------------------------------------------------------


def test_the_runs_logged_to_are_noted_until_forgotten() -> None:
    it, _sink = intake(run="job")
    it.log({"x": 1.0})
    it.log({"x": 1.0}, run="a")
    it.publish("note", {}, run="b")
    it.submit("note", "c", None, b"{}")  # submitted for someone else: not this process's run
    assert it.local_runs == {"job", "a", "b"}
    it.finished_runs.add("a")
    it.forget_runs()
    assert it.local_runs == set() and it.finished_runs == set()
    it.log({"x": 1.0}, run="a")  # the same run as last time is noted again
    assert it.local_runs == {"a"}


def test_a_run_ended_and_logged_to_again_is_running_again() -> None:
    it, _sink = intake(run="job")
    it.log({"x": 1.0})
    it.publish("run_end", {"status": "finished"})
    it.ended("job")
    it.publish("note", {})  # not a metric: still ended
    assert it.finished_runs == {"job"}
    it.log({"x": 2.0})  # the same run as the last log(): noted again all the same
    assert it.finished_runs == set() and it.local_runs == {"job"}


# -- who commits ------------------------------------------------------------------------------------


def test_without_a_notifier_every_submission_commits_inline() -> None:
    it, sink = intake()
    it.log({"x": 1.0})
    it.log({"x": 2.0})
    assert [len(batch) for batch in sink.batches] == [1, 1]
    assert it.commit() == 0  # nothing left pending


def test_with_a_notifier_events_wait_for_its_commit_and_wake_it_once_per_batch() -> None:
    it, sink = intake()
    notifier = Notifier()
    it.attach(notifier)
    assert it.notifier is notifier
    for i in range(5):
        it.log({"x": float(i)})
    it.submit_many([("note", None, None, b"{}", None, None)] * 2)
    assert sink.events == [] and notifier.wakes == 1
    assert it.commit() == 7 and notifier.commits == 1
    assert [len(batch) for batch in sink.batches] == [7]
    assert it.commit() == 0 and notifier.commits == 1  # an empty commit tells nobody
    it.log({"x": 1.0})
    assert notifier.wakes == 2  # a new batch, a new wake-up


class EchoSink(Sink):
    """A sink that raises an event of its own for each ``raise`` event (as
    the hub raises alerts), through ``submit_from_sink``."""

    intake: Intake

    def __call__(self, batch: list[Any], count: int) -> None:
        super().__call__(batch, count)
        raised = [("echo", None, None, b"{}", None, None) for e in self.batches[-1] if e[2] == "raise"]
        if raised:
            self.intake.submit_from_sink(raised)


@pytest.mark.parametrize("attached", [False, True])
def test_events_the_sink_raises_are_committed_by_the_same_commit(attached: bool) -> None:
    sink = EchoSink()
    it = sink.intake = Intake(sink)
    notifier = Notifier()
    if attached:
        it.attach(notifier)
    it.publish("raise", {})  # inline without a notifier: no deadlock on the commit lock
    it.log({"x": 1.0})
    if attached:
        assert it.commit() == 3 and notifier.commits == 1
    assert [[e[2] for e in batch] for batch in sink.batches] == (
        [["raise", "metric"], ["echo"]] if attached else [["raise"], ["echo"], ["metric"]]
    )
    assert sink.seqs == [1, 2, 3]
    assert [e[2] for e in sink.events if e[0] == 3] == (["echo"] if attached else ["metric"])
    assert it.commit() == 0


def test_detach_commits_everything_pending_and_goes_back_inline() -> None:
    it, sink = intake()
    notifier = Notifier()
    it.attach(notifier)
    it.log({"x": 1.0})
    it.log({"x": 2.0})
    it.detach(notifier)
    assert sink.seqs == [1, 2] and it.notifier is None
    it.log({"x": 3.0})
    assert sink.seqs == [1, 2, 3]  # inline again


def test_detaching_a_notifier_that_is_no_longer_attached_leaves_the_new_one() -> None:
    it, sink = intake()
    old, new = Notifier(), Notifier()
    it.attach(old)
    it.attach(new)
    it.log({"x": 1.0})
    assert (old.wakes, new.wakes) == (0, 1)
    it.detach(old)
    assert it.notifier is new
    assert sink.seqs == [1]  # what was pending is committed all the same


def test_a_notifier_whose_loop_has_closed_gets_its_batch_committed_inline() -> None:
    it, sink = intake()
    it.attach(Notifier(closed=True))
    assert it.log({"x": 1.0}) == 1
    assert sink.seqs == [1]
    it.log({"x": 2.0})
    assert sink.seqs == [1, 2]


def test_set_sink_sends_later_batches_elsewhere_and_changes_numbering() -> None:
    it, first = intake()
    second = Sink()
    it.log({"x": 1.0})
    it.set_sink(second, numbered=False)
    assert it.log({"x": 2.0}) is None
    assert (first.seqs, second.seqs) == ([1], [2])


def test_reinit_after_fork_forgets_the_parents_batch_and_notifier() -> None:
    it, sink = intake()
    it.attach(Notifier())
    it.log({"x": 1.0})
    it.reinit_after_fork()
    assert it.notifier is None
    assert it.commit() == 0
    assert it.log({"x": 2.0}) == 2  # numbering goes on; commits inline
    assert sink.seqs == [2]


# -- backlog ---------------------------------------------------------------------------------------


def test_a_backlog_past_the_limit_asks_once_for_an_urgent_commit() -> None:
    it, _sink = intake(pending_limit=10)
    notifier = Notifier()
    it.attach(notifier)
    for i in range(10):
        it.log({"x": float(i)})
    assert notifier.urgent == 0
    for i in range(20):
        it.log({"x": float(i)})
    assert notifier.urgent == 1  # asked once, not per event
    it.commit()
    for i in range(11):
        it.log({"x": float(i)})
    assert notifier.urgent == 2  # asked again for the next backlog


def test_a_backlog_nobody_commits_sheds_the_oldest_events() -> None:
    it, sink = intake(pending_limit=10)
    notifier = Notifier()
    it.attach(notifier)
    for i in range(40):
        it.log({"x": float(i)})
    assert it.shed == 0  # up to four times the limit is kept
    it.log({"x": 40.0})
    assert it.shed == 21  # past it: cut back to twice the limit
    it.submit_many([("note", None, None, b"{}", None, None)] * 100)
    assert it.commit() == 20
    assert sink.seqs == list(range(122, 142))  # the newest, in order, numbers unchanged
    assert it.shed == 121
    assert it.last_seq == 141


def test_shedding_works_with_a_closing_loop() -> None:
    it, _sink = intake(pending_limit=5)
    notifier = Notifier()
    it.attach(notifier)
    it.log({"x": 0.0})
    notifier.closed = True  # its loop closes with a batch pending: nobody commits
    for i in range(100):
        it.log({"x": float(i)})
    assert it.shed > 0 and it.commit() <= 4 * 5


# -- values JSON can carry (issue 22 M6) -------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda it: it.log({"x": 1.0}, step=2**63),
        lambda it: it.log({"x": 1.0}, step=-(2**63) - 1),
        lambda it: it.log({"x": 1.0, "huge": 10**400}),
        lambda it: it.log({"x": 1.0, "huge": -(10**400)}, step=3),
        lambda it: it.publish("note", {"text": "hi"}, step=2**64),
        lambda it: it.publish("metric", {"huge": 10**400}),
    ],
)
def test_values_json_cannot_carry_raise_value_error_in_the_caller(call: Any) -> None:
    it, sink = intake()
    with pytest.raises(ValueError):
        call(it)
    assert it.last_seq == 0 and sink.events == []
    assert it.log({"x": 1.0}) == 1


def test_an_int_beyond_64_bits_in_data_raises_type_error_in_the_caller() -> None:
    it, sink = intake()
    with pytest.raises(TypeError, match="64-bit"):
        it.publish("note", {"count": 2**64})
    assert it.last_seq == 0 and sink.events == []


def test_log_takes_the_64_bit_limits_and_sends_wider_ints_as_floats() -> None:
    it, sink = intake()
    it.log({"a": 2**63 - 1, "b": 2**70}, step=2**63 - 1)
    it.log({"a": 1}, step=-(2**63))
    (_, _, _, _, step, payload, _), (_, _, _, _, low, _, _) = sink.events
    assert step == 2**63 - 1 and low == -(2**63)
    assert payload == {"a": 2**63 - 1, "b": float(2**70)}
    assert type(payload["a"]) is int and type(payload["b"]) is float
