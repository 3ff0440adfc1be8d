"""The decisions of :mod:`stream_hub.transports.clients` with plain values:
which connections a stop need not wait for (:class:`StallWatch`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stream_hub.transports.clients import ClientRegistry, StallWatch


class Wire:
    """A transport with ``queued`` bytes waiting in it."""

    def __init__(self, queued: int = 0) -> None:
        self.queued = queued
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.queued

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True
        self.queued = 0


class Conn:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, queued: int = 0, paused_since: float | None = None
    ) -> None:
        self.wire: Any = Wire(queued)
        self.paused_since = paused_since
        self.home = loop
        self.stream: Any = None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def watch_of(
    loop: asyncio.AbstractEventLoop, *conns: Conn, registry: ClientRegistry | None = None
) -> StallWatch:
    registry = registry or ClientRegistry(send_timeout=10.0, buffer_limit=1 << 20)
    registry.live.update(conns)
    return StallWatch(registry, loop)


def test_a_connection_is_stalled_once_a_second_look_finds_none_of_its_bytes_gone(
    loop: asyncio.AbstractEventLoop,
) -> None:
    stuck = Conn(loop, queued=70_000, paused_since=1.0)
    idle = Conn(loop)
    watch = watch_of(loop, stuck, idle)
    assert watch.look() == set()  # first seen with bytes queued: not judged yet
    assert watch.look() == {stuck}
    stuck.wire.queued += 20  # a ping queued behind the rest: still nothing taken
    assert watch.look() == {stuck}


def test_a_connection_that_takes_some_bytes_is_waited_for_from_then_on(
    loop: asyncio.AbstractEventLoop,
) -> None:
    slow = Conn(loop, queued=70_000, paused_since=1.0)
    watch = watch_of(loop, slow)
    watch.look()
    slow.wire.queued = 69_000
    assert watch.look() == set()
    slow.wire.queued = 80_000  # written to again: it drained once, it is a reader
    assert watch.look() == set()


def test_a_connection_that_resumed_and_paused_again_between_looks_is_waited_for(
    loop: asyncio.AbstractEventLoop,
) -> None:
    reader = Conn(loop, queued=70_000, paused_since=1.0)
    watch = watch_of(loop, reader)
    watch.look()
    reader.paused_since = 2.0  # drained below the low-water mark, then filled up again
    assert watch.look() == set()


def test_connections_with_nothing_queued_or_of_another_loop_are_never_stalled(
    loop: asyncio.AbstractEventLoop,
) -> None:
    other_loop = asyncio.new_event_loop()
    try:
        empty = Conn(loop)
        elsewhere = Conn(other_loop, queued=70_000, paused_since=1.0)
        watch = watch_of(loop, empty, elsewhere)
        for _ in range(3):
            assert watch.look() == set()
    finally:
        other_loop.close()


def test_a_stop_drops_the_stalled_once_only_their_streams_are_left(loop: asyncio.AbstractEventLoop) -> None:
    async def scenario() -> None:
        ended = loop.create_future()
        stuck = Conn(loop, queued=70_000, paused_since=1.0)
        healthy = Conn(loop)
        registry = ClientRegistry(send_timeout=10.0, buffer_limit=1 << 20)
        watch = watch_of(loop, stuck, healthy, registry=registry)
        watch.look()

        async def stream(conn: Conn) -> None:
            if conn is stuck:  # its writer waits for the transport until it goes
                while not conn.wire.aborted:
                    await asyncio.sleep(0)
            else:
                await ended

        stuck.stream = loop.create_task(stream(stuck))
        healthy.stream = loop.create_task(stream(healthy))
        flushing = loop.create_task(watch.flush({stuck.stream, healthy.stream}, time.monotonic() + 60))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not stuck.wire.aborted  # the healthy stream is still running: both waited for
        ended.set_result(None)
        assert await asyncio.wait_for(flushing, 10) == set()
        assert stuck.wire.aborted and not healthy.wire.aborted
        assert registry.dropped_stalled == 1

    loop.run_until_complete(scenario())
