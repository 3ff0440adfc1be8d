"""The I/O-free core on its own: no sockets, no event loop."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_hub.core.hub import MAX_CHUNK_BYTES, MAX_CHUNK_EVENTS, SSE, WS, Hub
from stream_hub.core.intake import FIELDS
from stream_hub.events import encode_event, ws_text_frame

from ..clients import sse_events, ws_events


def events_of(chunk: bytes, fmt: int = SSE) -> list[dict[str, Any]]:
    """Decode a chunk the hub produced back into event dicts."""
    if fmt == SSE:
        return sse_events(chunk)
    if fmt == WS:
        return ws_events(chunk)
    return [json.loads(b) for b in chunk]


def read_all(hub: Hub, cursor: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        chunk, n = hub.read(cursor)
        if not chunk:
            return out
        decoded = events_of(chunk, cursor.fmt)
        assert len(decoded) == n
        out += decoded


# -- publishing -------------------------------------------------------------------


def test_log_numbers_events_from_one_and_commits_inline_without_a_loop() -> None:
    hub = Hub(100)
    assert hub.log({"loss": 0.5}, step=1, run="a") == 1
    assert hub.log({"loss": 0.25}, step=2) == 2
    assert hub.head == 2
    events = read_all(hub, hub.open_cursor(0))
    assert [e["seq"] for e in events] == [1, 2]
    first = events[0]
    assert first["type"] == "metric" and first["run"] == "a" and first["step"] == 1
    assert first["metrics"] == {"loss": 0.5} and first["epoch"] == hub.epoch
    assert isinstance(first["ts"], float)
    assert events[1]["run"] == "default"


def test_log_rejects_non_numbers_in_the_callers_thread() -> None:
    hub = Hub(10)
    for bad in ({"loss": "0.1"}, {"loss": None}, {"loss": [1]}, {"loss": 1j}, {3: 1.0}, [1, 2]):
        with pytest.raises(TypeError):
            hub.log(bad)
    with pytest.raises(TypeError):
        hub.log({"x": 1}, step="3")
    with pytest.raises(TypeError):
        hub.log({"x": 1}, run=5)
    assert hub.last_seq == 0  # nothing was numbered


def test_log_accepts_bool_and_float_like_scalars() -> None:
    class Scalar:
        def __float__(self) -> float:
            return 2.5

    hub = Hub(10)
    hub.log({"flag": True, "s": Scalar(), "i": 3}, step=True.__index__())
    (event,) = read_all(hub, hub.open_cursor(0))
    assert event["metrics"] == {"flag": 1, "s": 2.5, "i": 3}


class HeldNotifier:
    """A notifier whose loop never comes: commits wait for the test's ``commit()``."""

    def __init__(self) -> None:
        self.wakes = 0
        self.urgent = 0
        self.commits = 0

    def wake(self) -> None:
        self.wakes += 1

    def wake_urgent(self) -> None:
        self.urgent += 1

    def committed(self) -> None:
        self.commits += 1


def held(hub: Hub) -> HeldNotifier:
    notifier = HeldNotifier()
    hub.attach(notifier)
    return notifier


def test_log_copies_the_metrics_dict() -> None:
    hub = Hub(10)
    metrics = {"loss": 1.0}
    notifier = held(hub)  # hold the commit back
    hub.log(metrics)
    metrics["loss"] = 99.0
    hub.detach(notifier)
    (event,) = read_all(hub, hub.open_cursor(0))
    assert event["metrics"]["loss"] == 1.0


def test_non_finite_values_travel_as_strings_that_parse_back() -> None:
    hub = Hub(10)
    hub.log({"a": math.nan, "b": math.inf, "c": -math.inf, "d": 1.5})
    event, *alerts = read_all(hub, hub.open_cursor(0))
    assert event["metrics"] == {"a": "NaN", "b": "Infinity", "c": "-Infinity", "d": 1.5}
    assert [a["data"]["title"] for a in alerts] == ["a is NaN", "b is +inf", "c is -inf"]  # the hub's
    assert math.isnan(float(event["metrics"]["a"])) and float(event["metrics"]["b"]) == math.inf


