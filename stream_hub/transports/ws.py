"""The WebSocket face (``websockets.asyncio.server``): connect to ``/``.

Client -> server text frames::

    {"op": "subscribe", "runs": [...], "types": [...], "since": <seq>, "epoch": "..."}
    {"op": "ping"}

Server -> client: one event JSON per text frame; a bad client message gets
``{"type": "error", "error": "..."}`` and the connection stays open; shutdown
closes with 1001.

Every frame a connection gets is in strictly increasing seq order, each event
at most once, with every hole announced by a ``gap``:

- A subscription in the URL (``ws://host:port/?since=<seq>&epoch=...&runs=a,b
  &types=metric``) is in place before the first frame is written.
- A connection without one waits for its first message (up to
  ``SUBSCRIBE_GRACE`` seconds) before anything is written, so the usual
  "connect, then send subscribe with since" replays exactly too; after that
  it follows new events from the moment it connected.
- A ``subscribe`` message after frames were written continues from where the
  connection is: a ``since`` ahead skips ahead; a ``since`` in the past cannot
  be replayed in order, so events the new filters would have added there are
  announced by a ``gap`` (reason ``resubscribe``) — to replay them, reconnect
  with the subscription in the URL.

Event frames are pre-encoded by the hub (compression is off and server frames
are unmasked, so a frame is the same bytes for every client) and written to
the connection's transport directly, everything pending in one write, whole
frames only. Our :class:`~websockets.asyncio.server.ServerConnection`
subclass keeps the transport it is given (``connection_made``) and tracks
flow control (``pause_writing``/``resume_writing``), so writers wait for a
paused client themselves and a client that stays paused is evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..core.hub import WS, Cursor, Hub
from .clients import ClientRegistry, FlowState
from .headers import no_sniff
from .params import (
    BadRequest,
    ServerView,
    bearer_token,
    catch_up,
    next_chunk,
    parse_epoch,
    parse_list,
    parse_seq,
    token_matches,
)

if TYPE_CHECKING:
    from ..runtime.notifier import LoopNotifier

__all__ = ["SUBSCRIBE_GRACE", "WebSocketServer"]

logger = logging.getLogger(__name__)

GOING_AWAY = 1001
# How long a connection without a URL subscription waits for a first message
# before it starts following new events.
SUBSCRIBE_GRACE = 0.5


class TrackedConnection(FlowState, ServerConnection):
    """A server connection that keeps its transport and its flow-control state.

    ``registry`` is set on the subclass made for each server (see
    :func:`_connection_class`).
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.WriteTransport)
        self.wire = transport
        self.registry.add(self, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self, None)
        self._resumed()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        self._paused()
        super().pause_writing()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._resumed()


def _connection_class(registry: ClientRegistry) -> type[TrackedConnection]:
    return type("ServerTrackedConnection", (TrackedConnection,), {"registry": registry})


