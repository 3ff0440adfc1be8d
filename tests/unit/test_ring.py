"""The ring on its own (stream_hub/core/ring.py): bounds in events and bytes,
which events leave first, frames per format, events encoded elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_hub.core.cursor import HubCounters
from stream_hub.core.intake import FIELDS
from stream_hub.core.ring import JSON, SSE, WS, Numbered, Ring, frame
from stream_hub.events import encode_data, encode_event, sse_frame, ws_text_frame

from ..clients import sse_events, ws_events

EPOCH = "e" * 32


def ring(capacity: int = 10, max_bytes: int = 1 << 30) -> Ring:
    return Ring(capacity, EPOCH, HubCounters(), max_bytes)


def metric(seq: int, run: str | None = "r", step: int | None = None, rank: int | None = None) -> list[Any]:
    """One metric event as the intake flattens it."""
    return [seq, 1000.0 + seq, "metric", run, seq if step is None else step, {"x": float(seq)}, rank]


def note(seq: int, data: Any, run: str | None = "r", event_type: str = "note") -> list[Any]:
    return [seq, 1000.0 + seq, event_type, run, None, encode_data(data), None]


class Observed:
    """An ``observe`` callback that remembers what it was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> None:
        self.seen.append(args)

    @property
    def seqs(self) -> list[int]:
        return [args[0] for args in self.seen]


