"""Feed: when the loop commits, and how writers are woken (no sockets)."""

from __future__ import annotations

import asyncio
import time

from stream_hub.feed import CONTENDED, Feed
from stream_hub.hub import Hub


async def test_an_idle_loop_commits_at_once_and_wakes_every_writer() -> None:
    hub = Hub(100)
    feed = Feed(hub, asyncio.get_running_loop(), busy_interval=0.2, heartbeat=60)
    feed.attach()
    try:
        await asyncio.sleep(0)  # the attach-time commit
        waiters = [feed.waiter() for _ in range(3)]
        seq = hub.log({"x": 1})
        await asyncio.wait_for(asyncio.gather(*waiters), 1)
        assert hub.head == seq and feed.lateness < CONTENDED
    finally:
        feed.detach()


async def test_a_late_loop_spaces_commits_by_the_busy_interval() -> None:
    hub = Hub(100)
    feed = Feed(hub, asyncio.get_running_loop(), busy_interval=0.2, heartbeat=60)
    feed.attach()
    try:
        await asyncio.sleep(0)
        hub.log({"x": 1})
        await asyncio.sleep(0.01)
        first = hub.head
        # The loop has been running late (the GIL was busy): next commit waits.
        for _ in range(30):
            feed._observe(0.01)
        assert feed.lateness > CONTENDED
        seq = hub.log({"x": 2})
        await asyncio.sleep(0.02)
        assert hub.head == first  # held back, not lost
        deadline = time.monotonic() + 2
        while hub.head < seq and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert hub.head == seq
    finally:
        feed.detach()


async def test_a_long_backlog_is_committed_at_once_whatever_the_spacing() -> None:
    hub = Hub(10)
    feed = Feed(hub, asyncio.get_running_loop(), busy_interval=30.0, heartbeat=60)
    feed.attach()
    try:
        await asyncio.sleep(0)
        for _ in range(30):
            feed._observe(0.01)
        hub.log({"x": 0})
        await asyncio.sleep(0.01)
        # Spaced 30 s apart now; a backlog past the limit asks for a commit anyway.
        last = 0
        for i in range(60_000):
            last = hub.log({"x": i})
        deadline = time.monotonic() + 5
        while hub.head < last and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert hub.head >= 50_000
    finally:
        feed.detach()


async def test_close_releases_every_waiter_and_later_ones_at_once() -> None:
    hub = Hub(10)
    feed = Feed(hub, asyncio.get_running_loop(), heartbeat=60)
    waiters = [feed.waiter() for _ in range(5)]
    feed.close()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert feed.waiter().done()


async def test_heartbeat_wakes_idle_writers() -> None:
    hub = Hub(10)
    feed = Feed(hub, asyncio.get_running_loop(), heartbeat=0.05)
    feed.attach()
    try:
        waiter = feed.waiter()
        await asyncio.wait_for(waiter, 2)
        assert feed.beats >= 1 and hub.head == 0
    finally:
        feed.detach()
