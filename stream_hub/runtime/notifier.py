"""The loop side of the hub: wake-ups, commits and subscriber notification.

One :class:`LoopNotifier` exists per running server, bound to its loop and
given to the hub (:meth:`Intake.attach <stream_hub.core.intake.Intake.attach>`) before any
listener accepts. Publishing threads call :meth:`LoopNotifier.wake` at most
once per batch (the hub guarantees that); the loop then commits the batch
(stores it in the ring) and wakes every subscriber's writer, which sends
everything from its cursor to the head in one write.

When to commit: at once (at most every ``MIN_INTERVAL``, so a publisher in a
tight loop does not wake the loop per event), unless the loop is competing
for the GIL with a busy thread of this process. It shares the GIL with the
training thread; if that thread is busy in Python, every wake-up takes the
GIL from it, and every socket write hands the GIL over and waits to get it
back. While that is so, commits are spaced ``busy_interval`` apart and each
client gets that interval's events in one write.

Contention is measured directly, per wake-up: the loop ran late (time from
"wake up" to "running") *and*, over the same stretch, other threads of this
process kept a CPU busy (the process's CPU time minus the loop thread's own).
Lateness with no other busy thread is not contention — the loop's own work
(a burst to many clients, a client connecting) or another program taking
the CPU — and batching would not help it, so it does not count. Batching
lasts ``HOLD`` seconds past the last contended wake-up (a CPU-bound loop
renews it at every commit), so it ends within half a second of its cause,
whatever happened before. An idle or I/O-bound training thread (GPU work,
data loading) is never contended and gets the minimum latency.

Writers share the loop's turns (:class:`WriteTurns`): a commit wakes every
writer at once, and without a bound one turn of the loop would hand its whole
fan-out to the kernel (a 1 MiB event to 200 clients: 200 MiB of socket
writes, a few hundred ms) before it polls its sockets again, so a request or
a new connection arriving meanwhile would wait for all of it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ..core.hub import Hub

__all__ = ["TURN_BYTES", "LoopNotifier", "WriteTurns"]

# Mean lateness (seconds) above which the loop is competing for the GIL.
CONTENDED = 0.002
# Commits are at least this far apart even when idle: a publisher in a tight
# loop then wakes the loop (a syscall, and a GIL hand-off) at most 1000 times/s.
MIN_INTERVAL = 0.001
# Weight of the newest sample in the lateness average (reported, not decided on).
_ALPHA = 0.2
# Seconds commits stay spaced after the last contended wake-up.
HOLD = 0.5
# Share of one CPU that other threads of the process must have used since the
# last measure for the loop's lateness to count as contention.
BUSY_SHARE = 0.5
# The shortest stretch over which that share is measured (shorter ones keep
# the last share: CPU clocks mean little over microseconds).
_SHARE_WINDOW = 0.005
#: Bytes the writers of one loop hand to their transports in one turn of the
#: loop, before the rest wait for a later turn: a few milliseconds of socket
#: writes between two polls of the sockets, and still one select() call per
#: 4 MiB written, which costs a fan-out nothing measurable.
TURN_BYTES = 4 * 1024 * 1024


class WriteTurns:
    """Shares a loop's turns between its writers, first come, first served.

    A writer claims the bytes it is about to write (:meth:`take`); within the
    turn's budget it writes at once, past it it waits for a later turn, in
    the order the writers asked. A turn always lets one write through, however
    large. Each turn starts with a callback scheduled by the one before, after
    the loop has polled its sockets: what arrived meanwhile (a request, a new
    connection) runs between two turns' writes.

    Once closed (the server stops) every write goes at once: what the stop
    waits for is the streams' flush, by a deadline, not the loop's answers.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, budget: int = TURN_BYTES) -> None:
        self.loop = loop
        self.budget = budget
        self._spent = 0  # claimed in this turn
        self._queue: deque[tuple[asyncio.Future[None], int]] = deque()
        self._next: asyncio.Handle | None = None
        self._closed = False

    def take(self, nbytes: int) -> asyncio.Future[None] | None:
        """Claim ``nbytes`` for one write: None to write now, else a future
        resolved (FIFO) in the turn the write may happen in."""
        # HOT PATH (every chunk a writer sends): two comparisons when under budget.
        if self._closed:
            return None
        if not self._queue and (not self._spent or self._spent + nbytes <= self.budget):
            self._spent += nbytes
            if self._next is None:
                self._next = self.loop.call_soon(self._turn)
            return None
        waiter = self.loop.create_future()
        self._queue.append((waiter, nbytes))
        if self._next is None:
            self._next = self.loop.call_soon(self._turn)
        return waiter

    def _turn(self) -> None:
        self._next = None
        self._spent = 0
        queue = self._queue
        while queue and (not self._spent or self._spent + queue[0][1] <= self.budget):
            waiter, nbytes = queue.popleft()
            if not waiter.done():  # else its writer went away while it waited
                self._spent += nbytes
                waiter.set_result(None)
        if queue or self._spent:
            self._next = self.loop.call_soon(self._turn)

    def close(self) -> None:
        """Let every waiting writer write now, and every later one at once."""
        self._closed = True
        queue, self._queue = self._queue, deque()
        for waiter, _ in queue:
            if not waiter.done():
                waiter.set_result(None)


