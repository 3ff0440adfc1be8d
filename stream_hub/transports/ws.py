"""The WebSocket face (``websockets.asyncio.server``): connect to ``/``.

Client -> server text frames::

    {"op": "subscribe", "runs": [...], "types": [...], "since": <seq>, "epoch": "..."}
    {"op": "ping"}

A new connection follows all new events until it subscribes. To resume
without duplicates, put the subscription in the URL instead
(``ws://host:port/?since=<seq>&epoch=...&runs=a,b&types=metric``): it is in
place before the first frame is written. A ``subscribe`` message replaces the
subscription from then on (its replay may repeat frames the connection already
got under the old one). Server -> client:
one event JSON per text frame; a bad client message gets
``{"type": "error", "error": "..."}`` and the connection stays open; shutdown
closes with 1001.

Event frames are pre-encoded by the hub (compression is off, and server frames
are unmasked, so a frame is the same bytes for every client) and written to
the transport directly, everything pending in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Any
from urllib.parse import parse_qs

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..hub import WS, Cursor, Hub
from .common import BadRequest, ServerView, bearer_token, parse_list, parse_seq, token_matches

__all__ = ["WebSocketFace"]

logger = logging.getLogger(__name__)

GOING_AWAY = 1001


class _Session:
    __slots__ = ("cursor",)

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor


class WebSocketFace:
    """Runs the websockets server of one :class:`~stream_hub.TrainingStreamServer`."""

    def __init__(self, server: ServerView) -> None:
        self.server = server
        self.ws_server: Server | None = None
        self.handlers: set[asyncio.Task[Any]] = set()
        self._subscriptions: weakref.WeakKeyDictionary[ServerConnection, _Subscription] = (
            weakref.WeakKeyDictionary()
        )

    async def start(self, sock: Any) -> None:
        cfg = self.server.config
        origins: list[Any] | None = None
        if cfg.ws_origins is not None:
            # Non-browser clients send no Origin header; browsers always do. The
            # dashboard (served from the REST port) is always allowed.
            rest = self.server.ports.get("rest")
            hosts = {cfg.host, "127.0.0.1", "localhost", "[::1]"}
            origins = [*cfg.ws_origins, *(f"http://{h}:{rest}" for h in sorted(hosts)), None]
        self.ws_server = await serve(
            self._handle,
            sock=sock,
            compression=None,
            max_size=cfg.max_message_size,
            open_timeout=cfg.handshake_timeout,
            ping_interval=cfg.heartbeat_interval,
            ping_timeout=max(cfg.heartbeat_interval, 10.0),
            close_timeout=1.0,
            process_request=self._process_request,
            origins=origins,
            server_header="stream_hub",
        )

    # -- handshake ----------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _, query_string = request.path.partition("?")
        if path != "/":
            return connection.respond(404, "WebSocket endpoint is / (for example ws://host:port/)\n")
        cfg = self.server.config
        if cfg.read_token is not None:
            query = parse_qs(query_string)
            given = bearer_token(request.headers.get("Authorization")) or (query.get("token", [None])[0])
            if not token_matches(given, cfg.read_token):
                return connection.respond(
                    401, "a read token is required: Authorization: Bearer <token> or ?token=<token>\n"
                )
        feed = self.server.feed
        if feed is None or feed.closing:
            return connection.respond(503, "the server is shutting down; reconnect shortly\n")
        if feed.clients["ws"] >= cfg.max_clients:
            return connection.respond(503, f"too many WebSocket clients (max_clients={cfg.max_clients})\n")
        try:
            self._subscriptions[connection] = _url_subscription(parse_qs(query_string))
        except BadRequest as exc:
            return connection.respond(400, f"{exc}\n")
        return None

    # -- connection -----------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        feed = self.server.feed
        hub = self.server.hub
        if feed is None or feed.closing:
            await connection.close(GOING_AWAY, "server shutting down")
            return
        # A subscription in the URL (?since=&epoch=&runs=&types=) is in place
        # before anything is written: the way to resume without duplicates.
        since, epoch, runs, types = self._subscriptions.pop(connection, (None, None, None, None))
        session = _Session(hub.open_cursor(since, epoch=epoch, fmt=WS, runs=runs, types=types))
        feed.clients["ws"] += 1
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
        writer = asyncio.create_task(self._write_loop(connection, session, hub))
        try:
            await self._read_loop(connection, session, hub)
        except ConnectionClosed:
            pass
        finally:
            feed.clients["ws"] -= 1
            if not writer.done():
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await writer
            if task is not None:
                self.handlers.discard(task)

    async def _write_loop(self, connection: ServerConnection, session: _Session, hub: Hub) -> None:
        feed = self.server.feed
        assert feed is not None
        latency = self.server.latency
        while True:
            chunk, _ = hub.read(session.cursor)
            if chunk:
                if connection.protocol.state is not State.OPEN:
                    return
                connection.transport.write(chunk)
                latency.observe(time.time() - hub.ts_of(session.cursor.pos))
                await connection.drain()
                continue
            if feed.closing:
                await connection.close(GOING_AWAY, "server shutting down")
                return
            await feed.wait()

    async def _read_loop(self, connection: ServerConnection, session: _Session, hub: Hub) -> None:
        async for message in connection:
            if isinstance(message, bytes):
                await self._send_error(connection, "binary frames are not supported; send JSON text")
                continue
            try:
                reply = self._apply(message, session, hub)
            except BadRequest as exc:
                await self._send_error(connection, str(exc))
                continue
            if reply is not None:
                await connection.send(orjson.dumps(reply).decode())
            elif connection.protocol.state is State.OPEN:
                # A resubscription with ``since`` replays history right away,
                # before any newer event can be written.
                chunk, _ = hub.read(session.cursor)
                if chunk:
                    connection.transport.write(chunk)
                    await connection.drain()

    def _apply(self, message: str, session: _Session, hub: Hub) -> dict[str, Any] | None:
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError:
            raise BadRequest('invalid JSON; expected an object like {"op": "subscribe"}') from None
        if not isinstance(msg, dict):
            raise BadRequest('expected a JSON object with an "op" field')
        op = msg.get("op")
        if op == "ping":
            return {"type": "pong", "ts": time.time(), "last_seq": hub.head, "epoch": hub.epoch}
        if op == "subscribe":
            unknown = set(msg) - {"op", "runs", "types", "since", "epoch"}
            if unknown:
                raise BadRequest(f"unknown subscribe field(s): {', '.join(sorted(unknown))}")
            runs = parse_list(_list_field(msg, "runs"), "runs")
            types = parse_list(_list_field(msg, "types"), "types")
            since = parse_seq(msg.get("since"), "since")
            epoch = msg.get("epoch")
            if epoch is not None and not isinstance(epoch, str):
                raise BadRequest("epoch must be a string")
            session.cursor = hub.open_cursor(since, epoch=epoch, fmt=WS, runs=runs, types=types)
            return None
        raise BadRequest(f'unknown op {op!r}; expected "subscribe" or "ping"')

    async def _send_error(self, connection: ServerConnection, error: str) -> None:
        await connection.send(orjson.dumps({"type": "error", "error": error}).decode())

    # -- shutdown ---------------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """Close the listener and every connection (1001), wait for handlers."""
        ws_server = self.ws_server
        if ws_server is None:
            return
        ws_server.close(close_connections=True, code=GOING_AWAY, reason="server shutting down")
        try:
            await asyncio.wait_for(ws_server.wait_closed(), timeout)
        except asyncio.TimeoutError:
            logger.warning("WebSocket connections did not close within %.1f s; aborting them", timeout)
            for connection in list(ws_server.all_connections):
                connection.transport.abort()
        self.ws_server = None

    def abort_connections(self) -> None:
        """Drop every connection at once (clients that stopped reading)."""
        if self.ws_server is not None:
            for connection in list(self.ws_server.all_connections):
                connection.transport.abort()

    def abort_listener(self) -> None:
        """Stop accepting new connections now (the rest of close() follows)."""
        if self.ws_server is not None:
            self.ws_server.server.close()


_Subscription = tuple[int | None, str | None, list[str] | None, list[str] | None]


def _url_subscription(query: dict[str, list[str]]) -> _Subscription:
    """since/epoch/runs/types from the connect URL's query string."""
    since = parse_seq(query.get("since", [None])[-1], "since")
    epoch = query.get("epoch", [None])[-1]
    if epoch is not None and (len(epoch) > 64 or not epoch.isalnum()):
        raise BadRequest("epoch must be the alphanumeric epoch of a previous event")
    runs = parse_list(query.get("runs", []) + query.get("run", []) or None, "runs")
    types = parse_list(query.get("types") or None, "types")
    return since, epoch, runs, types


def _list_field(msg: dict[str, Any], name: str) -> Any:
    value = msg.get(name)
    if value is not None and not isinstance(value, (list, str)):
        raise BadRequest(f"{name} must be a list of strings")
    return value
