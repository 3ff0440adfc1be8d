"""Restarts under load, as the soak found them: an eviction sweep that meets
a broken connection, connections of a loop that closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from stream_hub import TrainingStreamServer

from ..clients import stalled_sse
from ..conftest import committed, free_config, wait_for


class _BrokenWire:
    """A transport whose abort fails (as on a loop that has closed)."""

    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True
        raise RuntimeError("Event loop is closed")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def get_write_buffer_size(self) -> int:
        return 0


class _Conn:
    def __init__(self, paused_since: float | None) -> None:
        self.wire: Any = _BrokenWire()
        self.paused_since = paused_since
        self.home: asyncio.AbstractEventLoop | None = None


def test_eviction_goes_on_after_a_connection_that_cannot_be_closed() -> None:
    server = TrainingStreamServer(free_config(send_timeout=0.3, heartbeat_interval=0.5))
    server.start()
    try:
        loop = server._host.loop.loop
        assert loop is not None
        broken = _Conn(paused_since=0.0)  # paused since the clock began: evicted first
        loop.call_soon_threadsafe(server.clients.add, broken, None)
        wait_for(lambda: broken.wire.closing, what="the broken connection's eviction tried")
        seq = 0
        for _ in range(1200):  # ~5 MB: past the kernel's send buffer, so the client pauses
            seq = server.publish("blob", {"x": "y" * 4000})
        committed(server, seq)
        with contextlib.closing(stalled_sse(server, last_event_id=1)):
            wait_for(lambda: server.clients.evicted >= 2, what="the stalled client evicted")
        loop.call_soon_threadsafe(server.clients.discard, broken, None)
    finally:
        server.stop()


def test_connections_of_a_closed_loop_are_forgotten() -> None:
    server = TrainingStreamServer(free_config(send_timeout=0.3))
    server.start()
    closed = asyncio.new_event_loop()
    closed.close()
    try:
        stale = _Conn(paused_since=0.0)
        stale.home = closed
        server.clients.live.add(stale)
        wait_for(lambda: stale not in server.clients.live, what="the stale entry dropped")
        assert not stale.wire.closing  # not touched: its loop is gone
    finally:
        server.stop()
