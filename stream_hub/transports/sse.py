"""The SSE face: ``GET /events`` as ``text/event-stream``.

Each event is one ``id:``/``event:``/``data:`` frame. A client resumes with the
``Last-Event-ID`` header (browsers send it on reconnect) or the
``last_event_id`` query parameter; the header wins, being the newer of the two.

The response is a small ASGI callable of our own (:class:`EventStream`)
rather than sse-starlette's: the frames are pre-encoded by the hub, keep-alives
come from the notifier's one shared heartbeat, the end of the stream from the
hub's ``shutdown`` event, so a subscriber is one task plus a disconnect
listener, and its writes are checked against its byte budget.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from ..core.hub import SSE, Cursor
from .access import AccessCheck
from .http import TrackedH11Protocol
from .params import (
    BadRequest,
    ServerView,
    bearer_token,
    catch_up,
    error_response,
    next_chunk,
    parse_epoch,
    parse_list,
    parse_seq,
    token_matches,
)

__all__ = ["EventStream", "create_sse_app"]

KEEP_ALIVE = b": keep-alive\n\n"
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


def _error(status: int, message: str, origin: str | None = None) -> JSONResponse:
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else None
    return error_response(status, message, headers)


class EventStream:
    """The ASGI response of one SSE subscriber."""

    def __init__(self, server: ServerView, cursor: Cursor, origin: str | None) -> None:
        self.server = server
        self.cursor = cursor
        self.origin = origin
        self.gone = False
        self._waiter: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = list(_HEADERS)
        if self.origin:
            headers += [(b"access-control-allow-origin", self.origin.encode()), (b"vary", b"Origin")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        client = scope.get("client")
        found = self.server.clients.by_peer.get((client[0], client[1])) if client else None
        conn = found if isinstance(found, TrackedH11Protocol) else None
        listener = asyncio.get_running_loop().create_task(self._listen(receive))
        task = asyncio.current_task()
        streams = self.server.streams
        if task is not None:
            streams.add(task)
            if conn is not None:
                conn.stream = task
        try:
            await self._stream(send, conn)
        finally:
            listener.cancel()
            if task is not None:
                streams.discard(task)
        if not self.gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _listen(self, receive: Receive) -> None:
        message: Message = {}
        while message.get("type") != "http.disconnect":
            message = await receive()
        self.gone = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _stream(self, send: Send, conn: TrackedH11Protocol | None) -> None:
        server = self.server
        notifier = server.notifier
        if notifier is None:
            return
        hub, cursor, latency, clients = server.hub, self.cursor, server.latency, server.clients
        turns = notifier.turns
        wire = conn.wire if conn is not None else None
        notifier.clients["sse"] += 1
        try:
            while not self.gone:
                if notifier.detached or (wire is not None and wire.is_closing()):
                    # Reset, evicted or closed under us: uvicorn's send() then
                    # neither raises nor waits, so without this the rest of the
                    # history would go nowhere without the loop ever yielding.
                    # (Detached: the server stopped without this loop.)
                    return
                got = await next_chunk(hub, cursor, notifier)
                if got is None:
                    return  # stopping while behind the ring: the client resumes from its last seq
                chunk, frames = got
                if chunk:
                    turn = turns.take(len(chunk))
                    if turn is not None:
                        await turn
                        if wire is not None and wire.is_closing():
                            return  # gone while it waited; the client resumes from its last seq
                    if conn is not None and clients.over_budget(conn, len(chunk)):
                        return
                    # Waits (in uvicorn) while the client's transport is paused.
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if wire is None or not wire.is_closing():
                        hub.counters.delivered += frames
                    latency.observe(time.time() - hub.ts_of(cursor.pos))
                    continue
                if notifier.closing:
                    if hub.farewell_frames is not None:
                        await send(
                            {
                                "type": "http.response.body",
                                "body": hub.farewell_frames[SSE],
                                "more_body": True,
                            }
                        )
                    return
                beats = notifier.beats
                self._waiter = notifier.waiter()
                await self._waiter
                self._waiter = None
                if notifier.beats != beats and hub.head == cursor.pos and not self.gone:
                    await send({"type": "http.response.body", "body": KEEP_ALIVE, "more_body": True})
        finally:
            notifier.clients["sse"] -= 1


def create_sse_app(server: ServerView) -> Any:
    """The ASGI app served on the SSE port (Host-checked)."""
    app = FastAPI(
        title="stream_hub SSE",
        description="Server-Sent Events stream of training events.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    access = server.access

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # A plain Starlette route: the stream lives as long as the client stays, so
    # it should hold as little per-request state as possible (no dependency
    # solving). Query: run, types, last_event_id, epoch, token.
    async def events(request: Request) -> Response | EventStream:
        query = request.query_params
        origin = access.cors_origin(request.headers.get("origin"), request.headers.get("host"))
        given = bearer_token(request.headers.get("authorization")) or query.get("token")
        if not token_matches(given, server.config.read_token):
            return _error(
                401, "a read token is required: Authorization: Bearer <token> or ?token=<token>", origin
            )
        try:
            runs = parse_list(query.getlist("run") or None, "run")
            type_list = parse_list(query.getlist("types") or None, "types")
            since = parse_seq(request.headers.get("last-event-id"), "Last-Event-ID header")
            if since is None:
                since = parse_seq(query.get("last_event_id"), "last_event_id")
            epoch = parse_epoch(query.get("epoch"))
        except BadRequest as exc:
            return _error(400, str(exc), origin)
        notifier = server.notifier
        if notifier is None or notifier.closing:
            return _error(503, "the server is shutting down; reconnect shortly", origin)
        if notifier.clients["sse"] >= server.config.max_clients:
            return _error(503, f"too many SSE clients (max_clients={server.config.max_clients})", origin)
        await catch_up(server.hub, notifier, since)
        cursor = server.hub.open_cursor(since, epoch=epoch, fmt=SSE, runs=runs, types=type_list)
        return EventStream(server, cursor, origin)

    app.add_route("/events", events, methods=["GET"], include_in_schema=False)  # type: ignore[arg-type]
    return AccessCheck(app, access)
