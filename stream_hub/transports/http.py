"""uvicorn's h11 protocol with one addition: a connection that has not sent a
complete request line and headers within ``handshake_timeout`` is closed.

uvicorn times out idle keep-alive connections only after a first response, so
a client that connects and never sends (or trickles) its request would hold a
socket forever; with many of them, the server runs out of descriptors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["make_protocol_class"]


def make_protocol_class(handshake_timeout: float) -> type[asyncio.Protocol]:
    """An H11Protocol subclass that enforces ``handshake_timeout`` seconds."""

    class TimedH11Protocol(H11Protocol):
        _handshake_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._handshake_timer = self.loop.call_later(handshake_timeout, self._handshake_expired)

        def _handshake_expired(self) -> None:
            self._handshake_timer = None
            # No request has ever been parsed on this connection.
            if self.cycle is None and self.conn.their_http_version is None:
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
                self._handshake_timer = None
            super().connection_lost(exc)

    return TimedH11Protocol
