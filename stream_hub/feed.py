"""The loop side of the hub: wake-ups, commits and subscriber notification.

One :class:`Feed` exists per running server, bound to its loop. Publishing
threads call :meth:`Feed.wake` at most once per batch (the hub guarantees
that); the loop then commits the batch and wakes every subscriber's writer,
which sends everything from its cursor to the head in one write.

When to commit: at once, unless the loop keeps getting to run late. The loop
thread shares the GIL with the training thread; if that thread is busy in
Python, every wake-up of the loop takes the GIL from it, and each write to each
client does it again. Lateness (time from "wake up" to "running") is how that
shows, so while it is high, commits are spaced ``busy_interval`` apart and
every client gets that interval's events in one write. An idle or I/O-bound
training thread keeps lateness near zero and latency at its minimum.
"""

from __future__ import annotations

import asyncio
import time

from .hub import Hub

__all__ = ["Feed"]

# Mean lateness (seconds) above which the loop is competing for the GIL.
CONTENDED = 0.002
# Weight of the newest sample in the lateness average.
_ALPHA = 0.2


class Feed:
    """Bridges a :class:`~stream_hub.hub.Hub` to one asyncio loop.

    Attributes:
        closing: set once the server stops; writers flush to the head and end.
        clients: connected subscribers per transport.
        lateness: moving average of how late the loop ran when woken (s).
    """

    def __init__(self, hub: Hub, loop: asyncio.AbstractEventLoop, busy_interval: float = 0.05,
                 heartbeat: float = 15.0) -> None:
        self.hub = hub
        self.loop = loop
        self.busy_interval = busy_interval
        self.heartbeat = heartbeat
        self.beats = 0  # heartbeats so far; idle writers send a keep-alive on each
        self._beat_timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.clients = {"sse": 0, "ws": 0}
        self.lateness = 0.0
        self.commits = 0
        self._last_commit = 0.0
        self._requested = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._waiters: list[asyncio.Future[None]] = []

    # -- publishing side --------------------------------------------------------

    def attach(self) -> None:
        """Route the hub's wake-ups and commits through this loop."""
        self.hub.on_commit = self._notify
        self.hub.wake = self._wake
        self._beat_timer = self.loop.call_later(self.heartbeat, self._beat)
        # Anything submitted while no loop was attached is committed now.
        self.loop.call_soon_threadsafe(self.hub.commit)

    def detach(self) -> None:
        """Stop routing; later submissions commit inline on their own thread."""
        if self.hub.wake == self._wake:
            self.hub.wake = None
        if self.hub.on_commit == self._notify:
            self.hub.on_commit = None
        for timer in (self._timer, self._beat_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._beat_timer = None

    def _wake(self) -> None:
        # Any thread; once per batch.
        self._requested = time.monotonic()
        self.loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        now = time.monotonic()
        self._observe(now - self._requested)
        if self._timer is not None:
            return  # a spaced commit is already due
        if self.lateness > CONTENDED:
            wait = self._last_commit + self.busy_interval - now
            if wait > 0:
                self._timer_due = now + wait
                self._timer = self.loop.call_later(wait, self._timed)
                return
        self.hub.commit()

    def _timed(self) -> None:
        self._timer = None
        self._observe(time.monotonic() - self._timer_due)
        self.hub.commit()

    def _observe(self, late: float) -> None:
        self.lateness += _ALPHA * (max(0.0, late) - self.lateness)

    def _beat(self) -> None:
        # One timer for all clients, instead of a keep-alive task per client.
        self.beats += 1
        self._beat_timer = self.loop.call_later(self.heartbeat, self._beat)
        self._wake_waiters()

    def _notify(self) -> None:
        # Runs on the loop thread right after a commit: wake every writer.
        self._last_commit = time.monotonic()
        self.commits += 1
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- subscriber side -------------------------------------------------------

    def waiter(self) -> asyncio.Future[None]:
        """A future resolved by the next commit, heartbeat or close."""
        waiter = self.loop.create_future()
        if self.closing:
            waiter.set_result(None)
        else:
            self._waiters.append(waiter)
        return waiter

    async def wait(self) -> None:
        """Return after the next commit, heartbeat, or when the feed closes."""
        await self.waiter()

    def close(self) -> None:
        """Tell every writer to flush what is committed and end."""
        self.closing = True
        self._notify()
