"""Reading hub records (stream_hub/processes/registry.py): a record with
fields of the wrong type is treated as absent, with a warning naming its
file, never acted on (issue 22 L3); the registry's files are owner-only and
never followed through a symlink (issue 22 L2)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_hub.errors import StreamHubError
from stream_hub.processes.registry import HubRecord, Registry


def record(**changes: Any) -> dict[str, Any]:
    good: dict[str, Any] = {
        "key": "127.0.0.1-8888-8889-8890",
        "pid": 4242,
        "host": "127.0.0.1",
        "configured": {"sse": 8888, "ws": 8889, "rest": 8890},
        "ports": {"sse": 8888, "ws": 8889, "rest": 8890},
        "epoch": "e",
        "token": "t" * 43,
        "channel": "unix:/tmp/x.sock",
        "started": 1.5,
    }
    good.update(changes)
    return good


def test_a_well_formed_record_is_read() -> None:
    read = HubRecord.from_json(orjson.dumps(record(successor=None, handover_until=2)))
    assert read.pid == 4242 and read.ports["rest"] == 8890


@pytest.mark.parametrize(
    "changes",
    [
        {"pid": "x"},
        {"pid": True},
        {"pid": -1},
        {"ports": []},
        {"ports": {"sse": 1, "ws": 2}},
        {"configured": {"sse": "8888", "ws": 8889, "rest": 8890}},
        {"ports": {"sse": 1, "ws": 2, "rest": 70000}},
        {"token": None},
        {"channel": 5},
        {"started": "yesterday"},
        {"version": "1"},
        {"settings": []},
        {"successor": "me"},
        {"handover_until": "soon"},
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_it(changes: dict[str, Any]) -> None:
    (name,) = changes
    with pytest.raises(ValueError, match=repr(name)):
        HubRecord.from_json(orjson.dumps(record(**changes)))


def test_a_missing_field_is_refused_naming_it() -> None:
    raw = record()
    del raw["channel"]
    with pytest.raises(ValueError, match="channel"):
        HubRecord.from_json(orjson.dumps(raw))


@pytest.mark.parametrize(
    "body", [orjson.dumps(record(pid="x")), orjson.dumps(record(ports=[])), b"[1]", b"{"]
)
def test_registry_read_treats_a_malformed_record_as_absent_with_a_warning_naming_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    directory = tmp_path / "registry"
    registry = Registry(directory)
    path = registry.record_path("k")
    path.write_bytes(body)
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="stream_hub.processes.registry"):
        assert registry.read("k") is None
    assert str(path) in caplog.text


# -- owner-only files, never through a symlink ---------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's outside the registry, that a planted symlink points at."""
    path = tmp_path / "victim.txt"
    path.write_bytes(b"precious")
    path.chmod(0o644)
    return path


def untouched(path: Path) -> bool:
    return path.read_bytes() == b"precious" and stat.S_IMODE(path.stat().st_mode) == 0o644


def test_the_registry_lock_never_follows_a_symlink(tmp_path: Path, victim: Path) -> None:
    registry = Registry(tmp_path / "registry")
    planted = registry.directory / "hub-k.lock"
    planted.symlink_to(victim)
    with pytest.raises(StreamHubError, match="symbolic link") as refused, registry.lock("k"):
        pass
    assert str(planted) in str(refused.value)
    assert untouched(victim)


def test_a_record_reached_through_a_symlink_is_not_read(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(orjson.dumps(record(key="k")))
    elsewhere.chmod(0o600)
    registry.record_path("k").symlink_to(elsewhere)
    assert registry.read("k") is None


def test_writing_a_record_never_follows_a_planted_temporary_file(tmp_path: Path, victim: Path) -> None:
    registry = Registry(tmp_path / "registry")
    path = registry.record_path("k")
    path.with_suffix(f".{os.getpid()}.tmp").symlink_to(victim)
    registry.write(HubRecord.from_json(orjson.dumps(record(key="k"))))
    assert untouched(victim)
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    read = registry.read("k")
    assert read is not None and read.pid == 4242