def test_publish_copies_the_data_and_refuses_what_is_not_json_in_the_caller() -> None:
    hub = Hub(10)
    notifier = held(hub)
    data = {"text": "original", "nested": {"n": 1}}
    seq = hub.publish("log", data)
    data["text"] = "MUTATED"
    data["nested"]["n"] = 2
    with pytest.raises(TypeError, match="JSON"):
        hub.publish("log", {"bad": {1, 2}})  # a set is not JSON
    hub.detach(notifier)
    (event,) = read_all(hub, hub.open_cursor(0))
    assert event["seq"] == seq and event["data"] == {"text": "original", "nested": {"n": 1}}
    assert hub.last_seq == seq  # the refused event took no seq


def test_unencodable_event_is_rejected_as_a_gap_that_keeps_seq_contiguous() -> None:
    hub = Hub(10)
    hub.publish("log", {"text": "ok"})
    hub.submit("log", None, None, {"bad": {1, 2}})  # a source that did not pre-encode
    hub.publish("log", {"text": "after"})
    events = read_all(hub, hub.open_cursor(0))
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[1]["type"] == "gap" and events[1]["data"]["reason"] == "rejected"
    assert hub.counters.rejected == 1


def test_an_int_too_large_for_a_float_past_validation_is_a_gap_not_a_stuck_ring() -> None:
    """log() refuses it (issue 22 M6); should a source that skips validation
    submit one, it takes its seq as a gap and the events after it still go out."""
    hub = Hub(10)
    hub.publish("log", {"text": "ok"})
    hub.submit("metric", "r", 1, {"x": 0.5, "huge": 10**400})
    hub.log({"x": 0.25}, step=2, run="r")
    events = read_all(hub, hub.open_cursor(0))
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[1]["type"] == "gap" and events[1]["data"]["reason"] == "rejected"
    assert events[2]["metrics"] == {"x": 0.25}
    assert read_all(hub, hub.open_cursor(0)) == events  # read again: the same, nothing raised
    assert hub.counters.rejected == 1


def test_reserved_and_malformed_types_are_refused() -> None:
    hub = Hub(10)
    for bad in ("gap", "shutdown", "error", "", "two words", "a\nb", 5):
        with pytest.raises(TypeError):
            hub.publish(bad, {})


def test_wake_is_called_once_per_batch() -> None:
    hub = Hub(100)
    notifier = held(hub)
    for i in range(50):
        hub.log({"x": i})
    assert notifier.wakes == 1
    assert hub.commit() == 50 and notifier.commits == 1
    hub.log({"x": 1})
    assert notifier.wakes == 2