def store(r: Ring, first: int, last: int, **kwargs: Any) -> Observed:
    """Store metric events first..last as one batch."""
    batch: list[Any] = []
    for seq in range(first, last + 1):
        batch += metric(seq, **kwargs)
    observed = Observed()
    r.store(batch, len(batch) // FIELDS, observed, {})
    return observed


def kept_json(r: Ring) -> list[dict[str, Any]]:
    """The kept events, encoded, decoded back."""
    r.encode_upto(r.head)
    return [json.loads(text) for text in r.json_range(r.oldest, r.head)]


def numbered(seq: int, body_data: Any = None, run: str | None = "r", event_type: str = "note") -> Numbered:
    """An event numbered and encoded elsewhere (a Redis stream's entry)."""
    data = encode_data({"seq": seq} if body_data is None else body_data)
    body = encode_event(seq, EPOCH, 1.0, event_type, run, None, data)
    return (seq, 1.0, event_type, run, None, None, body, data)


def charged_kept(r: Ring) -> int:
    """What the kept events are charged, one by one (the ring's ``bytes`` contract)."""
    return sum(r._cost[seq % r.capacity] for seq in range(r.oldest, r.head + 1))


# -- bounded in events ----------------------------------------------------------------


def test_an_empty_ring_holds_nothing() -> None:
    r = ring(5)
    assert (r.head, r.oldest, r.size, r.bytes) == (0, 1, 0, 0)


def test_events_past_the_capacity_push_the_oldest_out() -> None:
    r = ring(5)
    for seq in range(1, 13):
        store(r, seq, seq)
    assert (r.head, r.oldest, r.size) == (12, 8, 5)
    assert [e["seq"] for e in kept_json(r)] == [8, 9, 10, 11, 12]
    assert [e["metrics"] for e in kept_json(r)] == [{"x": float(s)} for s in range(8, 13)]


def test_a_batch_larger_than_the_ring_keeps_exactly_the_newest() -> None:
    r = ring(10)
    store(r, 1, 3)
    store(r, 4, 40)  # 37 events into 10 slots at once
    assert (r.head, r.oldest, r.size) == (40, 31, 10)
    events = kept_json(r)
    assert [e["seq"] for e in events] == list(range(31, 41))
    assert [e["step"] for e in events] == list(range(31, 41))
    assert [r.ts_of(seq) for seq in range(31, 41)] == [1000.0 + s for s in range(31, 41)]


def test_an_overloaded_batch_shows_the_curves_every_runs_first_and_last_event() -> None:
    r = ring(10)
    batch: list[Any] = []
    runs = ["early"] + ["bulk"] * 98 + ["late"]
    for seq, run in enumerate(runs, 1):
        batch += metric(seq, run=run)
    observed = Observed()
    r.store(batch, len(runs), observed, {})
    seqs = observed.seqs
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # in order, each once
    assert 1 in seqs and 100 in seqs  # the runs seen once each
    assert 2 in seqs and 99 in seqs  # bulk's first and last
    assert len(seqs) < 100 // 2  # a sample, not every event


def test_an_overloaded_batch_feeds_every_unknown_runs_first_event() -> None:
    r = ring(4)
    batch: list[Any] = []
    for seq in range(1, 41):
        batch += metric(seq, run="old" if seq < 30 else "new")
    observed = Observed()
    r.store(batch, 40, observed, {"old": object()})
    assert 30 in observed.seqs  # "new" was not known: its curve starts at its first event


def test_an_overloaded_batch_feeds_the_curves_each_extreme_and_every_other_event() -> None:
    r = ring(100)
    batch: list[Any] = []
    for seq in range(1, 10_001):
        value = 60.0 if seq == 4321 else -5.0 if seq == 7777 else 1.0 + seq % 7 / 100
        batch += [seq, 1000.0 + seq, "metric", "r", seq, {"loss": value}, None]
    batch[4999 * FIELDS : 5000 * FIELDS] = note(5000, {"lr": 0.1}, event_type="config")
    observed = Observed()
    skipped = r.store(batch, 10_000, observed, {})
    seqs = observed.seqs
    assert seqs == sorted(seqs) and len(seqs) < 10_000 // 20  # still a sample
    assert {4321, 7777, 5000} <= set(seqs)  # the spike, the dip, the config event
    assert skipped == {"r": 9999 - (len(seqs) - 1)}  # the metric events not observed


def test_a_batch_that_fits_skips_nothing() -> None:
    r = ring(10)
    batch: list[Any] = []
    for seq in range(1, 6):
        batch += metric(seq)
    assert r.store(batch, 5, Observed(), {}) is None


def test_a_normal_batch_feeds_every_event_in_order_with_its_fields() -> None:
    r = ring(10)
    batch = metric(1, run="a", step=7, rank=2) + note(2, {"k": 1}, run=None)
    observed = Observed()
    r.store(batch, 2, observed, {})
    assert observed.seen[0] == (1, 1001.0, "a", 7, "metric", {"x": 1.0}, 2)
    assert observed.seen[1][:5] == (2, 1002.0, None, None, "note")
    assert (r.runs[1], r.types[2], r.ranks[1]) == ("a", "note", 2)


# -- bounded in bytes ---------------------------------------------------------------------


def test_the_byte_bound_lets_the_oldest_go_first_and_keeps_the_newest() -> None:
    big = "x" * 5000
    r = ring(100, max_bytes=40_000)
    for seq in range(1, 21):
        r.store(note(seq, {"s": big}), 1, Observed(), {})
        r.encode_upto(seq)
        assert r.bytes <= 40_000
        assert r.head == seq  # the newest is always kept
    kept = [e["seq"] for e in kept_json(r)]
    assert kept == list(range(r.oldest, 21))  # one unbroken stretch ending at the head
    assert 1 < len(kept) < 20
    assert all(e["data"] == {"s": big} for e in kept_json(r))


def test_one_event_larger_than_the_bound_still_stays() -> None:
    r = ring(10, max_bytes=1000)
    store(r, 1, 3)
    r.store(note(4, {"s": "y" * 10_000}), 1, Observed(), {})
    r.encode_upto(4)
    assert (r.oldest, r.head) == (4, 4)
    assert r.bytes > 1000
    assert kept_json(r)[0]["data"] == {"s": "y" * 10_000}


def test_unencoded_events_are_charged_an_estimate_and_encoded_ones_their_size() -> None:
    r = ring(10)
    store(r, 1, 1)
    estimate = r.bytes
    assert estimate > 0
    r.encode_upto(1)
    body = r.json_range(1, 1)[0].encode()
    assert r.bytes == charged_kept(r)
    assert r.bytes >= len(body) + len(sse_frame(1, "metric", body)) + len(ws_text_frame(body))


def test_the_bytes_of_events_pushed_out_by_capacity_are_given_back() -> None:
    r = ring(4)
    for seq in range(1, 30):
        store(r, seq, seq)
        r.encode_upto(seq)
    assert r.bytes == charged_kept(r)
    fresh = ring(4)
    store(fresh, 26, 29)
    fresh.encode_all()
    assert r.bytes == fresh.bytes  # charged for the four it keeps, nothing more


def test_bytes_trimmed_before_encoding_are_never_read_as_events() -> None:
    r = ring(100, max_bytes=3000)  # the estimate of ~10 events
    store(r, 1, 50)
    assert r.oldest > 1 and r.bytes <= 3000
    events = kept_json(r)
    assert [e["seq"] for e in events] == list(range(r.oldest, 51))
    assert all(e["type"] == "metric" and e["metrics"] == {"x": float(e["seq"])} for e in events)


# -- lazy encoding -------------------------------------------------------------------------------


def test_encoding_is_lazy_and_happens_once() -> None:
    r = ring(10)
    store(r, 1, 6)
    assert r.encoded == 0
    r.encode_upto(4)
    assert r.encoded == 4
    first = r.slice(JSON, 0, 4)
    r.encode_upto(4)  # nothing left to do up to 4
    assert r.slice(JSON, 0, 4) is first
    r.encode_all()
    assert r.encoded == 6


def test_an_event_that_cannot_be_encoded_becomes_a_rejected_gap_in_its_place() -> None:
    counters = HubCounters()
    r = Ring(10, EPOCH, counters)
    batch = [*metric(1), 2, 1.0, "note", "r", 5, {"bad": {1, 2}}, None, *metric(3)]
    r.store(batch, 3, Observed(), {})
    events = kept_json(r)
    assert [e["seq"] for e in events] == [1, 2, 3]
    gap = events[1]
    assert gap["type"] == "gap" and gap["run"] is None
    assert gap["data"]["reason"] == "rejected" and (gap["data"]["from"], gap["data"]["to"]) == (2, 2)
    assert counters.rejected == 1
    assert r.types[2] == "gap"  # filters see it as the gap it now is


# -- frames ---------------------------------------------------------------------------------------


def test_frame_builds_each_format_from_the_json() -> None:
    body = b'{"seq":3,"x":1}'
    assert frame(SSE, 3, "note", body) == b"id: 3\nevent: note\ndata: " + body + b"\n\n"
    assert frame(SSE, None, "shutdown", body) == b"event: shutdown\ndata: " + body + b"\n\n"
    assert frame(WS, 3, "note", body) == b"\x81" + bytes([len(body)]) + body
    assert frame(WS, None, "note", body) == frame(WS, 3, "note", body)  # no seq in a WS frame
    assert frame(JSON, 3, "note", body) is body


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_ws_frames_use_the_length_encoding_their_size_needs(size: int) -> None:
    body = b"a" * size
    (decoded,) = ws_events(frame(WS, 1, "note", b'{"p":"' + body + b'"}'))
    assert decoded == {"p": "a" * size}


def test_the_three_formats_of_a_stretch_carry_the_same_events() -> None:
    r = ring(5)
    store(r, 1, 8)  # wraps around the slots
    r.encode_all()
    sse = sse_events(r.slice(SSE, 3, 8))
    ws = ws_events(r.slice(WS, 3, 8))
    js = [json.loads(text) for text in r.json_range(4, 8)]
    assert sse == ws == js
    assert [e["seq"] for e in js] == [4, 5, 6, 7, 8]
    assert all(e["epoch"] == EPOCH for e in js)


# -- reading: slices, cuts, selections ----------------------------------------------------------


def test_slice_is_shared_until_the_next_store() -> None:
    r = ring(10)
    store(r, 1, 5)
    r.encode_all()
    chunk = r.slice(SSE, 0, 5)
    assert r.slice(SSE, 0, 5) is chunk  # every cursor at 0 gets the same bytes
    store(r, 6, 6)
    r.encode_all()
    assert r.slice(SSE, 0, 5) is not chunk
    assert r.slice(SSE, 0, 5) == chunk


def test_cut_keeps_within_the_byte_budget_but_always_moves() -> None:
    r = ring(100)
    store(r, 1, 60)
    r.encode_all()
    one = len(r.slice(SSE, 0, 1))
    assert r.cut(SSE, 0, 10, 1) == 10  # few events: no cut at all
    end = r.cut(SSE, 0, 60, 10 * one)
    assert len(r.slice(SSE, 0, end)) <= 10 * one < len(r.slice(SSE, 0, end + 1))
    assert r.cut(SSE, 0, 60, 1) == 1  # even one frame over the budget goes out alone
    assert r.cut(SSE, 0, 60, 1 << 30) == 60


def test_cut_across_the_wrap_around() -> None:
    r = ring(32)
    store(r, 1, 50)  # slots wrap: 19..50 kept
    r.encode_all()
    one = len(r.slice(WS, 20, 21))
    end = r.cut(WS, 20, 50, 25 * one)
    assert end == 45
    assert r.slice(WS, 20, end) == b"".join(r.slice(WS, s - 1, s) for s in range(21, end + 1))


def test_select_keeps_the_wanted_frames_and_stops_at_the_budget() -> None:
    r = ring(20)
    batch: list[Any] = []
    for seq in range(1, 13):
        batch += metric(seq, run="a" if seq % 3 else "b")
    r.store(batch, 12, Observed(), {})
    r.encode_all()

    def only_b(run: str | None, event_type: str) -> bool:
        return run == "b"

    frames, last = r.select(JSON, 0, 12, only_b)
    assert [json.loads(f)["seq"] for f in frames] == [3, 6, 9, 12] and last == 12
    frames, last = r.select(JSON, 0, 12, only_b, max_bytes=1)
    assert [json.loads(f)["seq"] for f in frames] == [3] and last == 3  # resume after 3
    frames, last = r.select(JSON, 3, 12, only_b, max_bytes=1 << 20)
    assert [json.loads(f)["seq"] for f in frames] == [6, 9, 12] and last == 12
    assert r.matching(0, 12, only_b) == 4
    assert r.matching(3, 8, only_b) == 1


# -- events numbered elsewhere ---------------------------------------------------------------


def test_store_encoded_keeps_the_bodies_and_frames_them() -> None:
    r = ring(10)
    observed = Observed()
    assert r.store_encoded([numbered(1), numbered(2)], observed) == 2
    assert (r.head, r.encoded, r.oldest) == (2, 2, 1)
    assert r.slice(JSON, 0, 2) == numbered(1)[6] + numbered(2)[6]
    assert sse_events(r.slice(SSE, 0, 2)) == [json.loads(numbered(s)[6]) for s in (1, 2)]
    assert observed.seqs == [1, 2]
    assert observed.seen[0][5] == numbered(1)[7]  # the payload for the curves


def test_store_encoded_skips_what_it_already_has() -> None:
    r = ring(10)
    r.store_encoded([numbered(1), numbered(2)], Observed())
    observed = Observed()
    assert r.store_encoded([numbered(1), numbered(2), numbered(3)], observed) == 1
    assert observed.seqs == [3] and r.head == 3


def test_a_jump_in_encoded_events_starts_a_new_stretch() -> None:
    r = ring(10)
    r.store_encoded([numbered(s) for s in range(1, 6)], Observed())
    r.store_encoded([numbered(8), numbered(9)], Observed())
    assert (r.oldest, r.head, r.size) == (8, 9, 2)
    assert [json.loads(t)["seq"] for t in r.json_range(r.oldest, r.head)] == [8, 9]


def test_a_jump_gives_back_the_bytes_of_the_stretch_left_behind() -> None:
    # Bug: the events before a jump stayed charged after they left, so the
    # byte bound then pushed out events that did fit.
    probe = ring()
    probe.store_encoded([numbered(10)], Observed())
    one = probe.bytes  # every seq here has two digits: every event costs the same
    r = ring(100, max_bytes=5 * one)
    r.store_encoded([numbered(s) for s in range(10, 15)], Observed())
    assert (r.oldest, r.head) == (10, 14)
    r.store_encoded([numbered(s) for s in range(50, 55)], Observed())
    assert r.bytes == charged_kept(r)
    assert (r.oldest, r.head) == (50, 54)  # all five fit, as five did before the jump


def test_events_numbered_elsewhere_after_unencoded_ones_leave_those_encodable() -> None:
    # Bug: store_encoded moved ``encoded`` past events stored before it and
    # not yet encoded (a replica's adopted history, then the Redis stream
    # going on): they were never encoded, and read as missing.
    r = ring(2)
    store(r, 1, 1)
    assert r.encoded == 0
    r.store_encoded([numbered(2)], Observed())
    assert (r.oldest, r.head, r.encoded) == (1, 2, 2)
    r.encode_all()
    assert [json.loads(t)["seq"] for t in r.json_range(r.oldest, r.head)] == [1, 2]
    assert r.bytes == charged_kept(r)


def test_reset_at_positions_an_empty_ring_after_a_seq() -> None:
    r = ring(10)
    store(r, 1, 7)
    r.reset_at(41)
    assert (r.head, r.oldest, r.size, r.bytes) == (41, 42, 0, 0)
    assert r.store_encoded([numbered(42)], Observed()) == 1
    assert (r.oldest, r.head) == (42, 42)


def test_clear_starts_over_from_seq_one() -> None:
    r = ring(10)
    store(r, 1, 7)
    r.encode_all()
    r.clear()
    assert (r.head, r.oldest, r.size, r.bytes, r.encoded) == (0, 1, 0, 0, 0)
    store(r, 1, 2)
    assert [e["seq"] for e in kept_json(r)] == [1, 2]


# -- loading another hub's events ------------------------------------------------------------


def _wire(seq: int, **extra: Any) -> dict[str, Any]:
    event = {"seq": seq, "epoch": "old", "ts": 5.0 + seq, "type": "metric", "run": "r", "step": seq}
    event["metrics"] = {"x": seq, "bad": "NaN", "up": "Infinity"}
    event.update(extra)
    return event


def test_load_keeps_their_seqs_and_values() -> None:
    r = ring(10)
    events = [_wire(s) for s in range(31, 36)] + [
        {"seq": 36, "ts": 1.0, "type": "note", "run": "r", "step": None, "data": {"k": [1, 2]}, "rank": 3}
    ]
    r.load(events)
    assert (r.oldest, r.head, r.encoded) == (31, 36, 30)
    decoded = kept_json(r)
    assert [e["seq"] for e in decoded] == list(range(31, 37))
    assert decoded[0]["metrics"] == {"x": 31, "bad": "NaN", "up": "Infinity"}  # non-finite kept
    assert decoded[-1]["data"] == {"k": [1, 2]} and decoded[-1]["rank"] == 3
    assert all(e["epoch"] == EPOCH for e in decoded)  # under this ring's epoch


def test_load_keeps_only_what_fits_the_capacity() -> None:
    r = ring(4)
    r.load([_wire(s) for s in range(1, 11)])
    assert (r.oldest, r.head) == (7, 10)
    assert [e["seq"] for e in kept_json(r)] == [7, 8, 9, 10]


def test_load_keeps_only_what_fits_the_byte_bound() -> None:
    # Bug: load put the oldest loaded event back in the ring after the byte
    # bound had let it go (its payload already dropped): encoding it failed.
    r = ring(100, max_bytes=2000)
    r.load([_wire(s) for s in range(1, 21)])
    assert r.oldest > 1 and r.head == 20
    assert [e["seq"] for e in kept_json(r)] == list(range(r.oldest, 21))


def test_load_of_nothing_leaves_the_ring_empty() -> None:
    r = ring(4)
    r.load([])
    assert (r.head, r.size) == (0, 0)


# -- property: whatever happens, the ring is one stretch within its bounds ----------------------


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 12),
    max_bytes=st.integers(500, 20_000),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("store"), st.integers(1, 30), st.integers(0, 3000)),
            st.tuples(st.just("encode"), st.integers(0, 40), st.just(0)),
            st.tuples(st.just("jump"), st.integers(0, 30), st.integers(1, 4)),
        ),
        max_size=30,
    ),
)
def test_the_ring_stays_one_bounded_stretch_ending_at_the_head(
    capacity: int, max_bytes: int, ops: list[tuple[str, int, int]]
) -> None:
    r = ring(capacity, max_bytes)
    for op, a, b in ops:
        if op == "store":
            batch: list[Any] = []
            for seq in range(r.head + 1, r.head + a + 1):
                batch += note(seq, {"pad": "p" * b, "seq": seq})
            r.store(batch, a, Observed(), {})
        elif op == "encode":
            r.encode_upto(min(r.head, r.encoded + a))
        else:
            first = r.head + 1 + a
            r.store_encoded(
                [numbered(s, {"pad": "q" * 100, "seq": s}) for s in range(first, first + b)], Observed()
            )
        assert r.bytes == charged_kept(r)
        if r.head:
            assert 1 <= r.size <= capacity
            # Over the bound only with the newest event alone in the ring, or
            # with estimates not yet replaced by real sizes.
            assert r.bytes <= max_bytes or r.size == 1
    r.encode_all()
    assert r.bytes <= max_bytes or r.size <= 1
    events = [json.loads(t) for t in r.json_range(r.oldest, r.head)]
    assert [e["seq"] for e in events] == list(range(r.oldest, r.head + 1))
    assert all(e["data"]["seq"] == e["seq"] for e in events)  # each slot holds its own event
