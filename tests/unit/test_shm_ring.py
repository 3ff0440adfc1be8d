"""The shared-memory ring's file, writer and reader (``processes/shm_ring.py``),
in one process: records across the wrap, a full ring's drops and their
notice, NaN, other events, one reader at a time, a ring that is not one."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from stream_hub.processes.shm_ring import (
    HEAD_AT,
    RingCorrupt,
    RingReader,
    RingWriter,
    process_alive,
    ring_path,
    rings_of,
    writer_pid,
)


@pytest.fixture()
def channel(tmp_path: Path) -> str:
    directory = tmp_path / "registry"
    directory.mkdir(mode=0o700)
    return str(directory / "hub-127.0.0.1-1-2-3.sock")


def read(reader: RingReader, notices: list[dict[str, Any]] | None = None) -> list[Any]:
    def on_notice(notice: dict[str, Any]) -> Any:
        if notices is not None:
            notices.append(notice)
        return None

    events = reader.read(on_notice)
    reader.done()
    return events


def test_records_cross_the_wrap_whole_and_in_order(channel: str) -> None:
    path = ring_path(channel, os.getpid(), "src")
    writer = RingWriter(path, capacity=4096, rank=3)
    assert rings_of(channel) == [path] and writer_pid(path) == os.getpid()
    reader = RingReader(path)
    got: list[Any] = []
    for step in range(500):  # about 20 times round the ring
        assert writer.metric(float(step), "run-a", step, {"loss": step / 7, "n": step})
        if step % 17 == 0:
            got += read(reader)
    got += read(reader)
    assert [e[3] for e in got] == list(range(500))
    assert got[123] == [123.0, "metric", "run-a", 123, {"loss": 123 / 7, "n": 123}, 3]
    assert writer.dropped == 0 and reader.pending() == 0
    writer.close()
    assert reader.writer_closed
    reader.remove()
    assert not path.exists()


def test_a_full_ring_drops_counts_and_owes_a_notice_before_the_next_event(channel: str) -> None:
    path = ring_path(channel, os.getpid(), "src")
    writer = RingWriter(path, capacity=2048)
    reader = RingReader(path)
    step = 0
    while writer.dropped == 0:
        writer.metric(0.0, "r", step, {"x": 1.0})
        step += 1
    for _ in range(9):
        writer.metric(0.0, "other", step, {"x": 1.0})
    assert writer.dropped == 10 and reader.dropped == 10
    kept = read(reader)
    assert len(kept) == step - 1
    notices: list[dict[str, Any]] = []
    writer.metric(0.0, "r", 10_000, {"x": 1.0})  # room again: the notice goes first
    after = read(reader, notices)
    assert notices == [{"dropped": 10, "runs": {"r": 1, "other": 9}}]
    assert [e[3] for e in after] == [10_000]


def test_nan_and_infinities_travel_as_the_wires_strings(channel: str) -> None:
    writer = RingWriter(ring_path(channel, os.getpid(), "src"), capacity=4096)
    reader = RingReader(writer.path)
    writer.metric(1.0, "r", None, {"a": math.nan, "b": math.inf, "c": -math.inf, "d": 2.5})
    (event,) = read(reader)
    assert event[3] is None and event[4] == {"a": "NaN", "b": "Infinity", "c": "-Infinity", "d": 2.5}


def test_other_events_keep_the_channels_form(channel: str) -> None:
    writer = RingWriter(ring_path(channel, os.getpid(), "src"), capacity=4096)
    reader = RingReader(writer.path)
    event = [5.0, "log", "r", 7, '{"message":"hi"}', None]
    assert writer.event(event)
    assert read(reader) == [event]
    writer.close()
    assert not writer.event(event) and not writer.metric(1.0, "r", 1, {"x": 1.0})


def test_one_reader_at_a_time(channel: str) -> None:
    writer = RingWriter(ring_path(channel, os.getpid(), "src"), capacity=4096)
    first = RingReader(writer.path)
    with pytest.raises(BlockingIOError):
        RingReader(writer.path)
    first.close()
    RingReader(writer.path).close()


def test_a_file_that_is_not_a_ring_is_refused_and_a_torn_head_is_corrupt(channel: str) -> None:
    bogus = Path(f"{channel[:-5]}.ring-1-bogus")
    bogus.write_bytes(b"\0" * 4096)
    bogus.chmod(0o600)
    with pytest.raises(RingCorrupt):
        RingReader(bogus)
    writer = RingWriter(ring_path(channel, os.getpid(), "src"), capacity=4096)
    reader = RingReader(writer.path)
    writer._map[HEAD_AT : HEAD_AT + 8] = (10**9).to_bytes(8, "little")  # a head no ring has
    with pytest.raises(RingCorrupt):
        reader.read(lambda notice: None)


def test_a_ring_being_made_is_not_listed_until_it_is_whole(channel: str) -> None:
    making = Path(f"{channel[:-5]}.ring-{os.getpid()}-x.new")
    making.write_bytes(b"")
    assert rings_of(channel) == [] and rings_of(channel, making=True) == [making]


def test_process_alive() -> None:
    assert process_alive(os.getpid())
    assert not process_alive(2**22 + 12345)  # above Linux's pid_max default