def test_concurrent_submitters_get_unique_ordered_seqs() -> None:
    hub = Hub(100_000)
    held(hub)
    seqs: list[list[int]] = [[] for _ in range(8)]

    def worker(i: int) -> None:
        for step in range(2000):
            seqs[i].append(hub.log({"x": step}, step=step, run=f"t{i}"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hub.commit()
    flat = sorted(s for per in seqs for s in per)
    assert flat == list(range(1, 16001))
    for per in seqs:
        assert per == sorted(per)
    events = read_all(hub, hub.open_cursor(0))
    assert [e["seq"] for e in events] == list(range(1, 16001))
    for i in range(8):
        steps = [e["step"] for e in events if e["run"] == f"t{i}"]
        assert steps == list(range(2000))


# -- cursors, resume, gaps -----------------------------------------------------------


def test_resume_gives_exactly_the_later_events() -> None:
    hub = Hub(100)
    for i in range(10):
        hub.log({"x": i})
    assert [e["seq"] for e in read_all(hub, hub.open_cursor(7))] == [8, 9, 10]
    assert read_all(hub, hub.open_cursor(10)) == []
    assert read_all(hub, hub.open_cursor(None)) == []


def test_resume_from_before_history_announces_the_gap() -> None:
    hub = Hub(5)
    for i in range(12):
        hub.log({"x": i})
    events = read_all(hub, hub.open_cursor(3))
    gap = events[0]
    assert gap["type"] == "gap" and gap["seq"] == 7
    assert gap["data"] == {"lost": 4, "from": 4, "to": 7, "reason": "behind"}
    assert [e["seq"] for e in events[1:]] == [8, 9, 10, 11, 12]
    assert hub.counters.dropped == 4


def test_zero_means_everything_still_in_history() -> None:
    hub = Hub(5)
    for i in range(12):
        hub.log({"x": i})
    assert [e["seq"] for e in read_all(hub, hub.open_cursor(0))] == [8, 9, 10, 11, 12]


def test_resume_from_another_epoch_replays_history_after_a_gap() -> None:
    hub = Hub(5)
    for i in range(3):
        hub.log({"x": i})
    events = read_all(hub, hub.open_cursor(2, epoch="someoneelse"))
    assert events[0]["type"] == "gap" and events[0]["data"]["reason"] == "epoch"
    assert [e["seq"] for e in events[1:]] == [1, 2, 3]


def test_resume_from_beyond_the_head_says_so_and_follows_new_events() -> None:
    hub = Hub(5)
    for i in range(3):
        hub.log({"x": i})
    cursor = hub.open_cursor(500)
    (gap,) = read_all(hub, cursor)
    assert gap["type"] == "gap" and gap["seq"] == 3  # where this hub stands, never 0
    assert gap["data"] == {"lost": 0, "reason": "ahead", "since": 500, "last_seq": 3}
    new = hub.log({"x": 9})
    assert [e["seq"] for e in read_all(hub, cursor)] == [new]


def test_slow_subscriber_skips_ahead_while_others_keep_up() -> None:
    hub = Hub(8)
    slow = hub.open_cursor(None)
    fast = hub.open_cursor(None)
    for i in range(20):
        hub.log({"x": i})
        assert [e["seq"] for e in read_all(hub, fast)] == [i + 1]
    events = read_all(hub, slow)
    assert events[0]["type"] == "gap" and events[0]["data"]["lost"] == 12
    assert [e["seq"] for e in events[1:]] == list(range(13, 21))


def test_filters_by_run_and_type_let_server_events_through() -> None:
    hub = Hub(100)
    hub.log({"x": 1}, run="a")
    hub.log({"x": 2}, run="b")
    hub.publish("log", {"t": 1}, run="a")
    hub.submit("shutdown", None, None, {"reason": "stop"})
    by_run = read_all(hub, hub.open_cursor(0, runs=["a"]))
    assert [e["seq"] for e in by_run] == [1, 3, 4]
    by_type = read_all(hub, hub.open_cursor(0, types=["log"]))
    assert [e["type"] for e in by_type] == ["log", "shutdown"]


def test_formats_carry_the_same_event() -> None:
    hub = Hub(100)
    hub.log({"loss": 0.1}, step=3, run="r")
    hub.publish("text", {"s": "x" * 70_000})  # long enough for the 8-byte WS length
    sse = read_all(hub, hub.open_cursor(0, fmt=SSE))
    ws = read_all(hub, hub.open_cursor(0, fmt=WS))
    assert sse == ws
    history, more = hub.history(0)
    assert [json.loads(b) for b in history] == sse and not more
    assert ws_text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"


def test_history_limit_and_filters() -> None:
    hub = Hub(100)
    for i in range(10):
        hub.log({"x": i}, run="a" if i % 2 else "b")
    events, more = hub.history(0, limit=3)
    assert [json.loads(e)["seq"] for e in events] == [1, 2, 3] and more
    events, more = hub.history(3, runs=["a"])
    assert [json.loads(e)["seq"] for e in events] == [4, 6, 8, 10] and not more


def test_chunks_are_bounded_and_shared_between_cursors() -> None:
    hub = Hub(10_000)
    for i in range(5000):
        hub.log({"x": i})
    a, b = hub.open_cursor(0), hub.open_cursor(0)
    chunk_a, n_a = hub.read(a)
    chunk_b, n_b = hub.read(b)
    assert n_a == n_b and chunk_a is chunk_b  # encoded once, sent to both
    assert n_a <= MAX_CHUNK_EVENTS and len(chunk_a) <= MAX_CHUNK_BYTES
    assert hub.read(a, limit=100)[1] == 100  # the event bound
    total = n_a + 100
    while (n := hub.read(a)[1]) > 0:
        total += n
    assert total == 5000


def test_one_large_event_still_makes_a_chunk() -> None:
    hub = Hub(100)
    hub.publish("blob", {"s": "x" * (MAX_CHUNK_BYTES * 2)})
    chunk, n = hub.read(hub.open_cursor(0))
    assert n == 1 and len(chunk) > MAX_CHUNK_BYTES


# -- property-based: resume and gap ------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 30),
    published=st.integers(0, 80),
    since=st.integers(0, 100),
)
def test_resume_is_exact_or_announces_exactly_what_was_lost(
    capacity: int, published: int, since: int
) -> None:
    hub = Hub(capacity)
    for i in range(published):
        hub.log({"x": i})
    events = read_all(hub, hub.open_cursor(since))
    seqs = [e["seq"] for e in events if e["type"] != "gap"]
    gaps = [e for e in events if e["type"] == "gap"]
    oldest = max(1, published - capacity + 1)
    if since > published:  # ahead of this hub: a gap that says where it stands
        assert len(gaps) == 1 and gaps[0]["data"]["reason"] == "ahead"
        assert gaps[0]["seq"] == published and seqs == []
    elif since == 0 or since >= oldest - 1:
        assert gaps == [] and seqs == list(range(since + 1 if since else oldest, published + 1))
    else:
        assert len(gaps) == 1 and gaps[0]["data"]["lost"] == oldest - 1 - since
        assert gaps[0]["seq"] == oldest - 1
        assert seqs == list(range(oldest, published + 1))
    all_seqs = [e["seq"] for e in events]
    assert all_seqs == sorted(set(all_seqs))  # strictly increasing


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 20),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("publish"), st.integers(1, 15)),
            st.tuples(st.just("read"), st.integers(0, 3)),
            st.tuples(st.just("resume"), st.integers(0, 3)),
        ),
        max_size=60,
    ),
)
def test_any_interleaving_keeps_every_subscriber_ordered_and_gapless(
    capacity: int, ops: list[tuple[str, int]]
) -> None:
    """Each subscriber sees strictly increasing seqs; every hole is announced by a
    gap event whose counts add up exactly."""
    hub = Hub(capacity)
    cursors = [hub.open_cursor(0, fmt=fmt) for fmt in (SSE, WS, SSE, WS)]
    seen: list[list[dict[str, Any]]] = [[] for _ in cursors]
    # Resuming from 0 asks for "everything still in history": where that starts.
    first = [1 for _ in cursors]
    for op, arg in ops:
        if op == "publish":
            for i in range(arg):
                hub.log({"x": i}, run="r")
        elif op == "read":
            seen[arg] += read_one(hub, cursors[arg])
        else:
            last = seen[arg][-1]["seq"] if seen[arg] else 0
            if last == 0:
                first[arg] = hub.oldest
            cursors[arg] = hub.open_cursor(last, fmt=cursors[arg].fmt)
    for i, cursor in enumerate(cursors):
        seen[i] += read_all(hub, cursor)
        expected = first[i]
        previous = 0
        for event in seen[i]:
            assert event["seq"] > previous
            previous = event["seq"]
            if event["type"] == "gap":
                assert event["data"]["from"] == expected
                expected = event["data"]["to"] + 1
            else:
                assert event["seq"] == expected
                expected += 1
        assert expected == hub.head + 1  # nothing silently missing at the end


