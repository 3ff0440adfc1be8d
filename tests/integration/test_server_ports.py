"""The server's start path with real processes holding its ports."""

from __future__ import annotations

import logging

import httpx
import pytest

from stream_hub import PortInUseError, StreamConfig, TrainingStreamServer, get_stream_server
from stream_hub.ports import is_port_in_use

from ..processes import Spawner, alive, free_port


def config_with(rest_port: int, policy: str) -> StreamConfig:
    return StreamConfig(sse_port=0, ws_port=0, rest_port=rest_port, port_conflict=policy)


def test_development_takes_the_next_port_and_never_ends_the_holder(
    spawn: Spawner,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Contract v2: the default policy never ends a process it did not start
    (seed 000 ended any holder in development)."""
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    port = free_port()
    holder = spawn.holder(port)
    server = TrainingStreamServer(config_with(port, "auto"))
    with caplog.at_level(logging.INFO):
        server.start()
    try:
        assert alive(holder)
        bound = server.ports["rest"]
        assert bound > port
        assert httpx.get(f"http://127.0.0.1:{bound}/health").json()["status"] == "ok"
        assert f"held by pid {holder.pid}" in caplog.text and f"takes port {bound} instead" in caplog.text
        assert "SIGTERM" not in caplog.text
    finally:
        server.stop()
    assert not is_port_in_use(bound)
    assert alive(holder)


def test_production_refuses_names_port_and_pid_and_leaves_the_holder_alive(
    spawn: Spawner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    port = free_port()
    holder = spawn.holder(port)
    server = TrainingStreamServer(config_with(port, "auto"))
    with pytest.raises(PortInUseError) as info:
        server.start()
    assert info.value.port == port and info.value.pid == holder.pid
    message = str(info.value)
    assert str(port) in message and str(holder.pid) in message and "lsof -i :" in message
    assert alive(holder)
    assert not server.running and server.ports == {}


def test_next_binds_another_port_and_reports_it(
    spawn: Spawner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    holder = spawn.holder(port)
    with caplog.at_level(logging.INFO):
        server = get_stream_server(config=config_with(port, "next"))
    bound = server.ports["rest"]
    assert bound != port and bound > port
    assert server.status()["ports"]["rest"] == bound
    assert server.urls["rest"].endswith(f":{bound}")
    assert f":{bound}/" in caplog.text  # the serving line names the port actually bound
    assert alive(holder)
    assert httpx.get(server.urls["rest"] + "/health").status_code == 200


def test_a_stalled_holder_of_the_third_port_leaves_the_first_two_unbound(
    spawn: Spawner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    sse, ws, rest = free_port(), free_port(), free_port()
    holder = spawn.holder(rest)
    server = TrainingStreamServer(StreamConfig(sse_port=sse, ws_port=ws, rest_port=rest))
    with pytest.raises(PortInUseError):
        server.start()
    assert not is_port_in_use(sse) and not is_port_in_use(ws)
    assert alive(holder)
    holder.kill()
    assert isinstance(holder.wait(timeout=10), int)


@pytest.mark.parametrize("damage", [{"pid": "x"}, {"ports": []}, {"configured": None}])
def test_a_malformed_registry_record_is_ignored_with_a_warning_and_the_hub_starts(
    damage: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 22 L3: such a record made every start fail with a raw exception.
    import orjson

    from stream_hub.processes.registry import Registry, record_key

    from ..processes import free_ports

    sse, ws, rest = free_ports(3)
    registry = Registry()
    key = record_key("127.0.0.1", {"sse": sse, "ws": ws, "rest": rest})
    path = registry.record_path(key)
    record = {
        "key": key,
        "pid": 1,
        "host": "127.0.0.1",
        "configured": {"sse": sse, "ws": ws, "rest": rest},
        "ports": {"sse": sse, "ws": ws, "rest": rest},
        "epoch": "e",
        "token": "t",
        "channel": "unix:/nonexistent",
        "started": 1.0,
        **damage,
    }
    path.write_bytes(orjson.dumps(record))
    path.chmod(0o600)
    server = TrainingStreamServer(StreamConfig(sse_port=sse, ws_port=ws, rest_port=rest))
    try:
        with caplog.at_level(logging.WARNING, logger="stream_hub.processes.registry"):
            server.start()
        assert server.role == "host" and server.ports == {"sse": sse, "ws": ws, "rest": rest}
        assert str(path) in caplog.text
        assert httpx.get(server.urls["rest"] + "/health", timeout=5).status_code == 200
    finally:
        server.stop()
