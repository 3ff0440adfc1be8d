"""A port held by this very process is said to be: the error, the warning
when the hub moves to other ports, and the ports table name this process
and tell what to do here — never "an unknown process" (a socket bound but
not listening is in no table the kernel lists) nor "kill <our own pid>"."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import pytest

from stream_hub import PortInUseError, StreamConfig, TrainingStreamServer
from stream_hub.ports.report import format_ports_report, ports_report


@pytest.fixture(params=["bound", "listening"])
def held_here(request: pytest.FixtureRequest) -> Iterator[int]:
    """A port this process holds: bound only (an unfinished server), or listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    if request.param == "listening":
        sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _config(port: int, policy: str) -> StreamConfig:
    return StreamConfig(sse_port=0, ws_port=0, rest_port=port, port_conflict=policy, store=False)


def test_the_error_names_this_process(held_here: int) -> None:
    with pytest.raises(PortInUseError) as raised:
        TrainingStreamServer(_config(held_here, "fail")).start()
    message = str(raised.value)
    assert raised.value.pid == os.getpid()
    assert f"in use by this process (pid {os.getpid()})" in message, message
    assert "unknown" not in message and "kill" not in message, message


def test_the_warning_when_moving_names_this_process(held_here: int, caplog: pytest.LogCaptureFixture) -> None:
    server = TrainingStreamServer(_config(held_here, "auto"))
    with caplog.at_level(logging.WARNING, logger="stream_hub.roles.placement"):
        server.start()
    try:
        assert server.ports["rest"] != held_here
    finally:
        server.stop()
    moved = [r.getMessage() for r in caplog.records if "not a hub to join" in r.getMessage()]
    assert len(moved) == 1 and f"held by this process (pid {os.getpid()})" in moved[0], moved
    assert "--free" not in moved[0]  # ending the holder would end us


def test_the_ports_table_names_this_process(held_here: int) -> None:
    rows = ports_report(_config(held_here, "fail"))
    rest = next(row for row in rows if row["name"] == "rest")
    assert rest["pid"] == os.getpid() and str(rest["process"]).startswith("this process"), rest
    assert "unknown" not in format_ports_report(rows)