def read_one(hub: Hub, cursor: Any) -> list[dict[str, Any]]:
    chunk, _ = hub.read(cursor)
    return events_of(chunk, cursor.fmt) if chunk else []


# -- property-based: filtered subscribers --------------------------------------------------------

FILTERS: list[tuple[list[str] | None, list[str] | None]] = [
    (None, None),
    (["a"], None),
    (None, ["note"]),
    (["b"], ["metric"]),
]


class Unencodable:
    """Accepted by publish, refused by the JSON encoder at commit: a 'rejected' gap."""


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 25),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("log"), st.sampled_from(["a", "b"]), st.integers(1, 8)),
            st.tuples(st.just("note"), st.sampled_from(["a", "b"]), st.just(1)),
            st.tuples(st.just("bad"), st.just(""), st.just(1)),
            st.tuples(st.just("read"), st.integers(0, 3), st.just(1)),
            st.tuples(st.just("resume"), st.integers(0, 3), st.just(1)),
        ),
        max_size=60,
    ),
)
def test_filtered_subscribers_get_exactly_their_events_or_a_gap(
    capacity: int, ops: list[tuple[str, Any, int]]
) -> None:
    """Each filtered subscriber sees strictly increasing seqs, only events its
    filter wants (plus gap/shutdown), and every wanted event that was not
    announced lost by a gap."""
    hub = Hub(capacity)
    committed: dict[int, tuple[str, str | None]] = {}  # seq -> (type, run)
    cursors = [
        hub.open_cursor(0, fmt=SSE if i % 2 == 0 else WS, runs=runs, types=types)
        for i, (runs, types) in enumerate(FILTERS)
    ]
    seen: list[list[dict[str, Any]]] = [[] for _ in cursors]
    start = [1 for _ in cursors]  # seqs before this are not owed to the subscriber

    def read(i: int) -> None:
        while True:
            chunk, n = hub.read(cursors[i])
            if not chunk:
                return
            events = events_of(chunk, cursors[i].fmt)
            assert len(events) == n
            seen[i].extend(events)

    for op, arg, count in ops:
        if op == "log":
            for k in range(count):
                committed[hub.log({"x": k}, run=arg)] = ("metric", arg)
        elif op == "note":
            committed[hub.publish("note", {"k": 1}, run=arg)] = ("note", arg)
        elif op == "bad":
            # A source that did not encode its data first (publish() refuses it).
            committed[hub.submit("note", "a", None, Unencodable())] = ("gap", None)
        elif op == "read":
            read(arg)
        else:
            last = seen[arg][-1]["seq"] if seen[arg] else 0
            if last == 0:  # "everything still in history": nothing older is owed
                start[arg] = hub.oldest
            runs, types = FILTERS[arg]
            cursors[arg] = hub.open_cursor(last, fmt=cursors[arg].fmt, runs=runs, types=types)
    for i, (runs, types) in enumerate(FILTERS):
        read(i)
        seqs = [e["seq"] for e in seen[i]]
        assert seqs == sorted(set(seqs)), f"subscriber {i}: not strictly increasing: {seqs}"
        lost: set[int] = set()
        delivered: set[int] = set()
        for event in seen[i]:
            if event["type"] == "gap" and event["data"].get("reason") == "behind":
                lost.update(range(event["data"]["from"], event["data"]["to"] + 1))
                continue
            delivered.add(event["seq"])
            kind, run = committed[event["seq"]]
            assert event["type"] == kind and event["run"] == run
            if kind != "gap":
                assert runs is None or run in runs, (i, event)
                assert types is None or kind in types, (i, event)
        owed = {
            seq
            for seq, (kind, run) in committed.items()
            if seq >= start[i]
            and (runs is None or run is None or run in runs)
            and (types is None or kind in types or kind == "gap")
        }
        assert delivered == owed - lost, (
            f"subscriber {i}: missing {sorted(owed - lost - delivered)}, "
            f"unexpected {sorted(delivered - (owed - lost))}"
        )


