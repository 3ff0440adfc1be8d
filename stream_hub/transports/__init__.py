"""Where events leave a hub: the three transports of a server, started,
watched and closed together on its loop.

- ``sse`` — ``GET /events``, Server-Sent Events (:mod:`.sse`);
- ``ws`` — the WebSocket server (:mod:`.ws`);
- ``rest`` — the REST API, Prometheus and the dashboard (:mod:`.rest`,
  :mod:`.dashboard`, :mod:`.publish`).

The two HTTP ones are served by :mod:`.http` (uvicorn's h11 protocol on
listening sockets we own); every connection is tracked in :mod:`.clients`;
:mod:`.access` holds who may connect (the peer's user, with
:mod:`.peer_uid`; the Host and Origin rules), :mod:`.headers` the headers
every answer carries (``nosniff``, the dashboard's Content-Security-Policy),
:mod:`.params` the parsing of what clients send. The transports depend on the server only through
:class:`~.params.ServerView`.

Everything here runs on the server's loop thread. uvicorn's own ``serve()``
is not used: its main loop polls every 0.1 s and its shutdown sleeps 0.1 s;
:meth:`Transports.close` waits on the streams themselves.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .clients import cap_send_buffer
from .headers import NoSniff
from .params import ServerView, error_response

if TYPE_CHECKING:
    from .http import HttpListener

__all__ = ["TRANSPORTS", "ServerView", "Transports"]

logger = logging.getLogger(__name__)

TRANSPORTS = ("sse", "ws", "rest")
_HTTP = ("sse", "rest")


class Transports:
    """Start, watch and close SSE, WebSocket and REST of one server.

    The apps are built on the first start and reused by every restart.
    """

    def __init__(
        self,
        server: ServerView,
        *,
        restart: Callable[[], None],
        training_status: Callable[[], Callable[[], Any] | None],
        metrics_text: Callable[[], bytes],
    ) -> None:
        self.server = server
        self._restart = restart
        self._training_status = training_status
        self._metrics_text = metrics_text
        # Imported here, not with the package: FastAPI alone costs ~0.3 s to
        # import, which only a process that builds a server should pay (not
        # the CLI's clients, nor every process that imports stream_hub).
        from .rest import OffLoopCaller
        from .ws import WebSocketServer

        self.ws = WebSocketServer(server)
        self.status_caller = OffLoopCaller("stream-hub-get-status")
        self._apps: dict[str, Any] = {}
        self.http: dict[str, HttpListener] = {}

    async def start(self, sockets: dict[str, socket.socket]) -> None:
        """Serve on the three bound, listening sockets."""
        from .http import HttpListener  # see __init__

        timeout = self.server.config.handshake_timeout
        for name in ("sse", "ws"):  # the stream ports (see cap_send_buffer)
            cap_send_buffer(sockets[name])
        for name in _HTTP:
            app = NoSniff(_on_the_hubs_loop(self._app(name), self.server))
            check_peer = self.server.access.peer_refusal  # once per connection (see .http)
            listener = HttpListener(app, self.server.clients, timeout, check_peer=check_peer)
            await listener.start(sockets[name])
            self.http[name] = listener
        await self.ws.start(sockets["ws"])
        self.server.clients.start(asyncio.get_running_loop())

    def _app(self, name: str) -> Any:
        app = self._apps.get(name)
        if app is None:
            from .rest import create_rest_app  # see __init__
            from .sse import create_sse_app

            if name == "sse":
                app = create_sse_app(self.server)
            else:
                app = create_rest_app(
                    self.server,
                    restart=self._restart,
                    training_status=self._training_status,
                    metrics_text=self._metrics_text,
                    status_caller=self.status_caller,
                )
            self._apps[name] = app
        return app

    def broken(self) -> list[str]:
        """The transports whose listener no longer serves."""
        out = [name for name, listener in self.http.items() if not listener.is_serving()]
        if self.ws.ws_server is not None and not self.ws.is_serving():
            out.append("ws")
        return out

    async def close(self, deadline: float) -> None:
        """Stop listening, let every stream flush and end, close every connection.

        Streams still running near ``deadline`` (a ``time.monotonic()``
        value) are dropped, so this returns by it. Clients that read nothing
        are not waited for: once only theirs are left, their connections are
        dropped at once (:class:`~.clients.StallWatch`).
        """
        total = max(0.0, deadline - time.monotonic())
        flush_by = deadline - min(1.0, 0.3 * total)  # the rest is for dropping what is stuck
        clients = self.server.clients
        stalls = clients.watch_stalls()  # its first look: what is queued as the stop begins
        try:
            # 1. Stop accepting connections on all three ports: out of the selector
            # first, closed once the connections already accepted are set up.
            for server in self._listeners(asyncio.get_running_loop()):
                _pause_accepting(server)
            for _ in range(2):
                await asyncio.sleep(0)
            for listener in self.http.values():
                listener.stop_accepting()
            self.ws.stop_accepting()
            # 2. Let every stream flush to the head (the shutdown event) and end.
            tasks: set[asyncio.Task[Any]] = set(self.ws.handlers) | set(self.server.streams)
            pending = await stalls.flush(tasks, flush_by)
            if pending:
                logger.warning("%d stream(s) did not end within %.1f s; aborting them", len(pending), total)
                clients.abort_all()
                _, pending = await asyncio.wait(pending, timeout=_left(deadline, 0.5))
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=_left(deadline, 0.5))
            # 3. Close what is left: WebSocket handshakes, idle HTTP keep-alives.
            await self.ws.close(_left(deadline, 1.0))
            for listener in self.http.values():
                listener.close_idle()
            # 4. Closed connections flush what is queued for them until the flush
            # deadline, those of clients that read nothing excepted; then
            # everything still open is dropped, closing ones too (a request
            # caught in the middle, a client that never lets a flush end).
            await stalls.until_closed(flush_by)
        finally:
            clients.end_watch(stalls)
        clients.stop()
        dropped = clients.abort_all()
        if dropped:
            logger.info("%d connection(s) still open at the flush deadline; dropped", dropped)
        self.http = {}
        if not self.status_caller.close(_left(deadline, 0.5)):
            logger.warning("the training system's get_status() is still running; its thread is left behind")

    def abandon(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``'s thread as it ends without a graceful close (a stop that
        ran out of time, a crash): stop accepting there and drop every
        connection still open on it; asyncio cannot close them once the loop
        is closed. Safe outside a running loop, and more than once. (The
        listening sockets themselves are closed by the stopping thread.)"""
        for server in self._listeners(loop):
            try:
                _pause_accepting(server)
            except Exception:  # a listener another thread already closed
                logger.debug("pausing a listener of an ending loop failed", exc_info=True)
        self.server.clients.abort_all(loop)

    def _listeners(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Server]:
        """The asyncio servers of the three ports running on ``loop``."""
        servers = [listener.server for listener in self.http.values()]
        if self.ws.ws_server is not None:
            servers.append(self.ws.ws_server.server)
        return [server for server in servers if server is not None and server.get_loop() is loop]


