"""The SSE face: ``GET /events`` as ``text/event-stream`` (FastAPI + sse-starlette).

Each event is one ``id:``/``event:``/``data:`` frame. A client resumes with the
``Last-Event-ID`` header (browsers send it on reconnect) or the
``last_event_id`` query parameter; the header wins, being the newer of the two.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..hub import SSE, Cursor
from .common import BadRequest, ServerView, bearer_token, parse_list, parse_seq, token_matches

__all__ = ["create_sse_app"]

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


async def _stream(server: ServerView, cursor: Cursor) -> AsyncIterator[bytes]:
    feed = server.feed
    hub = server.hub
    if feed is None:
        return
    latency = server.latency
    feed.clients["sse"] += 1
    try:
        while True:
            chunk, _ = hub.read(cursor)
            if chunk:
                yield chunk
                # Resumed once the chunk is handed to the transport.
                latency.observe(time.time() - hub.ts_of(cursor.pos))
                continue
            if feed.closing:
                return
            await feed.wait()
    finally:
        feed.clients["sse"] -= 1


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

    @app.get(
        "/events",
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream"}},
    )
    async def events(
        request: Request,
        run: list[str] | None = Query(None, description="runs to follow (repeat or comma-separate)"),
        types: list[str] | None = Query(None, description="event types to follow"),
        last_event_id: str | None = Query(None, description="resume after this seq"),
        epoch: str | None = Query(None, description="epoch the resume seq belongs to"),
        token: str | None = Query(None, description="read token (EventSource cannot set headers)"),
    ) -> Response:
        origin = _allowed_origin(server, request.headers.get("origin"))
        given = bearer_token(request.headers.get("authorization")) or token
        if not token_matches(given, server.config.read_token):
            return _error(401, "a read token is required: Authorization: Bearer <token> "
                          "or ?token=<token>", origin)
        try:
            runs = parse_list(run, "run")
            type_list = parse_list(types, "types")
            header = request.headers.get("last-event-id")
            since = parse_seq(header, "Last-Event-ID header")
            if since is None:
                since = parse_seq(last_event_id, "last_event_id")
            if epoch is not None and (len(epoch) > 64 or not epoch.isalnum()):
                raise BadRequest("epoch must be the alphanumeric epoch of a previous event")
        except BadRequest as exc:
            return _error(400, str(exc), origin)
        feed = server.feed
        if feed is None or feed.closing:
            return _error(503, "the server is shutting down; reconnect shortly", origin)
        if feed.clients["sse"] >= server.config.max_clients:
            return _error(503, f"too many SSE clients (max_clients={server.config.max_clients})",
                          origin)
        cursor = server.hub.open_cursor(since, epoch=epoch, fmt=SSE, runs=runs, types=type_list)
        headers = {"Access-Control-Allow-Origin": origin} if origin else None
        return EventSourceResponse(
            _stream(server, cursor),
            headers=headers,
            ping=server.config.heartbeat_interval,
            ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"),
            sep="\n",
        )

    return app
