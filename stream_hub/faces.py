"""The three faces of a server on its loop: the SSE and REST apps, each under
a ``uvicorn.Server`` we drive ourselves, and the WebSocket server.

Everything here runs on the server's loop thread. uvicorn's own ``serve()``
is not used: its main loop polls every 0.1 s and its shutdown sleeps 0.1 s,
so we call ``startup`` with our pre-bound sockets and do the shutdown below,
which waits on the request tasks themselves.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from .transports.common import ServerView
from .transports.http import make_protocol_class
from .transports.rest import create_rest_app
from .transports.sse import create_sse_app
from .transports.ws import WebSocketFace

__all__ = ["Faces"]

logger = logging.getLogger(__name__)

HTTP_FACES = ("sse", "rest")


class Faces:
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
        self.ws = WebSocketFace(server)
        self._configs: dict[str, uvicorn.Config] = {}
        self.uvicorn: dict[str, uvicorn.Server] = {}

    async def start(self, sockets: dict[str, socket.socket]) -> None:
        """Serve on the three bound, listening sockets."""
        for name in HTTP_FACES:
            config = self._configs.get(name) or self._config(name)
            uv = uvicorn.Server(config)
            uv.lifespan = config.lifespan_class(config)
            await uv.startup(sockets=[sockets[name]])
            self.uvicorn[name] = uv
        await self.ws.start(sockets["ws"])

    def _config(self, name: str) -> uvicorn.Config:
        app = (
            create_sse_app(self.server)
            if name == "sse"
            else create_rest_app(
                self.server,
                restart=self._restart,
                training_status=self._training_status,
                metrics_text=self._metrics_text,
            )
        )
        config = self._configs[name] = uvicorn.Config(
            app,
            http=make_protocol_class(self.server.config.handshake_timeout),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            timeout_keep_alive=5,
            ws="none",
        )
        config.load()
        return config

    def broken(self) -> list[str]:
        """The faces whose listener no longer serves."""
        out = [
            name
            for name, uv in self.uvicorn.items()
            if not all(srv.is_serving() for srv in getattr(uv, "servers", []))
        ]
        if self.ws.ws_server is not None and not self.ws.ws_server.is_serving():
            out.append("ws")
        return out

    async def close(self, timeout: float) -> None:
        """Stop listening, let every stream flush and end, close every connection.

        Streams still running after ``timeout`` (clients that stopped reading)
        are dropped.
        """
        deadline = time.monotonic() + timeout
        # 1. Stop accepting connections on all three ports.
        for uv in self.uvicorn.values():
            for srv in getattr(uv, "servers", []):
                srv.close()
        self.ws.abort_listener()
        # 2. Let every stream flush to the head (the shutdown event) and end.
        tasks: set[asyncio.Task[Any]] = set(self.ws.handlers)
        for uv in self.uvicorn.values():
            tasks |= uv.server_state.tasks
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            if pending:
                logger.warning("%d stream(s) did not end within %.1f s; aborting them", len(pending), timeout)
                self._abort_connections()
                _, pending = await asyncio.wait(pending, timeout=0.5)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=0.5)
        # 3. Close what is left: WebSocket handshakes, idle HTTP keep-alives.
        await self.ws.close(max(0.05, deadline - time.monotonic()))
        for uv in self.uvicorn.values():
            for connection in list(uv.server_state.connections):
                connection.shutdown()
        self._abort_connections(only_idle=True)
        self.uvicorn = {}

    def _abort_connections(self, only_idle: bool = False) -> None:
        """Close HTTP connections (only idle ones if asked) and abort WebSockets."""
        for uv in self.uvicorn.values():
            for connection in list(uv.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is None or transport.is_closing():
                    continue
                if only_idle:
                    transport.close()
                else:
                    transport.abort()
        if not only_idle:
            self.ws.abort_connections()