def _on_the_hubs_loop(app: Any, server: ServerView) -> Any:
    """``app``, answering 503 on a loop that is not the hub's (any more): one
    left running after a stop that gave up waiting for it (see
    :class:`~stream_hub.runtime.loop.LoopThread`) must not read the hub,
    whose ring the training threads or the next loop write from then on."""

    async def gated(scope: Any, receive: Any, send: Any) -> None:
        notifier = server.notifier
        if scope["type"] == "http" and (notifier is None or notifier.loop is not asyncio.get_running_loop()):
            response = error_response(503, "the server is restarting; retry shortly")
            await response(scope, receive, send)
            return
        await app(scope, receive, send)

    return gated


def _pause_accepting(server: asyncio.Server) -> None:
    """Stop accepting on ``server`` but leave it open. Closing it at once
    would lose the connections it has just accepted: each is set up by a task
    of its own that refuses a closed server (``asyncio.Server._attach``
    asserts it is open; CPython 3.11), and its socket is then left to the
    garbage collector. Close it once those tasks have run (an iteration)."""
    loop = server.get_loop()
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())


def _left(deadline: float, at_most: float) -> float:
    """Seconds until ``deadline``, at most ``at_most``, at least a tick."""
    return max(0.01, min(at_most, deadline - time.monotonic()))
