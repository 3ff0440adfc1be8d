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
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Protocol

__all__ = ["STREAM_SEND_BUFFER", "ClientRegistry", "FlowState", "Tracked", "cap_send_buffer"]

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
    data, ``home`` the loop it lives on (set by :meth:`ClientRegistry.add`)."""

    wire: asyncio.WriteTransport | None
    paused_since: float | None
    home: asyncio.AbstractEventLoop | None


class FlowState:
    """Flow control of one connection, for the protocol classes to mix in.

    The protocol calls :meth:`_paused` / :meth:`_resumed` from its
    ``pause_writing`` / ``resume_writing`` (and :meth:`_resumed` when the
    connection is lost); writers await :meth:`writable` before writing more.
    """

    wire: asyncio.WriteTransport | None = None
    paused_since: float | None = None
    home: asyncio.AbstractEventLoop | None = None
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
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logged: list[float] = []
        self._counts: dict[asyncio.AbstractEventLoop, int] = {}  # connections per loop
        self._waiting: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

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
                waiting = self._waiting
                if waiting is not None and waiting[0] is home:
                    waiting[1].set()

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

    async def wait_closed(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the running loop has no connection left."""
        loop = asyncio.get_running_loop()
        if not self._counts.get(loop):
            return
        gone = asyncio.Event()
        self._waiting = (loop, gone)
        try:
            await asyncio.wait_for(gone.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiting = None

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
