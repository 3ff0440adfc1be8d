"""The hub a user would write by hand: the baseline stream_hub is measured against.

It is deliberately the obvious design, not a strawman:

- one asyncio event loop in a background thread, running two uvicorn servers
  (a FastAPI app with the SSE endpoint, a FastAPI app with a tiny REST face)
  and a ``websockets`` server;
- one ``asyncio.Queue`` per connected client;
- ``log()`` builds the event dict and calls ``loop.call_soon_threadsafe`` once
  per event; the callback puts the event into every client's queue;
- each client's task ``json.dumps`` the event and sends it: sse-starlette's
  ``EventSourceResponse`` for SSE, ``websocket.send`` for WebSocket.

``start()`` returns once all three ports accept connections; ``stop()`` once
the loop thread has ended and every port can be bound again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from sse_starlette.sse import EventSourceResponse
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

logger = logging.getLogger(__name__)

__all__ = ["BaselineHub"]


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class BaselineHub:
    """SSE + WebSocket + REST fan-out hub built the straightforward way."""

    name = "baseline"

    def __init__(
        self,
        host: str = "127.0.0.1",
        sse_port: int = 0,
        ws_port: int = 0,
        rest_port: int = 0,
    ) -> None:
        self.host = host
        self._wanted = {"sse": sse_port, "ws": ws_port, "rest": rest_port}
        self.ports: dict[str, int] = {}
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._sse_queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._ws_queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[uvicorn.Server] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopping: asyncio.Event | None = None

    # -- publishing (training thread) -----------------------------------------

    def log(self, metrics: Mapping[str, float], step: int | None = None, run: str | None = None) -> int:
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        event = {
            "seq": seq,
            "ts": time.time(),
            "type": "metric",
            "run": run or "default",
            "step": step,
            "metrics": dict(metrics),
        }
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._fan_out, event)
        return seq

    def _fan_out(self, event: dict[str, Any]) -> None:
        for q in self._sse_queues:
            q.put_nowait(event)
        for q in self._ws_queues:
            q.put_nowait(event)

    # -- the apps --------------------------------------------------------------

    def _sse_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/events")
        async def events(request: Request) -> EventSourceResponse:
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
            self._sse_queues.add(queue)

            async def stream() -> AsyncIterator[dict[str, Any]]:
                try:
                    while True:
                        event = await queue.get()
                        if event is None:
                            return
                        yield {
                            "id": str(event["seq"]),
                            "event": event["type"],
                            "data": json.dumps(event),
                        }
                finally:
                    self._sse_queues.discard(queue)

            return EventSourceResponse(stream())

        return app

    def _rest_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/api/status")
        async def status() -> dict[str, Any]:
            return {
                "last_seq": self._seq,
                "clients": {"sse": len(self._sse_queues), "ws": len(self._ws_queues)},
            }

        return app

    async def _ws_handler(self, websocket: ServerConnection) -> None:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._ws_queues.add(queue)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                await websocket.send(json.dumps(event))
        except ConnectionClosed:
            pass
        finally:
            self._ws_queues.discard(queue)

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the loop thread; return once all three ports accept connections."""
        socks = {name: _bound_socket(self.host, port) for name, port in self._wanted.items()}
        self.ports = {name: s.getsockname()[1] for name, s in socks.items()}
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(socks,), name="baseline-hub-loop", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"baseline hub did not start: {self._error!r}")

    def _thread_main(self, socks: dict[str, socket.socket]) -> None:
        try:
            asyncio.run(self._serve(socks))
        except BaseException as exc:  # reported to start()/stop()
            self._error = exc
            self._ready.set()
        finally:
            self._loop = None
            for s in socks.values():
                s.close()

    async def _serve(self, socks: dict[str, socket.socket]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._servers = []
        tasks = []
        for name, app in (("sse", self._sse_app()), ("rest", self._rest_app())):
            config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
            server = uvicorn.Server(config)
            self._servers.append(server)
            tasks.append(asyncio.create_task(server.serve(sockets=[socks[name]])))
        ws_server = await serve(self._ws_handler, sock=socks["ws"])
        while not all(s.started for s in self._servers):
            if any(t.done() for t in tasks):
                await asyncio.gather(*tasks)  # re-raises the error that ended one
                raise RuntimeError("uvicorn server exited during start-up")
            await asyncio.sleep(0.001)
        self._ready.set()
        await self._stopping.wait()
        for q in list(self._sse_queues) + list(self._ws_queues):
            q.put_nowait(None)
        for server in self._servers:
            server.should_exit = True
        ws_server.close()
        await ws_server.wait_closed()
        await asyncio.gather(*tasks)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the servers and the loop thread; return once every port is free."""
        loop, thread = self._loop, self._thread
        if loop is not None and self._stopping is not None:
            loop.call_soon_threadsafe(self._stopping.set)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError("baseline hub loop thread did not stop")
        self._thread = None
        deadline = time.monotonic() + timeout
        for port in self.ports.values():
            while not _port_is_free(self.host, port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"baseline hub: port {port} still bound after stop")
                threading.Event().wait(0.001)

    def force_restart(self) -> None:
        """What a hand-written hub does for a restart: stop, then start on the same ports."""
        ports = dict(self.ports)
        self.stop()
        self._wanted = ports
        self.start()


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
