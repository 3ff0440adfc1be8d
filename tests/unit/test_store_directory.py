"""The default store's directory: a new file per hub instance, retention
over the directory (whole files of hubs that are gone, oldest first), the
removal of files that hold no run, and the byte bound inside one file."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from stream_hub.store.catalog import persisted_runs
from stream_hub.store.directory import (
    discard_if_empty,
    is_default_store,
    live_store_files,
    new_store_file,
    prune,
    store_files,
)
from stream_hub.store.lock import StoreLock
from stream_hub.store.retention import trim, used_bytes


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAM_HUB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake_store(path: str, size: int, age_days: float) -> None:
    with open(path, "wb") as f:
        f.write(b"\0" * size)
    then = time.time() - age_days * 86_400
    os.utime(path, (then, then))


def test_each_new_file_is_the_hub_instances_own_and_owner_only(home: Path) -> None:
    first, second = new_store_file(), new_store_file()
    assert first != second
    for path in (first, second):
        assert is_default_store(path)
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert Path(path).parent.parent == home / "store"
    assert (home / "store").stat().st_mode & 0o777 == 0o700
    assert [f.path for f in store_files()] == sorted([first, second], key=lambda p: (os.stat(p).st_mtime, p))


def test_retention_removes_old_files_then_the_oldest_past_the_byte_bound(home: Path) -> None:
    files = [new_store_file() for _ in range(5)]
    for n, path in enumerate(files):
        fake_store(path, 1000, age_days=40 - n * 5)  # 40, 35, 30.x, 25, 20 days old
    os.utime(files[2], (time.time() - 29 * 86_400,) * 2)
    removed, freed = prune(max_bytes=2500, max_days=30, keep=None)
    # The two older than 30 days, then the oldest until 3 000 -> 2 000 bytes.
    assert removed == 3 and freed >= 3000
    assert [f.path for f in store_files()] == files[3:]


def test_retention_never_removes_a_live_hubs_file_or_the_callers(home: Path) -> None:
    live, mine, dead = new_store_file(), new_store_file(), new_store_file()
    for path in (live, mine, dead):
        fake_store(path, 1000, age_days=100)
    lock = StoreLock(live)
    lock.acquire()
    try:
        assert live_store_files([live, mine, dead]) == {live}
        removed, _ = prune(max_bytes=1, max_days=1, keep=mine)
    finally:
        lock.release()
    assert removed == 1
    assert sorted(f.path for f in store_files()) == sorted([live, mine])


def _store_with_runs(path: str, runs: list[str], base_ts: float = 100.0) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE runs (run TEXT, epoch INT, last_seq INT, last_ts REAL, saved INT, state BLOB)"
        )
        for n, run in enumerate(runs):
            track = {"rank": None, "series": {"loss": {}}, "ended": "finished"}
            state = {
                "run": run,
                "events": n + 1,
                "first_ts": float(n),
                "last_ts": base_ts + n,
                "last_step": n,
                "metric_events": n + 1,
                "config": {"lr": n},
                "tracks": [track],
            }
            row = (run, n + 1, base_ts + n, n + 1, json.dumps(state))
            conn.execute("INSERT INTO runs VALUES (?, 1, ?, ?, ?, ?)", row)


def test_a_file_that_holds_no_run_is_discarded_and_one_that_does_is_kept(home: Path) -> None:
    empty, full = new_store_file(), new_store_file()
    _store_with_runs(empty, [])
    _store_with_runs(full, ["r"])
    assert discard_if_empty(empty) is True
    assert discard_if_empty(full) is False
    assert [f.path for f in store_files()] == [full]


def test_persisted_runs_merge_every_file_newest_first(home: Path) -> None:
    one, two = new_store_file(), new_store_file()
    _store_with_runs(one, ["a", "b"])
    _store_with_runs(two, ["c"], base_ts=50.0)
    runs = persisted_runs()
    assert [r.run for r in runs] == ["b", "a", "c"]  # by when each was last saved
    by_name = {r.run: r for r in runs}
    assert by_name["b"].status == "finished" and by_name["b"].config == {"lr": 1}
    assert by_name["a"].metrics == ["loss"] and by_name["a"].files == [one]
    assert by_name["c"].events == 1


def test_the_byte_bound_deletes_the_oldest_chunks_by_pages_in_use(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, count INT, min_ts REAL, body BLOB)")
    conn.execute("CREATE TABLE runs (run TEXT, last_ts REAL)")
    for n in range(40):
        conn.execute("INSERT INTO chunks VALUES (?, 100, ?, ?)", (n, time.time(), os.urandom(50_000)))
    conn.commit()
    before = used_bytes(conn)
    assert before > 2_000_000
    deleted, _more = trim(conn, 4000, None, None, max_bytes=1_000_000)
    conn.commit()
    left = [n for (n,) in conn.execute("SELECT id FROM chunks ORDER BY id")]
    assert deleted == 100 * (40 - len(left))
    assert left == list(range(40 - len(left), 40))  # the oldest went
    assert used_bytes(conn) <= 1_000_000 + 60_000
