"""Every client connection of a server, and the eviction of those that stop
reading.

A client that stops reading (a laptop closed mid-stream, a stuck program)
would otherwise hold its connection and the bytes queued for it forever. Each
connection (HTTP or WebSocket) registers here and reports when its transport
stops taking data (``pause_writing``, above the high-water mark) and starts
again. A periodic sweep closes (aborts) every connection that has been paused
for longer than ``send_timeout``, and writers check ``client_buffer_bytes``
before each write; either way the client is counted in ``evicted`` and may
reconnect and resume with its last seq.

The registry outlives restarts, and each loop may only touch its own
connections: every entry remembers the loop it lives on. A loop's thread
aborts what it still has before its loop closes (:meth:`abort_all`); an entry
of a loop that closed anyway is dropped.

The kernel's send buffer of a stream connection is capped
(:func:`cap_send_buffer`), so a client that stops reading is paused, and
``send_timeout`` starts counting, after a few hundred KiB rather than ~4 MiB.

A stop does not wait for such clients either: :class:`StallWatch` tells,
while the stop waits for streams to flush their shutdown event and for
connections to close, which clients are taking nothing, and those are
dropped at once instead of at the stop's flush deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Collection
from typing import Any, Protocol

__all__ = ["STREAM_SEND_BUFFER", "ClientRegistry", "FlowState", "StallWatch", "Tracked", "cap_send_buffer"]

logger = logging.getLogger(__name__)

# Eviction log lines per minute before they are only counted (a storm of
# stalled clients must not become a storm of log lines).
_LOG_PER_MINUTE = 5

#: SO_SNDBUF of a stream (SSE, WebSocket) connection. Left alone, Linux grows a
#: socket's send buffer up to ``net.ipv4.tcp_wmem``'s maximum (4 MiB), so a
#: client that stops reading first swallows ~4 MiB of kernel memory, and its
#: transport pauses (and ``send_timeout`` starts counting) only once all of it
#: is full, which at a trickle of metrics takes minutes. Linux doubles the
#: value for its bookkeeping: ~512 KiB per connection, which costs a fast
#: reader nothing measurable on loopback (see BENCHMARKS.md) and allows
#: ~10 MB/s per client over a 50 ms round trip.
STREAM_SEND_BUFFER = 256 * 1024


def cap_send_buffer(listener: socket.socket, size: int | None = STREAM_SEND_BUFFER) -> None:
    """Fix the kernel send buffer of the connections ``listener`` accepts at
    ``size`` bytes, with no autotuning past it (they inherit it from the
    listening socket); None leaves the kernel's default. A socket that
    refuses is left as it is."""
    if size is None:
        return
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError:
        logger.warning("could not cap SO_SNDBUF of %r; stalled clients are evicted later", listener)


class Tracked(Protocol):
    """A client connection the registry watches: ``wire`` is its transport
    (None before it is connected), ``paused_since`` when it stopped taking
    data, ``home`` the loop it lives on (set by :meth:`ClientRegistry.add`),
    ``stream`` the task writing its event stream (SSE, WebSocket), if any."""

    wire: asyncio.WriteTransport | None
    paused_since: float | None
    home: asyncio.AbstractEventLoop | None
    stream: asyncio.Task[Any] | None


class FlowState:
    """Flow control of one connection, for the protocol classes to mix in.

    The protocol calls :meth:`_paused` / :meth:`_resumed` from its
    ``pause_writing`` / ``resume_writing`` (and :meth:`_resumed` when the
    connection is lost); writers await :meth:`writable` before writing more.
    The protocol class sets ``registry``, the server's registry.
    """

    registry: ClientRegistry
    wire: asyncio.WriteTransport | None = None
    paused_since: float | None = None
    home: asyncio.AbstractEventLoop | None = None
    stream: asyncio.Task[Any] | None = None
    _writable: asyncio.Future[None] | None = None

    def writable(self) -> asyncio.Future[None] | None:
        """A future resolved when the transport takes data again (None: it does now)."""
        if self.paused_since is None:
            return None
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()
        return self._writable

    def _paused(self) -> None:
        self.paused_since = time.monotonic()
        self.registry.changed()

    def _resumed(self) -> None:
        self.paused_since = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)


class ClientRegistry:
    """The live client connections of one server and their eviction.

    ``evicted`` counts evictions over the server's lifetime (restarts included).
    Every method runs on a loop thread and touches only that loop's connections.
    """

    def __init__(self, send_timeout: float, buffer_limit: int) -> None:
        self.send_timeout = send_timeout
        self.buffer_limit = buffer_limit
        #: Every tracked connection, of the loop serving now and of any earlier
        #: one that has not closed yet; ``home`` tells them apart.
        self.live: set[Tracked] = set()
        self.by_peer: dict[tuple[str, int], Tracked] = {}
        self.evicted = 0
        #: Connections a stop dropped at once because their clients read nothing.
        self.dropped_stalled = 0
        self._watch: StallWatch | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logged: list[float] = []
        self._counts: dict[asyncio.AbstractEventLoop, int] = {}  # connections per loop

    # -- membership (loop thread) ---------------------------------------------------

    def add(self, conn: Tracked, peer: tuple[str, int] | None) -> None:
        if conn not in self.live:
            home = conn.home = asyncio.get_running_loop()
            self._counts[home] = self._counts.get(home, 0) + 1
            self.live.add(conn)
        if peer is not None:
            self.by_peer[peer] = conn

    def discard(self, conn: Tracked, peer: tuple[str, int] | None) -> None:
        if peer is not None and self.by_peer.get(peer) is conn:
            del self.by_peer[peer]
        if conn not in self.live:
            return
        self.live.discard(conn)
        home = conn.home
        if home is not None:
            left = self._counts.get(home, 1) - 1
            if left > 0:
                self._counts[home] = left
            else:
                self._counts.pop(home, None)
        self.changed()

    def changed(self) -> None:
        """A connection paused or went away: a stop's :class:`StallWatch` looks again."""
        watch = self._watch
        if watch is not None:
            watch.wake()

    def of_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> list[Tracked]:
        """The connections living on ``loop`` (the running one by default)."""
        loop = loop or asyncio.get_running_loop()
        return [conn for conn in list(self.live) if conn.home is loop]

    # -- eviction ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``loop`` from now on: sweep for stalled connections every so
        often (a fraction of send_timeout), and forget what earlier loops left."""
        self._loop = loop
        self._drop_stale()
        self._schedule(loop)

    def stop(self) -> None:
        """Stop sweeping (if the running loop is the one served)."""
        if self._loop is not asyncio.get_running_loop():
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._loop = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and not loop.is_closed():
            interval = min(1.0, max(0.05, self.send_timeout / 4))
            self._timer = loop.call_later(interval, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            return  # a sweep of a loop this registry no longer serves
        try:
            self._drop_stale()
            deadline = time.monotonic() - self.send_timeout
            for conn in self.of_loop(loop):
                since = conn.paused_since
                if since is not None and since < deadline:
                    try:
                        self.evict(conn, f"took no data for {self.send_timeout:g} s (send_timeout)")
                    except Exception:  # one broken connection must not end eviction for all
                        logger.exception("evicting %r failed", conn)
        finally:
            self._schedule(loop)

    def _drop_stale(self) -> None:
        """Forget connections whose loop has closed.

        Their loop's thread aborts them before closing it (see
        :meth:`abort_all`), so there should be none. asyncio cannot close a
        transport once its loop is closed, and its socket is not ours to close
        (the transport would close the descriptor number again later, by then
        perhaps another socket's): the garbage collector closes it.
        """
        stale = [conn for conn in list(self.live) if conn.home is not None and conn.home.is_closed()]
        for conn in stale:
            self.live.discard(conn)
        for loop in [loop for loop in self._counts if loop.is_closed()]:
            del self._counts[loop]
        if stale:
            self.by_peer = {peer: conn for peer, conn in self.by_peer.items() if conn in self.live}
            logger.warning("forgot %d connection(s) of an event loop that closed with them open", len(stale))

    def over_budget(self, conn: Tracked, adding: int = 0) -> bool:
        """Whether writing ``adding`` more bytes would pass the client's budget;
        if so, the client is evicted (the caller stops writing to it)."""
        transport = conn.wire
        if transport is None or transport.is_closing():
            return False
        queued = transport.get_write_buffer_size()
        if queued and queued + adding > self.buffer_limit:
            self.evict(conn, f"has {queued} bytes queued (client_buffer_bytes={self.buffer_limit})")
            return True
        return False

    def evict(self, conn: Tracked, why: str) -> None:
        """Close a client that stopped reading, at once (queued data is dropped)."""
        transport = conn.wire
        if transport is None or transport.is_closing():
            return
        self.evicted += 1
        now = time.monotonic()
        self._logged = [t for t in self._logged if now - t < 60.0]
        if len(self._logged) < _LOG_PER_MINUTE:
            self._logged.append(now)
            peer = transport.get_extra_info("peername")
            logger.info("closing client %s: it %s; it can reconnect and resume", peer, why)
        transport.abort()

    # -- shutdown ----------------------------------------------------------------------

    def watch_stalls(self) -> StallWatch:
        """A :class:`StallWatch` over the running loop's connections, which
        takes its first look now (when a stop begins)."""
        watch = self._watch = StallWatch(self, asyncio.get_running_loop())
        watch.look()
        return watch

    def end_watch(self, watch: StallWatch) -> None:
        if self._watch is watch:
            self._watch = None

    def abort_all(self, loop: asyncio.AbstractEventLoop | None = None) -> int:
        """Drop every connection of ``loop`` (the running one by default) at
        once, closing ones included: a transport closed with data queued for a
        client that reads nothing would wait for a flush forever. Returns how
        many were open or had data queued (not just waiting for their
        ``connection_lost``).

        Called on ``loop``'s thread, which may have stopped running it.
        """
        loop = loop or asyncio.get_running_loop()
        dropped = 0
        for conn in list(self.live):
            transport = conn.wire
            if conn.home is not loop or transport is None:
                continue
            if not transport.is_closing() or transport.get_write_buffer_size():
                dropped += 1
            try:
                transport.abort()
            except Exception:  # the loop closed under it; see _drop_stale
                logger.debug("aborting %r failed", transport, exc_info=True)
        return dropped


class StallWatch:
    """Which connections a stop need not wait for: those whose clients read nothing.

    A connection is *stalled* when bytes wait in its transport (the kernel's
    send buffer is full), bytes waited there at an earlier look too, at least
    one turn of the loop before (each turn offers every writable socket the
    data queued for it), and none of them has left since: it never held fewer
    than at that look, and it has not resumed (if it was paused). A client
    that is merely behind drains between two looks and is waited for, like
    every connection with nothing queued.

    A stop waits for the streams and the connections of healthy clients, and
    drops the stalled ones once they are all that is left (:meth:`flush`,
    :meth:`until_closed`): their clients get neither the rest of their
    stream nor its shutdown event, which they could not read anyway, and
    they reconnect and resume like any other. The looks are taken when
    something changes (a stream ends, a connection pauses or closes) and,
    while a connection seen stalling for the first time is what is left,
    once a turn.
    """

    def __init__(self, registry: ClientRegistry, loop: asyncio.AbstractEventLoop) -> None:
        self._registry = registry
        self._loop = loop
        # At the look that first saw bytes queued: how many, and paused since when.
        self._first: dict[Tracked, tuple[int, float | None]] = {}
        self._draining: set[Tracked] = set()  # took data since: waited for from then on
        self._fresh: set[Tracked] = set()  # first seen with bytes queued at the last look
        self._changed: asyncio.Future[None] | None = None

    def look(self) -> set[Tracked]:
        """The stalled connections now (see the class docstring)."""
        stalled: set[Tracked] = set()
        self._fresh = set()
        for conn in self._registry.of_loop(self._loop):
            wire = conn.wire
            if wire is None or conn in self._draining:
                continue
            queued = wire.get_write_buffer_size()
            first = self._first.get(conn)
            if first is None:
                if queued:
                    self._first[conn] = (queued, conn.paused_since)
                    self._fresh.add(conn)
            elif queued < first[0] or conn.paused_since != first[1]:
                self._draining.add(conn)
            else:
                stalled.add(conn)
        return stalled

    def wake(self) -> None:
        changed = self._changed
        if changed is not None and not changed.done():
            changed.set_result(None)

    async def flush(self, tasks: Collection[asyncio.Task[Any]], deadline: float) -> set[asyncio.Task[Any]]:
        """Wait for ``tasks`` (the streams) to end, by ``deadline`` (a
        ``time.monotonic()`` value); once only stalled connections' streams
        are left, drop those connections, and their streams end. Returns the
        tasks still running at ``deadline``.

        It looks again when the other streams have all ended, or when a
        connection paused (its client may be one that reads nothing), not
        at each stream's end: one look costs a pass over every connection."""
        pending = {task for task in tasks if not task.done()}
        while pending:
            stalled = self.look()
            stuck = {conn.stream for conn in stalled if conn.stream in pending}
            if stuck and stuck == pending:
                self._drop(stalled)
                continue  # the dropped connections' streams end within a turn or two
            # Streams of connections seen stalling for the first time are
            # judged at the next look: that look comes when the rest have ended.
            others = pending - stuck - {conn.stream for conn in self._fresh}
            if not await self._wait(others, deadline, turn=not others):
                break
            pending = {task for task in pending if not task.done()}
        return pending

    async def until_closed(self, deadline: float) -> None:
        """Wait, at most until ``deadline``, until the loop's connections have
        closed, dropping the stalled ones once only they are left open."""
        while True:
            left = set(self._registry.of_loop(self._loop))
            if not left:
                return
            stalled = self.look()
            if stalled >= left:
                self._drop(stalled)
                return
            if not await self._wait(set(), deadline, turn=self._fresh >= left - stalled):
                return

    async def _wait(self, tasks: set[asyncio.Task[Any]], deadline: float, turn: bool) -> bool:
        """Wait until every one of ``tasks`` has ended, a connection paused or
        closed, or (with ``turn``) one turn of the loop has passed; False
        once ``deadline`` has."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        changed = self._changed = self._loop.create_future()
        # asyncio.wait() leaves the tasks alone when it is cancelled.
        ended = self._loop.create_task(asyncio.wait(tasks)) if tasks else None
        try:
            await asyncio.wait(
                {changed} if ended is None else {changed, ended},
                timeout=0 if turn else left,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._changed = None
            changed.cancel()
            if ended is not None:
                ended.cancel()
        return True

    def _drop(self, stalled: set[Tracked]) -> None:
        for conn in stalled:
            self._draining.add(conn)  # looked at no more: a drop that fails is not retried
            wire = conn.wire
            if wire is None:
                continue
            try:
                wire.abort()
            except Exception:  # the loop closed under it; see ClientRegistry._drop_stale
                logger.debug("aborting %r failed", wire, exc_info=True)
        self._registry.dropped_stalled += len(stalled)
        logger.info("dropped %d connection(s) at once: their clients read nothing", len(stalled))
