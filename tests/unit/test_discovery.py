"""Discovery's decisions with plain values (stream_hub/client/discovery.py):
what a ``/health`` answer says about a place, which place wins, and what is
said when none does. The wiring, against real processes, is in
``tests/integration/test_discovery.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_hub import StreamConfig
from stream_hub.client import HubNotFound, NotAHub
from stream_hub.client.discovery import Place, decide, judge, places
from stream_hub.processes.registry import HubRecord, Registry, record_key

CONFIG = StreamConfig.reading([], sse_port=18888, ws_port=18889, rest_port=18890)
CONFIGURED = Place("configured", "127.0.0.1", {"sse": 18888, "ws": 18889, "rest": 18890})
RECORDED = Place("registry", "127.0.0.1", {"sse": 18888, "ws": 18889, "rest": 18891}, pid=4242)
HUB = {"status": "ok", "service": "stream_hub", "pid": 4242}


@pytest.mark.parametrize(
    ("place", "health", "verdict"),
    [
        (CONFIGURED, None, "nothing"),
        (CONFIGURED, HUB, "hub"),
        (CONFIGURED, {**HUB, "pid": 7}, "hub"),  # any stream_hub hub on the configured ports
        (CONFIGURED, {}, "foreign"),  # not JSON, not 200
        (CONFIGURED, {"status": "ok"}, "foreign"),  # JSON, but not ours
        (RECORDED, HUB, "hub"),
        (RECORDED, {**HUB, "pid": 7}, "stale"),  # another process holds the recorded port
        (RECORDED, {}, "stale"),  # a foreign program took the recorded port since
        (RECORDED, None, "nothing"),
    ],
)
def test_judge(place: Place, health: dict[str, object] | None, verdict: str) -> None:
    assert judge(place, health) == verdict


def test_the_first_hub_wins() -> None:
    found = decide([(RECORDED, "hub", 4242)], "the registry record k", CONFIG)
    assert found.ports["rest"] == 18891 and found.moved and found.pid == 4242
    assert found.urls == {
        "sse": "http://127.0.0.1:18888",
        "ws": "ws://127.0.0.1:18889",
        "rest": "http://127.0.0.1:18891",
    }
    found = decide([(RECORDED, "stale", 7), (CONFIGURED, "hub", 9)], "the registry record k", CONFIG)
    assert found.ports["rest"] == 18890 and not found.moved


def test_a_foreign_configured_port_is_named() -> None:
    with pytest.raises(NotAHub, match=r"^port 18890 answers, but not as a stream_hub hub"):
        decide([(RECORDED, "nothing", None), (CONFIGURED, "foreign", None)], "the registry record k", CONFIG)


def test_nothing_says_where_it_looked_in_one_line() -> None:
    with pytest.raises(HubNotFound) as caught:
        decide([(RECORDED, "stale", None), (CONFIGURED, "nothing", None)], "the registry record k", CONFIG)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "no hub runs (looked at the registry record k naming a hub that no longer answers there, "
        "then http://127.0.0.1:18890 (the configured REST port))"
    )
    zero = StreamConfig.reading([], sse_port=0, ws_port=0, rest_port=0)
    with pytest.raises(HubNotFound, match=r"the REST port is 0"):
        decide([], "the registry (no record for x)", zero)


def test_places_reads_the_record_of_the_configured_ports(tmp_path: Path) -> None:
    directory = tmp_path / "registry"
    assert places(CONFIG, str(directory))[0] == [CONFIGURED]
    assert not directory.exists()  # a client never creates the registry
    registry = Registry(directory)
    key = record_key("127.0.0.1", {"sse": 18888, "ws": 18889, "rest": 18890})
    registry.write(
        HubRecord(key, 4242, "127.0.0.1", dict(CONFIGURED.ports), dict(RECORDED.ports), "e", "t", "c", 0.0)
    )
    found, note = places(CONFIG, str(directory))
    assert found == [RECORDED, CONFIGURED] and key in note


def test_a_registry_that_cannot_be_used_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong STREAM_HUB_REGISTRY is named in what discovery says, not
    reported as a registry without a record (the CLI's one line hid it)."""
    monkeypatch.setenv("STREAM_HUB_REGISTRY", "relative/registry")
    found, note = places(CONFIG)
    assert found == [CONFIGURED]
    assert "STREAM_HUB_REGISTRY must be an absolute path" in note and "no record" not in note
    with pytest.raises(HubNotFound, match="STREAM_HUB_REGISTRY must be an absolute path"):
        decide([(CONFIGURED, "nothing", None)], note, CONFIG)