# -- whole-run curves ----------------------------------------------------------------


def test_run_index_tracks_latest_and_counts() -> None:
    hub = Hub(10)
    hub.log({"loss": 2.0, "acc": 0.1}, step=1, run="a")
    hub.log({"loss": 1.0}, step=2, run="a")
    hub.publish("log", {"t": "x"}, run="a")
    summary = hub.runs.runs["a"].describe()
    assert summary["last_step"] == 2 and summary["metrics"] == ["acc", "loss"]
    assert summary["events"] == 3 and summary["metric_events"] == 2
    assert hub.runs.runs["a"].latest == {"loss": 1.0, "acc": 0.1}


def test_an_overloaded_commit_keeps_the_ring_exact_and_the_curves_whole() -> None:
    hub = Hub(100)
    held(hub)  # the loop is busy: everything lands in one batch
    for step in range(1000):
        for run in ("a", "b"):
            hub.log({"loss": 1000.0 - step}, step=step, run=run)
    assert hub.commit() == 2000
    events = read_all(hub, hub.open_cursor(0))
    assert [e["seq"] for e in events] == list(range(1901, 2001))  # exactly the newest 100
    for run in ("a", "b"):
        summary = hub.runs.runs[run]
        curve = summary.series["loss"].snapshot()
        assert curve["steps"][0] == 0  # the curve still starts at the first step
        assert summary.last_step == 999 and summary.latest == {"loss": 1.0}
        assert len(curve["steps"]) >= 40  # sampled, not emptied


