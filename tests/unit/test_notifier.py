"""LoopNotifier: when the loop commits, and how writers are woken (no sockets)."""

from __future__ import annotations

import asyncio
import threading
import time

from stream_hub.core.hub import Hub
from stream_hub.runtime.notifier import CONTENDED, HOLD, LoopNotifier


def contend(notifier: LoopNotifier) -> None:
    """Space commits from now on, for tests of what spacing does (not of when it starts)."""
    notifier._contended_until = time.monotonic() + 3600


async def until_contended(notifier: LoopNotifier, hub: Hub) -> float:
    """Log every 10 ms until the notifier spaces commits (a spinning thread
    makes every wake-up late), 30 s at most; that deadline."""
    deadline = time.monotonic() + 30
    while not notifier.contended and time.monotonic() < deadline:
        hub.log({"x": 1})
        await asyncio.sleep(0.01)
    return deadline


def spin(stop: threading.Event) -> None:
    """A training thread busy in Python: it holds the GIL but at switch intervals."""
    n = 0
    while not stop.is_set():
        n += 1


async def test_an_idle_loop_commits_at_once_and_wakes_every_writer() -> None:
    hub = Hub(100)
    notifier = LoopNotifier(hub, asyncio.get_running_loop(), busy_interval=0.2, heartbeat=60)
    notifier.attach()
    try:
        await asyncio.sleep(0)  # the attach-time commit
        waiters = [notifier.waiter() for _ in range(3)]
        seq = hub.log({"x": 1})
        await asyncio.wait_for(asyncio.gather(*waiters), 1)
        assert hub.head == seq and notifier.lateness < CONTENDED
    finally:
        notifier.detach()


async def test_a_thread_busy_in_python_spaces_commits_by_the_busy_interval() -> None:
    hub = Hub(100)
    notifier = LoopNotifier(hub, asyncio.get_running_loop(), busy_interval=0.2, heartbeat=60)
    notifier.attach()
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(stop,))
    try:
        await asyncio.sleep(0)
        spinner.start()
        # Every wake-up now waits for the GIL behind the spinning thread.
        deadline = await until_contended(notifier, hub)
        assert notifier.contended and notifier.busy_share >= 0.5
        # 40 events 10 ms apart: a commit each when idle; now one per 0.2 s.
        commits = notifier.commits
        for _ in range(40):
            seq = hub.log({"x": 2})
            await asyncio.sleep(0.01)
        assert notifier.commits - commits < 20
        while hub.head < seq and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert hub.head == seq  # held back, never lost
    finally:
        stop.set()
        if spinner.is_alive():
            spinner.join()
        notifier.detach()


async def test_lateness_without_a_busy_thread_never_spaces_commits() -> None:
    # The loop's own work (a burst to many clients) or another program taking
    # the CPU makes it late too; batching would not help, so it does not start.
    hub = Hub(100)
    notifier = LoopNotifier(hub, asyncio.get_running_loop(), busy_interval=30.0, heartbeat=60)
    notifier.attach()
    try:
        await asyncio.sleep(0)
        for _ in range(50):
            notifier.loop.call_soon(time.sleep, 0.005)  # the loop itself busy: its wake-ups run late
            seq = hub.log({"x": 1})
            await asyncio.sleep(0.01)
        assert notifier.lateness > CONTENDED and not notifier.contended
        assert hub.head == seq  # committed at once, not 30 s later
    finally:
        notifier.detach()


async def test_spacing_ends_once_the_busy_thread_stops() -> None:
    hub = Hub(100)
    notifier = LoopNotifier(hub, asyncio.get_running_loop(), busy_interval=0.05, heartbeat=60)
    notifier.attach()
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(stop,))
    try:
        await asyncio.sleep(0)
        spinner.start()
        await until_contended(notifier, hub)
        assert notifier.contended
        stop.set()
        spinner.join()
        await asyncio.sleep(HOLD)
        assert not notifier.contended
        seq = hub.log({"x": 2})
        await asyncio.sleep(0.01)
        assert hub.head == seq  # at once again
    finally:
        stop.set()
        notifier.detach()


async def test_a_long_backlog_is_committed_at_once_whatever_the_spacing() -> None:
    hub = Hub(10)
    notifier = LoopNotifier(hub, asyncio.get_running_loop(), busy_interval=30.0, heartbeat=60)
    notifier.attach()
    try:
        await asyncio.sleep(0)
        contend(notifier)
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
        notifier.detach()


async def test_close_releases_every_waiter_and_later_ones_at_once() -> None:
    hub = Hub(10)
    notifier = LoopNotifier(hub, asyncio.get_running_loop(), heartbeat=60)
    waiters = [notifier.waiter() for _ in range(5)]
    notifier.close()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert notifier.waiter().done()


async def test_heartbeat_wakes_idle_writers() -> None:
    hub = Hub(10)
    notifier = LoopNotifier(hub, asyncio.get_running_loop(), heartbeat=0.05)
    notifier.attach()
    try:
        waiter = notifier.waiter()
        await asyncio.wait_for(waiter, 2)
        assert notifier.beats >= 1 and hub.head == 0
    finally:
        notifier.detach()


async def test_after_detach_every_submission_is_committed_inline() -> None:
    hub = Hub(100)
    notifier = LoopNotifier(hub, asyncio.get_running_loop(), busy_interval=30.0, heartbeat=60)
    notifier.attach()
    contend(notifier)  # spaced 30 s apart: the commit is held back
    hub.log({"x": 0})
    await asyncio.sleep(0)
    held = hub.log({"x": 1})
    notifier.detach()  # the timer is cancelled: what it held back is committed now
    assert hub.head == held and hub.notifier is None
    later = hub.log({"x": 2})
    assert hub.head == later  # no wake left scheduled that never comes


def test_a_submitter_never_commits_while_a_notifier_is_attached() -> None:
    """attach() waits for an inline commit in progress; afterwards commits only
    happen on the notifier's thread."""
    hub = Hub(1000)
    committing_threads: set[str] = set()
    original = hub.ring.store

    def store(*args: object, **kwargs: object) -> None:
        committing_threads.add(threading.current_thread().name)
        original(*args, **kwargs)  # type: ignore[arg-type]

    hub.ring.store = store  # type: ignore[method-assign]
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            hub.log({"x": 1})

    publisher = threading.Thread(target=publish, name="publisher")
    publisher.start()
    try:
        wait = threading.Event()
        while not committing_threads:
            wait.wait(0.001)

        class Recorder:
            def wake(self) -> None:
                pass

            def wake_urgent(self) -> None:
                pass

            def committed(self) -> None:
                pass

        notifier = Recorder()
        hub.attach(notifier)
        committing_threads.clear()
        for _ in range(200):
            hub.log({"x": 2})
            wait.wait(0.0005)
        assert committing_threads == set()  # nobody but the notifier's thread may commit
        hub.commit()  # "the notifier's thread": here, the test
        assert committing_threads == {threading.current_thread().name}
        hub.detach(notifier)
    finally:
        stop.set()
        publisher.join()
    assert hub.head == hub.last_seq
