"""What a replica makes of a Redis stream's entries (stream_hub/backend/stream.py,
``decode_entries``): ours become events, an entry in our numbering that is
not an event becomes a one-event gap, entries outside it are left out
(issue 22 M8). Pure: plain lists in, no Redis."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_hub.backend.stream import decode_entries, entry_id, parse_id
from stream_hub.events import RESERVED_TYPES, encode_event, encode_template

EPOCH = "e" * 32


def good(seq: int, step: int = 0) -> tuple[bytes, dict[bytes, bytes]]:
    template = encode_template(1.5e9, "metric", "r", step, {"loss": 0.5, "nan": float("nan")}, 1)
    return f"{seq}-0".encode(), {b"e": template}


def entry(seq: int, template: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    return f"{seq}-0".encode(), {b"e": template}


def test_our_entries_are_events_the_same_bytes_as_a_hub_of_our_own_would_write() -> None:
    decoded = decode_entries([good(1, 10), good(2, 11)], EPOCH, counter=2)
    assert [n[0] for n in decoded.numbered] == [1, 2]
    body = encode_event(1, EPOCH, 1.5e9, "metric", "r", 10, {"loss": 0.5, "nan": float("nan")}, 1)
    assert decoded.numbered[0][6] == body
    assert decoded.numbered[0][7] == {"loss": 0.5, "nan": pytest.approx(float("nan"), nan_ok=True)}
    assert decoded.archived[1] == (2, "metric", "r", 1, decoded.numbered[1][6])
    assert (decoded.rejected, decoded.foreign, decoded.position) == ([], 0, (2, 0))


MALFORMED = [
    b"not json",
    b'"ts":1.0,"type":"metric","run":"r","step":1,"metrics":{"a":"high"}}',
    b'"ts":1.0,"type":"metric","run":"r","step":1,"metrics":[1]}',
    b'"ts":1.0,"type":"metric","run":"r","step":1}',
    b'"ts":"now","type":"note","run":"r","step":null,"data":1}',
    b'"ts":1.0,"type":"no spaces","run":"r","step":null,"data":1}',
    b'"ts":1.0,"type":["a"],"run":"r","step":null,"data":1}',
    b'"ts":1.0,"type":"note","run":"","step":null,"data":1}',
    b'"ts":1.0,"type":"note","run":"r","step":1.5,"data":1}',
    b'"ts":1.0,"type":"note","run":"r","step":99999999999999999999,"data":1}',
    b'"ts":1.0,"type":"note","run":"r","rank":-1,"step":null,"data":1}',
    b'"ts":1.0,"type":"note",\n"run":"r","step":null,"data":1}',
    b'"ts":1.0,"type":"note","run":"r","step":null,"data":1,"epoch":"other"}',
    b'"ts":1.0,"type":"note","run":"r","step":null,"data":1,"seq":7}',
    b"1]",
]


@pytest.mark.parametrize("template", MALFORMED)
def test_a_malformed_entry_is_a_gap_of_one_event_and_never_raises(template: bytes) -> None:
    decoded = decode_entries([good(1), entry(2, template), good(3)], EPOCH, counter=3)
    assert [(n[0], n[2]) for n in decoded.numbered] == [(1, "metric"), (2, "gap"), (3, "metric")]
    gap = orjson.loads(decoded.numbered[1][6])
    assert gap["seq"] == 2 and gap["epoch"] == EPOCH and gap["type"] == "gap"
    assert gap["data"]["reason"] == "rejected" and gap["data"]["lost"] == 1
    assert [seq for seq, _why in decoded.rejected] == [2] and decoded.reserved == 0
    assert decoded.archived[1][:4] == (2, "gap", None, None)
    # Every replica composes the same bytes.
    assert decode_entries([entry(2, template)], EPOCH, 3).numbered[0][6] == decoded.numbered[1][6]


def test_an_entry_without_a_template_is_a_gap() -> None:
    decoded = decode_entries([(b"1-0", {b"x": b"1"}), (b"2-0", [])], EPOCH, counter=2)
    assert [n[2] for n in decoded.numbered] == ["gap", "gap"]


@pytest.mark.parametrize("event_type", sorted(RESERVED_TYPES))
def test_a_reserved_type_is_never_relayed(event_type: str) -> None:
    template = b'"ts":1.0,"type":"%s","run":null,"step":null,"data":{}}' % event_type.encode()
    decoded = decode_entries([entry(1, template)], EPOCH, counter=1)
    assert decoded.numbered[0][2] == "gap" and decoded.reserved == 1
    assert "reserved" in decoded.rejected[0][1]


@pytest.mark.parametrize("raw_id", [b"4-0", b"18446744073709551615-0", b"1733000000000-0", b"3-1"])
def test_entries_past_the_counter_are_left_out_and_reported_above(raw_id: bytes) -> None:
    decoded = decode_entries([good(1), good(2), good(3), (raw_id, good(9)[1])], EPOCH, counter=3)
    assert [n[0] for n in decoded.numbered] == [1, 2, 3]
    assert (decoded.foreign, decoded.above, decoded.position) == (1, 1, (3, 0))


def test_an_entry_with_a_sequence_part_of_its_own_is_left_out_but_read_past() -> None:
    decoded = decode_entries([good(1), (b"1-5", good(1)[1]), good(2)], EPOCH, counter=2)
    assert [n[0] for n in decoded.numbered] == [1, 2]
    assert (decoded.foreign, decoded.above) == (1, 0)
    decoded = decode_entries([good(1), (b"1-5", good(1)[1])], EPOCH, counter=2)
    assert decoded.position == (1, 5)  # the next read starts after it


@pytest.mark.parametrize("raw", [b"12-0", "12-0", b"12-3", "18446744073709551615-18446744073709551615"])
def test_entry_ids(raw: Any) -> None:
    assert entry_id(parse_id(raw)) == (raw.decode() if isinstance(raw, bytes) else raw)