class LoopNotifier:
    """Bridges a :class:`~stream_hub.core.hub.Hub` to one asyncio loop: the hub's
    :class:`~stream_hub.core.intake.Notifier`, and what the writers wait on.

    Attributes:
        closing: set once the server stops; writers flush to the head and end.
        clients: connected subscribers per transport.
        lateness: moving average of how late the loop ran when woken (s).
        busy_share: the share of a CPU the process's other threads used lately.
    """

    def __init__(
        self, hub: Hub, loop: asyncio.AbstractEventLoop, busy_interval: float = 0.25, heartbeat: float = 15.0
    ) -> None:
        self.hub = hub
        self.loop = loop
        self.busy_interval = busy_interval
        self.heartbeat = heartbeat
        self.beats = 0  # heartbeats so far; idle writers send a keep-alive on each
        self._beat_timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.clients = {"sse": 0, "ws": 0}
        self.lateness = 0.0
        self.busy_share = 0.0
        self._contended_until = 0.0
        self._seen_at = time.monotonic()
        self._seen_cpu = (time.process_time(), 0.0)  # the process's and the loop thread's CPU then
        self.commits = 0
        self._last_commit = 0.0
        self._requested = 0.0
        self._commit_timer: asyncio.TimerHandle | None = None
        self._commit_due = 0.0
        self._waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] | None = None
        self.turns = WriteTurns(loop)
        self._commits = False  # whether it commits the hub's intake (see attach)
        # Set once detached: a loop left running after its stop (see LoopThread)
        # must not commit any more, the next loop (or the training threads) do.
        self._detached = False

    # -- publishing side --------------------------------------------------------

    def attach(self, commits: bool = True) -> None:
        """Become the hub's notifier and commit what was submitted before (on
        the loop). ``commits=False``: the hub's events come from elsewhere (a
        Redis replica calls :meth:`committed`); only wake writers and beat."""
        if commits:
            self.hub.attach(self)
            self.hub.commit()
        self._commits = commits
        self._beat_timer = self.loop.call_later(self.heartbeat, self._beat)

    def detach(self) -> None:
        """Give committing back to the publishing threads (after the loop stopped),
        committing everything submitted so far."""
        self._detached = True
        for timer in (self._commit_timer, self._beat_timer):
            if timer is not None:
                timer.cancel()
        self._commit_timer = self._beat_timer = None
        if self._commits:
            self.hub.detach(self)

    def wake(self) -> None:
        # Any thread; once per batch. Raises RuntimeError once the loop closed.
        self._requested = time.monotonic()
        self.loop.call_soon_threadsafe(self._woken)

    def wake_urgent(self) -> None:
        # Any thread: the backlog is long; commit now whatever the spacing.
        self.loop.call_soon_threadsafe(self._commit_now)

    def committed(self) -> None:
        # On the loop thread right after a commit (or a replica stored events): wake every writer.
        self._last_commit = time.monotonic()
        self.commits += 1
        self._wake_waiters()

    def _commit_now(self) -> None:
        if self._detached:
            return
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        self.hub.commit()

    def _woken(self) -> None:
        if self._detached:
            return
        now = time.monotonic()
        self._observe(now - self._requested)
        if self._commit_timer is not None:
            return  # a commit is already due
        interval = self.busy_interval if self.contended else MIN_INTERVAL
        wait = self._last_commit + interval - now
        if wait > 0:
            self._commit_due = now + wait
            self._commit_timer = self.loop.call_later(wait, self._timed_commit)
            return
        self.hub.commit()

    def _timed_commit(self) -> None:
        self._commit_timer = None
        if self._detached:
            return
        self._observe(time.monotonic() - self._commit_due)
        self.hub.commit()

    @property
    def contended(self) -> bool:
        """Whether commits are spaced now: the loop competes for the GIL with
        a busy thread of this process (see the module docstring)."""
        return time.monotonic() < self._contended_until

    def _observe(self, late: float) -> None:
        # On the loop thread, per wake-up and timed commit.
        late = max(0.0, late)
        self.lateness += _ALPHA * (late - self.lateness)
        now = time.monotonic()
        elapsed = now - self._seen_at
        if elapsed >= _SHARE_WINDOW:
            process, loop = time.process_time(), time.thread_time()
            others = (process - self._seen_cpu[0]) - (loop - self._seen_cpu[1])
            self.busy_share = max(0.0, others / elapsed)
            self._seen_at, self._seen_cpu = now, (process, loop)
        if late > CONTENDED and self.busy_share >= BUSY_SHARE:
            self._contended_until = now + HOLD

    def _beat(self) -> None:
        # One timer for all clients, instead of a keep-alive task per client.
        if self._detached:
            return
        self.beats += 1
        self._beat_timer = self.loop.call_later(self.heartbeat, self._beat)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- subscriber side -------------------------------------------------------

    @property
    def detached(self) -> bool:
        """True once the server stopped with this notifier's loop: a loop left
        running after its stop (see :class:`~stream_hub.runtime.loop.LoopThread`)
        must not read the hub any more, whose ring others write from then on."""
        return self._detached

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

    def when_closed(self) -> asyncio.Future[None]:
        """A future (shared: never cancel it) resolved when the feed closes."""
        if self._closed is None:
            self._closed = self.loop.create_future()
            if self.closing:
                self._closed.set_result(None)
        return self._closed

    def close(self) -> None:
        """Tell every writer to flush what is committed and end."""
        self.closing = True
        self.turns.close()
        self._wake_waiters()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