def test_a_spike_in_an_overloaded_commit_reaches_its_bucket_of_the_curve() -> None:
    hub = Hub(1000, series_points=100)
    held(hub)
    for step in range(100_000):  # one commit of 100 times the ring
        loss = 60.0 if step == 40_000 else -2.0 if step == 77_000 else 1.0 + step % 11 / 100
        hub.log({"loss": loss, "acc": 0.5}, step=step, run="a")
    assert hub.commit() == 100_001  # and the alert the spike raised: the detectors saw it too
    summary = hub.runs.runs["a"]
    assert summary.alerts == 1
    curve = summary.series["loss"].snapshot()
    for step, extreme, side in ((40_000, 60.0, "maxs"), (77_000, -2.0, "mins")):
        bucket = max(i for i, first in enumerate(curve["steps"]) if first <= step)
        assert curve[side][bucket] == extreme
        for max_points in (7, 20, 50):
            small = summary.series["loss"].snapshot(max_points)
            at = max(i for i, first in enumerate(small["steps"]) if first <= step)
            assert small[side][at] == extreme
    described = summary.describe()
    assert described["metric_events"] == 100_000  # counted, if not all drawn
    assert 0 < described["dropped"]["sampled"] < 100_000
    assert hub.drop_counts()["sampled"] == described["dropped"]["sampled"]


def test_events_the_intake_forgets_are_counted_on_their_runs() -> None:
    hub = Hub(10)
    notifier = held(hub)
    for i in range(300_000):
        hub.log({"x": i}, run="a" if i % 3 else "b")
    hub.detach(notifier)
    shed = hub.intake.shed
    dropped = {run: hub.runs.runs[run].describe()["dropped"]["hub"] for run in ("a", "b")}
    assert shed > 0 and sum(dropped.values()) == shed
    assert dropped["a"] > dropped["b"] > 0
    assert hub.drop_counts()["hub"] == shed


def test_a_stuck_loop_cannot_grow_the_backlog_without_bound() -> None:
    hub = Hub(10)
    notifier = held(hub)
    for i in range(300_000):
        hub.log({"x": i})
    assert notifier.urgent == 1  # asked once for an immediate commit
    assert len(hub.intake._pending) // FIELDS <= 4 * 50_000 + 1
    assert hub.intake.shed > 0
    hub.detach(notifier)
    assert hub.head == 300_000


# -- the archive seam: events beyond the ring -------------------------------------------------


class MemoryArchive:
    """Keeps every committed event (its JSON), as a durable store would."""

    def __init__(self, keep_from: int = 1) -> None:
        self.events: dict[int, tuple[str, str | None, int | None, bytes]] = {}
        self.keep_from = keep_from  # what it has lost before this seq

    def append(self, batch: list[Any], count: int, epoch: str) -> None:
        for k in range(count):
            seq, ts, kind, run, step, payload, rank = batch[k * FIELDS : (k + 1) * FIELDS]
            body = encode_event(seq, epoch, ts, kind, run, step, payload, rank)
            self.events[seq] = (kind, run, rank, body)

    async def read(self, first: int, last: int, max_bytes: int) -> list[Any]:
        out, size = [], 0
        for seq in range(max(first, self.keep_from), last + 1):
            if seq in self.events:
                kind, run, rank, body = self.events[seq]
                out.append((seq, kind, run, rank, body))
                size += len(body)
                if size >= max_bytes:
                    break
        return out


async def _drain(hub: Hub, cursor: Any) -> list[dict[str, Any]]:
    from stream_hub.transports.params import next_chunk

    out: list[dict[str, Any]] = []
    while True:
        got = await next_chunk(hub, cursor)
        assert got is not None
        chunk, _ = got
        if not chunk:
            return out
        out += events_of(chunk, cursor.fmt)


class CountingArchive(MemoryArchive):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read(self, first: int, last: int, max_bytes: int) -> list[Any]:
        self.reads += 1
        return await super().read(first, last, max_bytes)


