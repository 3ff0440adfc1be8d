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
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

__all__ = ["ClientRegistry", "FlowState", "Tracked"]

logger = logging.getLogger(__name__)

# Eviction log lines per minute before they are only counted (a storm of
# stalled clients must not become a storm of log lines).
_LOG_PER_MINUTE = 5


class Tracked(Protocol):
    """A client connection the registry watches: ``wire`` is its transport
    (None before it is connected), ``paused_since`` when it stopped taking data."""

    wire: asyncio.WriteTransport | None
    paused_since: float | None


class FlowState:
    """Flow control of one connection, for the protocol classes to mix in.

    The protocol calls :meth:`_paused` / :meth:`_resumed` from its
    ``pause_writing`` / ``resume_writing`` (and :meth:`_resumed` when the
    connection is lost); writers await :meth:`writable` before writing more.
    """

    wire: asyncio.WriteTransport | None = None
    paused_since: float | None = None
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
    """

    def __init__(self, send_timeout: float, buffer_limit: int) -> None:
        self.send_timeout = send_timeout
        self.buffer_limit = buffer_limit
        self.live: set[Tracked] = set()
        self.by_peer: dict[tuple[str, int], Tracked] = {}
        self.evicted = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logged: list[float] = []

    # -- membership (loop thread) ---------------------------------------------------

    def add(self, conn: Tracked, peer: tuple[str, int] | None) -> None:
        self.live.add(conn)
        if peer is not None:
            self.by_peer[peer] = conn

    def discard(self, conn: Tracked, peer: tuple[str, int] | None) -> None:
        self.live.discard(conn)
        if peer is not None and self.by_peer.get(peer) is conn:
            del self.by_peer[peer]

    # -- eviction ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sweep for stalled connections every so often (a fraction of send_timeout)."""
        self._loop = loop
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._loop = None

    def _schedule(self) -> None:
        if self._loop is not None:
            interval = min(1.0, max(0.05, self.send_timeout / 4))
            self._timer = self._loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        deadline = time.monotonic() - self.send_timeout
        for conn in list(self.live):
            since = conn.paused_since
            if since is not None and since < deadline:
                self.evict(conn, f"took no data for {self.send_timeout:g} s (send_timeout)")
        self._schedule()

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

    def abort_all(self) -> None:
        """Drop every connection at once (the end of a shutdown)."""
        for conn in list(self.live):
            transport = conn.wire
            if transport is not None and not transport.is_closing():
                transport.abort()
