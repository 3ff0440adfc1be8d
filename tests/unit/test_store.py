"""The store's pure parts: how events are kept in chunks, which file
systems get which journal, and its settings. (The store itself, with files
and processes, is tested in tests/integration/test_store.py.)"""

from __future__ import annotations

import math
import os
import zlib

import orjson
import pytest

from stream_hub import StreamConfig
from stream_hub.core.intake import FIELDS
from stream_hub.errors import ConfigError
from stream_hub.events import encode_data, encode_event
from stream_hub.store import chunks
from stream_hub.store.sqlite import NETWORK_FILE_SYSTEMS, mount_type

EPOCH = "e" * 32


def flat(*events: tuple[object, ...]) -> list[object]:
    out: list[object] = []
    for event in events:
        assert len(event) == FIELDS
        out += event
    return out


def stored(batch: list[object]) -> list[tuple[int, str, str | None, int | None, bytes]]:
    chunk = chunks.encode(batch)
    return chunks.events_in(chunks.decode(chunk.body), EPOCH, 0, 1 << 62)


def test_a_chunk_gives_back_each_event_exactly_as_the_wire_encodes_it() -> None:
    events = [
        (
            1,
            1.5,
            "metric",
            "a",
            3,
            {"loss": 0.25, "n": 7, "bad": math.nan, "up": math.inf, "down": -math.inf},
            None,
        ),
        (2, 1.75, "metric", "a", None, {"loss": 0.125}, 3),
        (3, 2.0, "log", "a", 4, encode_data({"message": "hi", "nested": [1, None, "x"]}), None),
        (4, 2.5, "status", None, None, {"state": "started", "ports": {"sse": 1}}, None),
        (5, 3.0, "config", "b", None, encode_data({"lr": 0.1}), 1),
    ]
    got = stored(flat(*events))
    assert [e[:4] for e in got] == [(s, t, r, rk) for s, _ts, t, r, _st, _p, rk in events]
    for (seq, ts, kind, run, step, payload, rank), (*_, body) in zip(events, got):
        assert body == encode_event(seq, EPOCH, ts, kind, run, step, payload, rank)


def test_a_chunk_says_where_it_starts_and_ends_and_which_runs_it_holds() -> None:
    chunk = chunks.encode(
        flat(
            (10, 5.0, "metric", "b", 1, {"x": 1.0}, None),
            (11, 4.0, "status", None, None, {}, None),
            (12, 6.0, "metric", 'a"q', 2, {"x": 2.0}, None),
        )
    )
    assert (chunk.first_seq, chunk.last_seq, chunk.count, chunk.min_ts, chunk.max_ts) == (10, 12, 3, 4.0, 6.0)
    assert orjson.loads(chunk.runs) == ['a"q', "b"]
    assert len(chunk.body) < 200  # compressed


def test_integers_beyond_64_bits_become_floats_and_what_cannot_be_encoded_a_gap() -> None:
    events = flat(
        (1, 1.0, "metric", "a", 1, {"big": 2**70, "ok": 1.0}, None),
        (2, 1.0, "status", None, None, {"thing": object()}, None),
        (3, 1.0, "metric", "a", 2, {"x": 1.0}, None),
    )
    got = [orjson.loads(body) for *_, body in stored(events)]
    assert got[0]["metrics"] == {"big": float(2**70), "ok": 1.0}
    assert got[1]["type"] == "gap" and got[1]["data"]["reason"] == "rejected" and got[1]["run"] is None
    assert got[2]["metrics"] == {"x": 1.0}


def test_only_the_asked_seqs_come_back_and_metrics_get_their_floats_again() -> None:
    batch = flat(
        *[(s, float(s), "metric", "a", s, {"v": math.nan if s == 3 else s}, None) for s in range(1, 9)]
    )
    columns = chunks.decode(chunks.encode(batch).body)
    assert [e[0] for e in chunks.events_in(columns, EPOCH, 3, 5)] == [3, 4, 5]
    payloads = [row[6] for row in chunks.rows(columns)]
    assert payloads[2] == {"v": "NaN"}
    assert math.isnan(chunks.metrics_of(payloads[2])["v"]) and chunks.metrics_of(payloads[0]) == {"v": 1}


# -- the file system ------------------------------------------------------------------------