async def test_clients_resuming_from_the_same_old_seq_share_one_archive_read() -> None:
    hub = Hub(10)
    archive = hub.archive = CountingArchive()
    for i in range(3000):
        hub.log({"x": i}, run="a" if i % 2 else "b")
    archive.keep_from = 1
    first = await _drain(hub, hub.open_cursor(5))
    reads = archive.reads
    assert reads > 1  # the archive holds more than one chunk's worth
    assert await _drain(hub, hub.open_cursor(5)) == first
    assert await _drain(hub, hub.open_cursor(5, fmt=WS)) == first  # one more framing, of the other format
    assert archive.reads == 2 * reads
    only_a = await _drain(hub, hub.open_cursor(5, runs=["a"]))  # filtered: never from the cache
    assert archive.reads == 3 * reads
    assert [e["seq"] for e in only_a] == [e["seq"] for e in first if e["run"] == "a"]


async def test_a_shared_archive_read_counts_what_the_archive_lost_for_each_client() -> None:
    hub = Hub(10)
    hub.archive = MemoryArchive(keep_from=40)
    for i in range(100):
        hub.log({"x": i})
    for _ in range(2):
        before = hub.counters.dropped
        events = await _drain(hub, hub.open_cursor(5))
        assert events[0]["type"] == "gap" and hub.counters.dropped - before == 34


async def test_a_resume_older_than_the_ring_is_served_from_the_archive() -> None:
    hub = Hub(10)
    hub.archive = MemoryArchive()
    seqs = [hub.log({"x": i}, step=i, run="a" if i % 2 else "b") for i in range(100)]
    events = await _drain(hub, hub.open_cursor(5))
    assert [e["seq"] for e in events] == list(range(6, seqs[-1] + 1))  # no gap: all from the archive
    only_a = await _drain(hub, hub.open_cursor(5, runs=["a"], fmt=WS))
    assert [e["seq"] for e in only_a] == [s for s in range(6, 101) if s % 2 == 0]
    history, more = hub.history(5, limit=1000, archived=await hub.archive.read(6, hub.oldest - 1, 1 << 20))
    assert [json.loads(b)["seq"] for b in history] == list(range(6, 101)) and not more


async def test_what_the_archive_lost_too_is_announced_by_a_gap() -> None:
    hub = Hub(10)
    hub.archive = MemoryArchive(keep_from=40)
    for i in range(100):
        hub.log({"x": i})
    events = await _drain(hub, hub.open_cursor(5))
    gap, *rest = events
    assert gap["type"] == "gap" and (gap["data"]["from"], gap["data"]["to"]) == (6, 39)
    assert [e["seq"] for e in rest] == list(range(40, 101))


async def test_a_hole_among_archived_events_is_announced_by_a_gap() -> None:
    hub = Hub(10)
    archive = hub.archive = MemoryArchive()
    for i in range(100):
        hub.log({"x": i})
    for seq in range(30, 41):
        del archive.events[seq]  # a stretch the store could not write
    events = await _drain(hub, hub.open_cursor(5))
    gaps = [e for e in events if e["type"] == "gap"]
    assert [(g["seq"], g["data"]["from"], g["data"]["to"]) for g in gaps] == [(40, 30, 40)]
    assert [e["seq"] for e in events if e["type"] != "gap"] == [*range(6, 30), *range(41, 101)]


def test_adopting_events_that_end_before_the_last_seq_starts_the_ring_after_it() -> None:
    old = Hub(50)
    for i in range(20):
        old.log({"x": i}, run="a")
    state = old.state()
    state["last_seq"] = 25  # events 21..25 were given seqs but are not in the state
    new = Hub(50)
    new.adopt(state)
    assert (new.head, new.oldest, new.last_seq) == (25, 26, 25)
    assert new.log({"x": 1.0}) == 26
    events = read_all(new, new.open_cursor(0))
    assert [e["seq"] for e in events] == [26] and events[0]["epoch"] == old.epoch


def test_adopting_replaces_what_the_ring_held() -> None:
    old = Hub(50)
    for i in range(10):
        old.log({"x": i})
    new = Hub(50)
    for i in range(30):
        new.log({"y": i})
    new.adopt(old.state())
    assert [e["seq"] for e in read_all(new, new.open_cursor(0))] == list(range(1, 11))


