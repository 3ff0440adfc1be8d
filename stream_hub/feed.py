"""The loop side of the hub: wake-ups, commits and subscriber notification.

One :class:`Feed` exists per running server, bound to its loop. Publishing
threads call :meth:`Feed.wake` at most once per batch (the hub guarantees
that); the loop then commits the batch and wakes every subscriber's writer,
which sends everything from its cursor to the head in one write.
"""

from __future__ import annotations

import asyncio
import os
import time

from .hub import Hub

__all__ = ["Feed"]


class Feed:
    """Bridges a :class:`~stream_hub.hub.Hub` to one asyncio loop.

    Attributes:
        closing: set once the server stops; writers flush to the head and end.
        clients: connected subscribers per transport.
    """

    def __init__(self, hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.loop = loop
        self.closing = False
        self.clients = {"sse": 0, "ws": 0}
        self._changed: asyncio.Future[None] = loop.create_future()
        self.last_commit = 0.0
        self.commits = 0
        self.min_interval = float(os.environ.get("SH_MIN_INTERVAL", "0"))
        self._timer: asyncio.TimerHandle | None = None

    # -- publishing side --------------------------------------------------------

    def attach(self) -> None:
        """Route the hub's wake-ups and commits through this loop."""
        self.hub.on_commit = self._notify
        self.hub.wake = self._wake
        # Anything submitted while no loop was attached is committed now.
        self.loop.call_soon_threadsafe(self._commit)

    def detach(self) -> None:
        """Stop routing; later submissions commit inline on their own thread."""
        if self.hub.wake == self._wake:
            self.hub.wake = None
        if self.hub.on_commit == self._notify:
            self.hub.on_commit = None

    def _wake(self) -> None:
        # Any thread; once per batch.
        self.loop.call_soon_threadsafe(self._commit)

    def _commit(self) -> None:
        wait = self.last_commit + self.min_interval - time.monotonic()
        if wait > 0:
            if self._timer is None:
                self._timer = self.loop.call_later(wait, self._timed_commit)
            return
        self.hub.commit()

    def _timed_commit(self) -> None:
        self._timer = None
        self.hub.commit()

    def _notify(self) -> None:
        # Runs on the loop thread right after a commit.
        self.last_commit = time.monotonic()
        self.commits += 1
        changed = self._changed
        self._changed = self.loop.create_future()
        changed.set_result(None)

    # -- subscriber side -------------------------------------------------------

    async def wait(self) -> None:
        """Return after the next commit (or when the feed closes)."""
        if self.closing:
            return
        await asyncio.shield(self._changed)

    def close(self) -> None:
        """Tell every writer to flush what is committed and end."""
        self.closing = True
        changed = self._changed
        self._changed = self.loop.create_future()
        if not changed.done():
            changed.set_result(None)
