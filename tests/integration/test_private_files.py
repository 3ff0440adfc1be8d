"""Store, lock and registry files are owner-only and never followed through
a symlink (contract v3, "Same user by default"; issue 22 M3, M4, L2).

The tests run as root, so another user is real: files and directories are
chowned to a throwaway one (``other_uid``). Root can open anyone's file, so
every refusal here is stream_hub's own check, not the kernel's.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stream_hub import StreamConfig, TrainingStreamServer
from stream_hub.errors import StoreError, StoreLockedError
from stream_hub.processes.registry import default_directory, record_key

from ..conftest import wait_for
from ..processes import Spawner, free_ports
from .test_processes import done, hub_env, release, start
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


# -- the registry (L2) ------------------------------------------------------------------------------


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp dir like /tmp (sticky, anyone may create in it) as this
    process's, and no XDG_RUNTIME_DIR: the registry's first choice is then
    ``<tmp>/stream_hub-<uid>``, a name anyone can take first. (A short path:
    the channel's Unix socket is made in the registry.)"""
    tmp = Path(tempfile.mkdtemp(prefix="sh-"))
    tmp.chmod(0o1777)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def hub_on_fixed_ports() -> tuple[TrainingStreamServer, list[int], str]:
    """A started hub on free fixed ports (so it meets others in the registry),
    its ports and its registry key."""
    ports = free_ports(3)
    sse, ws, rest = ports
    server = TrainingStreamServer(StreamConfig(sse_port=sse, ws_port=ws, rest_port=rest))
    server.start()
    return server, ports, record_key("127.0.0.1", {"sse": sse, "ws": ws, "rest": rest})


def joins(spawn: Spawner, server: TrainingStreamServer, ports: list[int]) -> None:
    """Another process of this user, on the same ports, finds the hub and joins it."""
    joiner, ready = start(spawn, hub_env(ports), "--steps", "3", "--interval", "0", "--hold")
    assert ready["ready"] == "joined" and ready["urls"] == server.urls, joiner.err.text
    release(joiner)
    done(joiner)


@pytest.mark.parametrize("squat", ["directory", "symlink"])
def test_a_registry_directory_taken_by_another_user_does_not_block_a_hub(
    shared_tmp: Path, other_uid: int, squat: str, caplog: pytest.LogCaptureFixture, spawn: Spawner
) -> None:
    squatted = shared_tmp / f"stream_hub-{os.geteuid()}"
    theirs = squatted
    if squat == "symlink":
        theirs = shared_tmp / "theirs"
        theirs.mkdir(mode=0o777)
        os.chown(theirs, other_uid, other_uid)
        squatted.symlink_to(theirs)
        os.lchown(squatted, other_uid, other_uid)
    else:
        squatted.mkdir(mode=0o777)
        os.chown(squatted, other_uid, other_uid)
    with caplog.at_level(logging.WARNING, logger="stream_hub.processes.registry"):
        server, ports, key = hub_on_fixed_ports()
    try:
        assert server.role == "host"
        assert str(squatted) in caplog.text
        used = default_directory()  # where every process of this user meets (and discovery looks)
        assert used != squatted and not str(used).startswith(str(theirs))
        info = os.lstat(used)
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and mode(used) == 0o700
        assert (used / f"hub-{key}.json").is_file() and mode(used / f"hub-{key}.json") == 0o600
        assert mode(used / f"hub-{key}.lock") == 0o600
        assert list(theirs.iterdir()) == []
        joins(spawn, server, ports)  # the user's processes pass over the same place, and meet
    finally:
        server.stop()


def test_a_registry_too_deep_for_a_unix_socket_is_reached_over_tcp(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch, spawn: Spawner
) -> None:
    # The data directory's place can be deep: a socket path is at most 107 bytes.
    deep = shared_tmp / ("d" * 60) / ("e" * 60)
    deep.mkdir(mode=0o700, parents=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    server, ports, _key = hub_on_fixed_ports()
    try:
        assert server.role == "host"
        joins(spawn, server, ports)
    finally:
        server.stop()


@pytest.mark.parametrize("kept", ["XDG_RUNTIME_DIR", "TMPDIR"])
def test_under_sudo_the_registry_is_roots_and_nothing_is_left_in_the_users_directories(
    shared_tmp: Path, other_uid: int, monkeypatch: pytest.MonkeyPatch, kept: str
) -> None:
    # `sudo -E python train.py`: root, with the invoking user's environment.
    users = shared_tmp / "u"
    users.mkdir(mode=0o700)
    os.chown(users, other_uid, other_uid)
    monkeypatch.setenv("SUDO_UID", str(other_uid))
    monkeypatch.setenv("SUDO_GID", str(other_uid))
    monkeypatch.setenv(kept, str(users))
    monkeypatch.setattr(tempfile, "tempdir", None)
    server, _ports, key = hub_on_fixed_ports()
    try:
        assert server.role == "host"
        assert list(users.iterdir()) == []
        used = default_directory()
        assert os.lstat(used).st_uid == os.geteuid() and (used / f"hub-{key}.json").is_file()
    finally:
        server.stop()
    assert list(users.iterdir()) == []
