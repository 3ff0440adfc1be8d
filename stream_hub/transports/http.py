"""HTTP/1.1 for the SSE and REST ports: uvicorn's h11 protocol, served on
listening sockets we own, with four additions.

- **Every request has a deadline.** Its request line, headers and body must
  all arrive within ``request_timeout`` seconds of its first byte (of the
  connection, for the first request). uvicorn only times out idle keep-alive
  connections, and a client trickling a request a byte at a time resets that
  timer with each byte; enough of them would hold every descriptor.
- **Each connection is tracked** in the server's
  :class:`~stream_hub.transports.clients.ClientRegistry`: when its transport
  stops taking data and since when, so stalled clients can be evicted, and
  which connection an ASGI request came from (by peer address), so the SSE
  writer can check the client's queued bytes.
- **The peer's user is checked once per connection**, when it is accepted
  (:meth:`~stream_hub.transports.access.AccessPolicy.peer_refusal`): the
  verdict rides in every request's ASGI ``scope["state"]`` (uvicorn copies
  the connection's state into each request's), where
  :class:`~stream_hub.transports.access.AccessCheck` reads it.
- **We own the listener.** ``loop.create_server`` on our pre-bound socket,
  with this protocol; uvicorn's ``Server`` (its polling main loop, its
  shutdown sleep) is not used. Closing the listener and the connections is
  ours too (:meth:`HttpListener.close`).

uvicorn's ``H11Protocol`` is not documented as public API; what we rely on
(its constructor taking a ``ServerState``, ``connection_made``/
``connection_lost``/``data_received``/``pause_writing``/``resume_writing``/
``shutdown``, and its ``conn``, ``client``, ``loop`` and ``transport``
attributes) is checked by
``tests/test_dependencies.py``, and ``pyproject.toml`` bounds the version.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from .access import PEER_REFUSAL
from .clients import ClientRegistry, FlowState

__all__ = ["HttpListener", "TrackedH11Protocol"]

# States in which the peer has sent its whole request (or the connection ended).
_REQUEST_DONE = frozenset({h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.SWITCHED_PROTOCOL, h11.ERROR})


class TrackedH11Protocol(FlowState, H11Protocol):
    """uvicorn's h11 protocol with request deadlines and stall tracking."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        registry: ClientRegistry,
        request_timeout: float,
        check_peer: Callable[[Any, Any], str | None] | None = None,
    ) -> None:
        # Copied into each request's scope["state"]: the connection's verdict on its peer.
        self.connection_state: dict[str, Any] = {}
        super().__init__(config=config, server_state=server_state, app_state=self.connection_state)
        self.registry = registry
        self.request_timeout = request_timeout
        self.check_peer = check_peer
        self._deadline: asyncio.TimerHandle | None = None
        self._peer: tuple[str, int] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.client is None:
            # uvicorn asks the socket for its peer, which it no longer knows once
            # the connection was reset; the address accept() returned does. A
            # request finds its connection by it (sse.py).
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and len(peer) >= 2:
                self.client = (str(peer[0]), int(peer[1]))
        self.wire = transport
        self._peer = self.client
        if self.check_peer is not None:
            local = transport.get_extra_info("sockname")
            self.connection_state[PEER_REFUSAL] = self.check_peer(local, self.client)
        self.registry.add(self, self._peer)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.registry.discard(self, self._peer)
        self._resumed()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a new request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state in _REQUEST_DONE:
            self._disarm()

    def pause_writing(self) -> None:
        self._paused()
        super().pause_writing()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._resumed()

    # -- the request deadline --------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.conn.their_state not in _REQUEST_DONE and not self.transport.is_closing():
            # The request (line, headers or body) did not arrive in time.
            self.transport.abort()


class HttpListener:
    """One HTTP port: the asyncio server on our socket, and its connections."""

    def __init__(
        self,
        app: Any,
        registry: ClientRegistry,
        request_timeout: float,
        check_peer: Callable[[Any, Any], str | None] | None = None,
    ) -> None:
        self.registry = registry
        self.request_timeout = request_timeout
        self.check_peer = check_peer
        self.config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            timeout_keep_alive=5,
            proxy_headers=False,  # scope["client"] is the real peer: it is our key
            ws="none",
        )
        self.config.load()
        self.state = ServerState()
        self.server: asyncio.Server | None = None

    def _protocol(self) -> TrackedH11Protocol:
        return TrackedH11Protocol(
            self.config, self.state, self.registry, self.request_timeout, check_peer=self.check_peer
        )

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol, sock=sock, backlog=2048)

    def is_serving(self) -> bool:
        return self.server is not None and self.server.is_serving()

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def close_idle(self) -> None:
        """Close this port's connections that are between requests; those in
        the middle of one close when it completes."""
        for conn in self.registry.of_loop():
            if isinstance(conn, TrackedH11Protocol) and conn.config is self.config:
                conn.shutdown()
        self.server = None