MOUNTS = """\
/dev/vda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
fileserver:/export/home /home nfs4 rw,relatime,vers=4.2 0 0
/dev/vdb1 /home/alice/scratch xfs rw 0 0
//nas/share /mnt/my\\040share cifs rw 0 0
sshfs#me@box: /mnt/box fuse.sshfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/alice/runs.db", "nfs4"),
        ("/home/alice/scratch/runs.db", "xfs"),  # the longest mount point wins
        ("/home", "nfs4"),
        ("/homework/runs.db", "ext4"),  # a prefix of the name is not a parent directory
        ("/mnt/my share/runs.db", "cifs"),  # octal escapes in /proc/mounts
        ("/mnt/box/x/runs.db", "fuse.sshfs"),
        ("/tmp/runs.db", "ext4"),
    ],
)
def test_the_file_system_of_a_path_is_that_of_the_longest_mount_point_above_it(path: str, kind: str) -> None:
    assert mount_type(path, MOUNTS) == kind


def test_network_file_systems_are_the_ones_where_wal_is_unsafe() -> None:
    assert {"nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "lustre"} <= NETWORK_FILE_SYSTEMS
    assert not {"ext4", "xfs", "btrfs", "tmpfs", "zfs", "apfs"} & NETWORK_FILE_SYSTEMS


# -- settings -------------------------------------------------------------------------------


def test_the_store_setting_is_an_absolute_path_and_retention_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir("/tmp")
    assert StreamConfig(store="runs.db").store == os.path.join(os.path.realpath("/tmp"), "runs.db")
    assert StreamConfig(store="~/runs.db").store == os.path.expanduser("~/runs.db")
    assert StreamConfig().store_max_events is None and StreamConfig().store_max_days is None
    assert StreamConfig(store_max_days=7).store_max_days == 7.0
    for field, value in (("store_max_events", 0), ("store_max_events", 1.5), ("store_max_days", -1)):
        with pytest.raises(ConfigError, match=field):
            StreamConfig(**{field: value})
    monkeypatch.setenv("STREAM_HUB_STORE_MAX_EVENTS", "1000000")
    monkeypatch.setenv("STREAM_HUB_STORE_MAX_DAYS", "30")
    cfg = StreamConfig()
    assert (cfg.store_max_events, cfg.store_max_days) == (1_000_000, 30.0)
    monkeypatch.setenv("STREAM_HUB_STORE_MAX_EVENTS", "lots")
    with pytest.raises(ConfigError, match="STREAM_HUB_STORE_MAX_EVENTS"):
        StreamConfig()


def test_columns_of_one_value_and_counting_columns_are_kept_short_and_come_back_whole() -> None:
    same = flat(*[(s, float(s), "metric", "a", s + 9, {"v": 1.0}, 2) for s in range(1, 501)])
    mixed = flat(
        (1, 1.0, "metric", "a", None, {"v": 1.0}, None),
        (2, 1.0, "metric", "a", 5, {"v": 1.0}, None),
        (4, 1.0, "log", "b", 6, encode_data("x"), 1),  # a hole in the seqs (3 was not written)
    )
    packed = orjson.loads(zlib.decompress(chunks.encode(same).body))
    assert packed[0] == {"from": 1} and packed[2] == {"all": "metric"} and packed[3] == {"all": "a"}
    assert packed[4] == {"from": 10} and packed[5] == {"all": 2}
    for batch in (same, mixed):
        got = stored(batch)
        it = iter(batch)
        expected = [
            encode_event(seq, EPOCH, ts, kind, run, step, payload, rank)
            for seq, ts, kind, run, step, payload, rank in zip(it, it, it, it, it, it, it)
        ]
        assert [body for *_, body in got] == expected


async def test_reads_of_the_same_events_queued_together_share_one_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a restart every client replaying from the same old seq asks at
    once: the requests that wait in the queue together are answered by one read."""
    import asyncio
    import sqlite3
    import threading

    from stream_hub.store import reader as reader_module

    busy, release = threading.Event(), threading.Event()
    reads: list[tuple[int, int]] = []

    def read_range(conn: object, epoch: str, first: int, last: int, max_bytes: int, cache: object) -> list:
        reads.append((first, last))
        if first == 1:  # the first job holds the thread while the others queue up
            busy.set()
            release.wait(10)
        return [(first, "metric", None, None, b"{}")]

    monkeypatch.setattr(reader_module, "read_range", read_range)
    monkeypatch.setattr(reader_module, "connect", lambda path, read_only: sqlite3.connect(":memory:"))
    reader = reader_module.StoreReader("unused.db")
    try:
        first = asyncio.ensure_future(reader.read(EPOCH, 1, 50, 1000))
        await asyncio.to_thread(busy.wait, 10)
        same = [asyncio.ensure_future(reader.read(EPOCH, 7, 50 + k, 1000)) for k in range(3)]
        other = asyncio.ensure_future(reader.read(EPOCH, 9, 50, 1000))
        await asyncio.sleep(0)
        release.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *same, other), 10)
    finally:
        await asyncio.to_thread(reader.close, 5)
    assert reads == [(1, 50), (7, 50), (9, 50)]  # seq 7 read once, for the first asker's range
    assert [a[0][0] for a in answers] == [1, 7, 7, 7, 9]
