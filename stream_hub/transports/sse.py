"""The SSE face: ``GET /events`` as ``text/event-stream`` (FastAPI + sse-starlette).

Each event is one ``id:``/``event:``/``data:`` frame. A client resumes with the
``Last-Event-ID`` header (browsers send it on reconnect) or the
``last_event_id`` query parameter; the header wins, being the newer of the two.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from ..hub import SSE, Cursor
from .common import BadRequest, ServerView, bearer_token, parse_list, parse_seq, token_matches

__all__ = ["create_sse_app"]

KEEP_ALIVE = b": keep-alive\n\n"
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _allowed_origin(server: ServerView, origin: str | None) -> str | None:
    """The Origin to echo in CORS headers, or None.

    The dashboard is served from the REST port, a different origin than this
    one, so its origin is always allowed; others only when configured.
    """
    if not origin:
        return None
    allowed = server.config.cors_origins
    if "*" in allowed or origin in allowed:
        return origin
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    rest_port = server.ports.get("rest")
    host = parts.hostname or ""
    if port == rest_port and (host == server.config.host or host in _LOOPBACK_NAMES):
        return origin
    return None


def _error(status: int, message: str, origin: str | None = None) -> JSONResponse:
    headers = {"Access-Control-Allow-Origin": origin} if origin else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Client:
    """One SSE subscriber: its cursor, and how its writer learns it has gone."""

    __slots__ = ("cursor", "gone", "waiter")

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor
        self.gone = False
        self.waiter: asyncio.Future[None] | None = None

    async def disconnected(self, message: Any) -> None:
        # Called by sse-starlette's disconnect listener: end the stream cleanly.
        self.gone = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _stream(server: ServerView, client: _Client) -> AsyncIterator[bytes]:
    feed = server.feed
    hub = server.hub
    if feed is None:
        return
    cursor = client.cursor
    latency = server.latency
    feed.clients["sse"] += 1
    try:
        while not client.gone:
            chunk, _ = hub.read(cursor)
            if chunk:
                yield chunk
                # Resumed once the chunk is handed to the transport.
                latency.observe(time.time() - hub.ts_of(cursor.pos))
                continue
            if feed.closing:
                return
            beats = feed.beats
            client.waiter = feed.waiter()
            await client.waiter
            client.waiter = None
            if feed.beats != beats and hub.head == cursor.pos and not client.gone:
                yield KEEP_ALIVE  # idle for a heartbeat interval
    finally:
        feed.clients["sse"] -= 1


class _HubEventSource(EventSourceResponse):
    """sse-starlette's response with one helper task per client instead of three.

    The stock ``__call__`` runs the stream, a ping loop, a process-wide
    shutdown watcher and a disconnect listener as four tasks in a task group.
    Here keep-alives come from the feed's one shared heartbeat, and shutdown
    from the hub itself (the stream ends after the ``shutdown`` event), so only
    the disconnect listener runs beside the stream; it ends the stream by
    telling the generator, not by cancelling it. This keeps an idle client
    small (it is most of what a watcher costs).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].upper() == "HEAD":
            await super().__call__(scope, receive, send)
            return
        listener = asyncio.get_running_loop().create_task(self._listen_for_disconnect(receive))
        try:
            await self._stream_response(send)
        finally:
            listener.cancel()
        if self.background is not None:
            await self.background()


def create_sse_app(server: ServerView) -> FastAPI:
    """The ASGI app served on the SSE port."""
    app = FastAPI(
        title="stream_hub SSE",
        description="Server-Sent Events stream of training events.",
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # A plain Starlette route: the stream lives as long as the client stays, so
    # it should hold as little per-request state as possible (no dependency
    # solving). Query: run, types, last_event_id, epoch, token.
    async def events(request: Request) -> Response:
        query = request.query_params
        token = query.get("token")
        epoch = query.get("epoch")
        origin = _allowed_origin(server, request.headers.get("origin"))
        given = bearer_token(request.headers.get("authorization")) or token
        if not token_matches(given, server.config.read_token):
            return _error(
                401, "a read token is required: Authorization: Bearer <token> or ?token=<token>", origin
            )
        try:
            runs = parse_list(query.getlist("run") or None, "run")
            type_list = parse_list(query.getlist("types") or None, "types")
            header = request.headers.get("last-event-id")
            since = parse_seq(header, "Last-Event-ID header")
            if since is None:
                since = parse_seq(query.get("last_event_id"), "last_event_id")
            if epoch is not None and (len(epoch) > 64 or not epoch.isalnum()):
                raise BadRequest("epoch must be the alphanumeric epoch of a previous event")
        except BadRequest as exc:
            return _error(400, str(exc), origin)
        feed = server.feed
        if feed is None or feed.closing:
            return _error(503, "the server is shutting down; reconnect shortly", origin)
        if feed.clients["sse"] >= server.config.max_clients:
            return _error(503, f"too many SSE clients (max_clients={server.config.max_clients})", origin)
        client = _Client(server.hub.open_cursor(since, epoch=epoch, fmt=SSE, runs=runs, types=type_list))
        headers = {"Access-Control-Allow-Origin": origin} if origin else None
        return _HubEventSource(
            _stream(server, client),
            headers=headers,
            ping=0,
            sep="\n",
            client_close_handler_callable=client.disconnected,
        )

    app.add_route("/events", events, methods=["GET"], include_in_schema=False)
    return app
