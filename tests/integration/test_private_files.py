"""Store and lock files are owner-only and never followed through a symlink
(contract v3, "Same user by default"; issue 22 M3, M4).

The tests run as root, so another user is real: files and directories are
chowned to a throwaway one (``other_uid``). Root can open anyone's file, so
every refusal here is stream_hub's own check, not the kernel's.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from pathlib import Path

import orjson
import pytest

from stream_hub import TrainingStreamServer
from stream_hub.errors import StoreError, StoreLockedError

from ..conftest import wait_for
from .test_store import store_server


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def written(server: TrainingStreamServer) -> None:
    seq = server.log({"x": 1.0}, step=1, run="r")
    assert seq is not None
    wait_for(lambda: server.status()["store"]["last_seq"] >= seq, what="the event written")


# -- the store's files (M3) ------------------------------------------------------------------------


def test_the_store_its_journal_and_its_lock_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)  # the widest: SQLite alone would create the file 0644
    try:
        server = store_server(tmp_path / "runs.db")
        try:
            written(server)
            names = {p.name for p in tmp_path.iterdir()}
            assert {"runs.db", "runs.db-wal", "runs.db-shm", "runs.db.lock"} <= names
            assert {name: mode(tmp_path / name) for name in names} == dict.fromkeys(names, 0o600)
        finally:
            server.stop()
    finally:
        os.umask(old)


def test_an_existing_store_open_to_others_is_made_owner_only_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "runs.db"
    store_server(db).stop()
    # As an older stream_hub left them (and a -wal, -shm of a hub that died).
    for name in ("runs.db", "runs.db-wal", "runs.db-shm", "runs.db.lock"):
        (tmp_path / name).touch()
        (tmp_path / name).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="stream_hub"):
        server = store_server(db)
    try:
        written(server)
        names = {p.name for p in tmp_path.iterdir()}
        assert {name: mode(tmp_path / name) for name in names} == dict.fromkeys(names, 0o600)
        assert str(db) in caplog.text and "0600" in caplog.text
    finally:
        server.stop()


@pytest.mark.parametrize("theirs", ["runs.db", "runs.db-wal"])
def test_a_store_file_of_another_user_is_refused_naming_it_and_its_owner(
    tmp_path: Path, other_uid: int, theirs: str
) -> None:
    db = tmp_path / "runs.db"
    store_server(db).stop()
    (tmp_path / theirs).touch()
    os.chown(tmp_path / theirs, other_uid, other_uid)
    with pytest.raises(StoreError) as refused:
        store_server(db)
    message = str(refused.value)
    assert str(tmp_path / theirs) in message and f"uid {other_uid}" in message
    assert os.stat(tmp_path / theirs).st_uid == other_uid


def test_a_symlink_planted_as_the_store_is_never_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "victim"
    elsewhere.mkdir()
    (tmp_path / "runs.db").symlink_to(elsewhere / "their.db")  # dangling: SQLite would create it
    with pytest.raises(StoreError, match="symbolic link") as refused:
        store_server(tmp_path / "runs.db")
    assert str(tmp_path / "runs.db") in str(refused.value)
    assert list(elsewhere.iterdir()) == []


# -- the store's lock (M4) -------------------------------------------------------------------------


def test_a_symlink_planted_as_the_store_lock_never_overwrites_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    victim.chmod(0o644)
    (tmp_path / "runs.db.lock").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link") as refused:
        store_server(tmp_path / "runs.db")
    assert str(tmp_path / "runs.db.lock") in str(refused.value)
    assert victim.read_bytes() == b"precious" and mode(victim) == 0o644
    assert not (tmp_path / "runs.db").exists()


@pytest.mark.parametrize("held", [True, False], ids=["held", "not-held"])
def test_a_lock_file_of_another_user_is_refused_without_trusting_what_it_says(
    tmp_path: Path, other_uid: int, held: bool
) -> None:
    lock = tmp_path / "runs.db.lock"
    squatted = orjson.dumps({"pid": 424242, "urls": {"rest": "http://evil.example:9"}, "since": 1.0})
    lock.write_bytes(squatted)
    os.chown(lock, other_uid, other_uid)
    squatter = os.open(lock, os.O_RDONLY)
    try:
        if held:  # the squatter holds the flock too (another open file: it conflicts with ours)
            fcntl.flock(squatter, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreError) as refused:
            store_server(tmp_path / "runs.db")
    finally:
        os.close(squatter)
    assert not isinstance(refused.value, StoreLockedError)
    message = str(refused.value)
    assert str(lock) in message and f"uid {other_uid}" in message
    assert "424242" not in message and "evil.example" not in message
    assert lock.read_bytes() == squatted and os.stat(lock).st_uid == other_uid
    assert not (tmp_path / "runs.db").exists()