def test_run_curves_of_some_runs_and_adding_runs_not_known_yet() -> None:
    hub = Hub(100)
    for step in range(30):
        hub.log({"loss": 1 / (step + 1)}, step=step, run="a")
        hub.log({"acc": step / 30}, step=step, run="b")
    only_a = hub.runs.state(["a", "missing"])
    assert [r["run"] for r in only_a] == ["a"]
    other = Hub(100)
    other.log({"loss": 9.0}, step=0, run="a")
    other.log({"z": 1.0}, run="c")
    other.runs.restore(hub.runs.state(), keep=True)  # adds b, keeps its own a and c
    assert sorted(other.runs.runs) == ["a", "b", "c"]
    assert other.runs.runs["a"].metric_events == 1 and other.runs.runs["b"].metric_events == 30


def test_encode_some_is_a_bounded_step() -> None:
    """/api/status encodes in steps, so a ring of unread events never holds the loop long."""
    hub = Hub(history_size=1000)
    for step in range(100):
        hub.log({"x": float(step)}, step=step, run="r")
    hub.commit()
    assert hub.ring.encoded == 0
    hub.encode_some(30)
    assert hub.ring.encoded == 30
    hub.encode_some(1000)
    assert hub.ring.encoded == 100
    history, more = hub.history(0, limit=1000)
    assert len(history) == 100 and not more


def test_a_history_page_encodes_only_the_events_it_answers() -> None:
    # A ring of events nobody read yet: a page of history used to encode all
    # of them first (seconds for a million), now only those it returns.
    hub = Hub(200_000)
    held(hub)
    for step in range(100_000):
        hub.log({"loss": float(step)}, step=step, run="big" if step % 1000 else "rare")
    hub.commit()
    assert hub.ring.encoded == 0
    events, more = hub.history(0, limit=10)
    assert [json.loads(e)["step"] for e in events] == list(range(10)) and more
    assert hub.ring.encoded < 100
    # Filtered: the matching events, each encoded exactly as the ring would.
    rare, more = hub.history(0, runs=["rare"], limit=1000)
    assert [json.loads(e)["step"] for e in rare] == list(range(0, 100_000, 1000)) and not more
    assert hub.ring.encoded < 100
    hub.encode_all()  # (charged their real size, the oldest may go: the byte bound)
    again, _more = hub.history(0, runs=["rare"], limit=1000)
    assert again and again == rare[len(rare) - len(again) :]


def test_a_reader_at_the_head_encodes_its_events_not_the_unread_ones_before() -> None:
    hub = Hub(200_000)
    held(hub)
    for step in range(100_000):
        hub.log({"loss": float(step)}, step=step)
    hub.commit()
    live = hub.open_cursor(None)  # follows new events only, as a page that just loaded
    hub.log({"loss": -1.0}, step=100_000)
    hub.commit()
    assert [e["step"] for e in events_of(hub.read(live)[0])] == [100_000]
    assert hub.ring.encoded == 0  # the 100 000 nobody read stay as they were
    # A reader from the start gets them all, each once and in order, a chunk at a time.
    behind = hub.open_cursor(0)
    got = read_all(hub, behind)
    assert [e["step"] for e in got] == list(range(100_001))
    assert hub.ring.encoded == hub.head


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 400), st.integers(0, 3000)),
        min_size=1,
        max_size=40,
    )
)
def test_readers_at_any_place_get_every_event_or_a_gap_never_a_silent_hole(
    steps: list[tuple[int, int, int]],
) -> None:
    # Small bounds (events and bytes) and readers far apart: some encode
    # ahead of the others, encoding lets old events go, gaps move cursors on.
    hub = Hub(500, history_bytes=1 << 20)
    held(hub)
    cursors = [hub.open_cursor(None), hub.open_cursor(0), hub.open_cursor(None, fmt=WS), hub.open_cursor(0)]
    seen: list[list[int]] = [[] for _ in cursors]
    step = 0
    for reader, count, size in steps:
        for _ in range(count):
            hub.publish("log", {"pad": "x" * size}, run="r", step=step)
            step += 1
        hub.commit()
        cursor = cursors[reader]
        chunk, _n = hub.read(cursor, limit=97)
        for event in events_of(chunk, cursor.fmt):
            if event["type"] == "gap":
                seen[reader].append(-event["data"]["to"])  # the gap says up to where
            else:
                seen[reader].append(event["seq"])
    for got in seen:
        last = None
        for seq in got:
            if seq < 0:
                last = -seq
                continue
            assert last is None or seq == last + 1, (last, seq)
            last = seq
