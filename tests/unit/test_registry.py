"""Reading hub records (stream_hub/processes/registry.py): a record with
fields of the wrong type is treated as absent, with a warning naming its
file, never acted on (issue 22 L3)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

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