class _Session:
    """One connection's subscription and the wake-up of its writer."""

    __slots__ = ("cursor", "notifier", "started", "waiter", "written")

    def __init__(self, cursor: Cursor, started: bool, notifier: LoopNotifier) -> None:
        self.cursor = cursor
        self.notifier = notifier  # of the loop this connection lives on
        self.started = started  # may the writer write (subscribed, or grace over)
        self.written = False  # has any frame been written
        self.waiter: asyncio.Future[None] | None = None

    def kick(self) -> None:
        """Make the writer look at the cursor again now."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


_Subscription = tuple[int | None, str | None, list[str] | None, list[str] | None]


class WebSocketServer:
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
            process_response=no_sniff,
            server_header="stream_hub",
            create_connection=_connection_class(self.server.clients),
        )

    def is_serving(self) -> bool:
        return self.ws_server is not None and self.ws_server.is_serving()

    # -- handshake ----------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        cfg, access = self.server.config, self.server.access
        # One handshake per connection: the peer's user is checked here, once.
        refusal = access.peer_refusal(connection.local_address, connection.remote_address)
        if refusal is not None:
            return connection.respond(403, refusal + "\n")
        path, _, query_string = request.path.partition("?")
        if path != "/":
            return connection.respond(404, "WebSocket endpoint is / (for example ws://host:port/)\n")
        hosts, origins = request.headers.get_all("Host"), request.headers.get_all("Origin")
        if len(hosts) != 1 or len(origins) > 1:
            return connection.respond(400, "exactly one Host header and at most one Origin header\n")
        host = hosts[0]
        browser = bool(origins) or "Sec-Fetch-Site" in request.headers
        refusal = access.host_refusal(host, browser=browser)
        if refusal is not None:
            return connection.respond(403, refusal + "\n")
        origin = origins[0] if origins else None
        if not access.ws_origin_allowed(origin, host):
            return connection.respond(
                403,
                f"Origin {origin!r} is not allowed: only the dashboard's own origin and "
                "StreamConfig.ws_origins / STREAM_HUB_WS_ORIGINS may open a WebSocket here\n",
            )
        if cfg.read_token is not None:
            query = parse_qs(query_string)
            given = bearer_token(request.headers.get("Authorization")) or (query.get("token", [None])[0])
            if not token_matches(given, cfg.read_token):
                return connection.respond(
                    401, "a read token is required: Authorization: Bearer <token> or ?token=<token>\n"
                )
        notifier = self.server.notifier
        if notifier is None or notifier.closing or notifier.loop is not asyncio.get_running_loop():
            return connection.respond(503, "the server is shutting down; reconnect shortly\n")
        if notifier.clients["ws"] >= cfg.max_clients:
            return connection.respond(503, f"too many WebSocket clients (max_clients={cfg.max_clients})\n")
        try:
            subscription = _url_subscription(parse_qs(query_string))
        except BadRequest as exc:
            return connection.respond(400, f"{exc}\n")
        if subscription is not None:
            self._subscriptions[connection] = subscription
        return None

    # -- connection -----------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        notifier = self.server.notifier
        hub = self.server.hub
        if notifier is None or notifier.closing or notifier.loop is not asyncio.get_running_loop():
            await connection.close(GOING_AWAY, "server shutting down")
            return
        assert isinstance(connection, TrackedConnection)
        subscription = self._subscriptions.pop(connection, None)
        if subscription is not None:
            since, epoch, runs, types = subscription
            await catch_up(hub, notifier, since)
            cursor = hub.open_cursor(since, epoch=epoch, fmt=WS, runs=runs, types=types)
            session = _Session(cursor, True, notifier)
        else:
            session = _Session(hub.open_cursor(None, fmt=WS), False, notifier)
        notifier.clients["ws"] += 1
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
            connection.stream = task
        writer = asyncio.create_task(self._write_loop(connection, session, hub))
        try:
            await self._read_loop(connection, session, hub)
        except ConnectionClosed:
            pass
        finally:
            notifier.clients["ws"] -= 1
            if not writer.done():
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await writer
            if task is not None:
                self.handlers.discard(task)

    async def _write_loop(self, connection: TrackedConnection, session: _Session, hub: Hub) -> None:
        notifier = self.server.notifier
        assert notifier is not None
        if not session.started:
            loop = asyncio.get_running_loop()
            session.waiter = loop.create_future()
            timer = loop.call_later(SUBSCRIBE_GRACE, session.kick)
            await session.waiter
            timer.cancel()
            session.started = True
        while True:
            sent = await self._send_some(connection, session, hub)
            if sent is None:
                return
            if sent:
                continue
            if notifier.closing:
                farewell = hub.farewell_frames
                wire = connection.wire
                if farewell is not None and wire is not None and connection.state is State.OPEN:
                    wire.write(farewell[WS])
                await connection.close(GOING_AWAY, "server shutting down")
                return
            session.waiter = notifier.waiter()
            await session.waiter

    async def _send_some(self, connection: TrackedConnection, session: _Session, hub: Hub) -> bool | None:
        """Write the next chunk after the session's cursor; wait while the client
        is paused. Returns whether something was written, None if the
        connection is gone (or was evicted)."""
        wire = connection.wire
        if wire is None or wire.is_closing() or connection.state is not State.OPEN:
            return None  # gone (reset, evicted): writing on would never yield
        if session.notifier.detached:
            return None  # the server stopped without this loop: the hub is not ours to read
        got = await next_chunk(hub, session.cursor, session.notifier)
        if got is None:
            # Stopping while behind the ring: dropped, the client resumes from
            # its last seq. Not closed with 1001: the closing handshake would
            # wait (up to a second) for a client that may read nothing.
            wire.abort()
            return None
        chunk, frames = got
        if not chunk:
            return False
        turn = session.notifier.turns.take(len(chunk))
        if turn is not None:
            await turn
        if wire.is_closing() or connection.state is not State.OPEN:
            return None
        if self.server.clients.over_budget(connection, len(chunk)):
            return None
        wire.write(chunk)
        if not wire.is_closing():  # a write into a reset connection closes it
            hub.counters.delivered += frames
        session.written = True
        self.server.latency.observe(time.time() - hub.ts_of(session.cursor.pos))
        paused = connection.writable()
        if paused is not None:
            await paused
        return True

    async def _read_loop(self, connection: ServerConnection, session: _Session, hub: Hub) -> None:
        assert isinstance(connection, TrackedConnection)
        async for message in connection:
            session.started = True
            session.kick()
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
                continue
            # A subscription's replay (up to the head as it is now) is written
            # before the next message is handled, so a reply to a later message
            # (a pong) comes after it.
            head = hub.head
            cursor = session.cursor
            while (cursor.pos < head or cursor.pending_gap is not None) and await self._send_some(
                connection, session, hub
            ):
                pass

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
            epoch = parse_epoch(msg.get("epoch"))
            if session.written:
                session.cursor = hub.resubscribe(session.cursor, since, epoch=epoch, runs=runs, types=types)
            else:
                session.cursor = hub.open_cursor(since, epoch=epoch, fmt=WS, runs=runs, types=types)
            session.kick()
            return None
        raise BadRequest(f'unknown op {op!r}; expected "subscribe" or "ping"')

    async def _send_error(self, connection: ServerConnection, error: str) -> None:
        await connection.send(orjson.dumps({"type": "error", "error": error}).decode())

    # -- shutdown ---------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Stop accepting new connections now (the rest of :meth:`close` follows)."""
        if self.ws_server is not None:
            self.ws_server.server.close()

    async def close(self, timeout: float) -> None:
        """Close the listener and every connection (1001), wait for handlers.

        A connection whose opening handshake has not arrived yet is dropped:
        websockets would wait for it (to answer 503) until ``handshake_timeout``,
        and a client trickling it a byte at a time would hold the stop that long.
        """
        ws_server = self.ws_server
        if ws_server is None:
            return
        for conn in self.server.clients.of_loop():
            if isinstance(conn, TrackedConnection) and conn.request is None and conn.wire is not None:
                conn.wire.abort()
        ws_server.close(close_connections=True, code=GOING_AWAY, reason="server shutting down")
        try:
            await asyncio.wait_for(ws_server.wait_closed(), timeout)
        except asyncio.TimeoutError:
            logger.warning("WebSocket connections did not close within %.1f s; aborting them", timeout)
            self.abort_connections()
        self.ws_server = None

    def abort_connections(self) -> None:
        """Drop every WebSocket connection at once (clients that stopped reading)."""
        for conn in self.server.clients.of_loop():
            if isinstance(conn, TrackedConnection) and conn.wire is not None:
                conn.wire.abort()


def _url_subscription(query: dict[str, list[str]]) -> _Subscription | None:
    """since/epoch/runs/types from the connect URL's query string (None: none given)."""
    if not any(key in query for key in ("since", "epoch", "runs", "run", "types")):
        return None
    since = parse_seq(query.get("since", [None])[-1], "since")
    epoch = parse_epoch(query.get("epoch", [None])[-1])
    runs = parse_list(query.get("runs", []) + query.get("run", []) or None, "runs")
    types = parse_list(query.get("types") or None, "types")
    return since, epoch, runs, types


def _list_field(msg: dict[str, Any], name: str) -> Any:
    value = msg.get(name)
    if value is not None and not isinstance(value, (list, str)):
        raise BadRequest(f"{name} must be a list of strings")
    return value
