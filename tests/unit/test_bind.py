"""Binding a server port (stream_hub.ports.bind) and the one choice it shares with
the port probe: which address-reuse option the platform needs.

CI runs on Linux; the Windows choice is checked with ``sys.platform`` patched
and a real socket that records its options (the only stand-in in this file).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from stream_hub.errors import PortInUseError
from stream_hub.ports import bind_port, is_port_in_use
from stream_hub.ports.probe import SO_EXCLUSIVEADDRUSE, reuse_option

REUSEADDR = (socket.SOL_SOCKET, socket.SO_REUSEADDR)
EXCLUSIVE = (socket.SOL_SOCKET, SO_EXCLUSIVEADDRUSE)


@pytest.mark.parametrize("platform", ["linux", "darwin", "freebsd14"])
def test_reuse_option_is_reuseaddr_on_posix(platform: str) -> None:
    assert reuse_option(platform) == REUSEADDR


def test_reuse_option_is_exclusiveaddruse_on_windows() -> None:
    assert reuse_option("win32") == EXCLUSIVE
    # winsock's (int)~SO_REUSEADDR, SO_REUSEADDR being 4 there; on Windows
    # CPython's own constant, elsewhere ours with the same value.
    assert SO_EXCLUSIVEADDRUSE == -5 == 0xFFFFFFFB - (1 << 32)
    assert SO_EXCLUSIVEADDRUSE == getattr(socket, "SO_EXCLUSIVEADDRUSE", -5)


@pytest.fixture
def as_windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """``sys.platform`` reads "win32"; sockets record each (level, option) they set."""
    options: list[tuple[int, int]] = []

    class RecordingSocket(socket.socket):
        def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
            options.append((level, option))
            if option == SO_EXCLUSIVEADDRUSE and os.name != "nt":
                return  # this kernel has no such option; the choice is what is tested
            super().setsockopt(level, option, value, *rest)

    monkeypatch.setattr(socket, "socket", RecordingSocket)
    monkeypatch.setattr(sys, "platform", "win32")
    yield options


def test_on_windows_the_binder_and_the_probe_bind_exclusively(as_windows: list[tuple[int, int]]) -> None:
    sock = bind_port("127.0.0.1", 0, "sse")
    port = sock.getsockname()[1]
    sock.close()
    assert as_windows == [EXCLUSIVE]  # and never SO_REUSEADDR, which binds over live listeners

    as_windows.clear()
    assert not is_port_in_use(port)
    assert EXCLUSIVE in as_windows and REUSEADDR not in as_windows


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX semantics of SO_REUSEADDR")
def test_on_posix_a_live_listener_blocks_the_bind_and_time_wait_does_not() -> None:
    listener = bind_port("127.0.0.1", 0, "rest")
    port = listener.getsockname()[1]
    try:
        assert listener.getsockopt(*REUSEADDR) != 0
        with pytest.raises(PortInUseError) as caught:
            bind_port("127.0.0.1", port, "rest", listen=False)
        assert caught.value.port == port
        assert is_port_in_use(port)

        # A connection the server side closes first leaves that side in TIME_WAIT
        # on this port once the client has closed too.
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        listener.setblocking(True)
        conn, _ = listener.accept()
        conn.close()
        assert client.recv(1) == b""
        client.close()
    finally:
        listener.close()
    # Nothing listens any more: free for the next server, which is what "verified" checks.
    bind_port("127.0.0.1", port, "rest", listen=False).close()
    assert not is_port_in_use(port)
