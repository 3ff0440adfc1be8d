"""What the transports share: the parsing of what clients send (filters,
resume points, epochs), token checks, and :class:`ServerView`, the one
interface through which they see the server."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from starlette.responses import JSONResponse, Response

from ..core.hub import MAX_CHUNK_BYTES

if TYPE_CHECKING:
    from ..config import StreamConfig
    from ..core.hub import Cursor, Hub
    from ..runtime.notifier import LoopNotifier
    from ..telemetry import LatencyHistogram
    from .access import AccessPolicy
    from .clients import ClientRegistry

__all__ = [
    "BadRequest",
    "ServerView",
    "bearer_token",
    "catch_up",
    "error_response",
    "json_response",
    "next_chunk",
    "parse_epoch",
    "parse_list",
    "parse_seq",
    "token_matches",
]


class BadRequest(ValueError):
    """A client sent a parameter we cannot use; the message says which."""


class ServerView(Protocol):
    """What the transports need from the server (keeps imports one-way)."""

    hub: Hub
    config: StreamConfig
    latency: LatencyHistogram
    clients: ClientRegistry
    access: AccessPolicy
    streams: set[asyncio.Task[Any]]

    @property
    def notifier(self) -> LoopNotifier | None: ...

    @property
    def ports(self) -> dict[str, int]: ...

    def status(self) -> dict[str, Any]: ...

    def sources(self) -> list[dict[str, Any]]: ...

    def live_runs(self) -> set[str]: ...

    def live_tracks(self) -> set[tuple[str, int | None]]: ...

    @property
    def backend_state(self) -> str | None: ...


def parse_list(value: str | Iterable[str] | None, name: str, limit: int = 100) -> list[str] | None:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]``; empty -> None."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise BadRequest(f"{name} must be a string or a list of strings, got {item!r:.60}")
        out.extend(part.strip() for part in item.split(",") if part.strip())
    if len(out) > limit:
        raise BadRequest(f"{name}: at most {limit} values")
    if any(len(part) > 200 for part in out):
        raise BadRequest(f"{name}: each value must be at most 200 characters")
    return out or None


def parse_seq(value: object, name: str) -> int | None:
    """A resume point: a non-negative integer, or None when absent/empty."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest(f"{name} must be a non-negative integer, got {value!r}")
    if isinstance(value, int):
        seq = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        # isascii: str.isdigit() is also true of '²' and other non-ASCII digits.
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise BadRequest(f"{name} must be a non-negative integer (an event seq), got {value!r:.60}")
        seq = int(text)
    else:
        raise BadRequest(f"{name} must be a non-negative integer, got {type(value).__name__}")
    if seq < 0 or seq > 2**62:
        raise BadRequest(f"{name} must be a non-negative integer, got {seq}")
    return seq


def parse_epoch(value: object) -> str | None:
    """An epoch to resume in: the alphanumeric epoch of a previous event, or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64 or not (value.isascii() and value.isalnum()):
        raise BadRequest("epoch must be the alphanumeric epoch of a previous event")
    return value


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; ``expected=None`` means no token required."""
    if expected is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """Every 4xx/5xx we send: ``{"error": message, ...}``."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def json_response(body: bytes, status: int = 200) -> Response:
    """Already encoded JSON."""
    return Response(body, status_code=status, media_type="application/json")


#: How long a replica behind a client's resume point waits to catch up with it.
CATCH_UP_TIMEOUT = 2.0


async def catch_up(hub: Hub, notifier: LoopNotifier, since: int | None) -> None:
    """A client resumes from a seq this replica has not stored yet (it read it
    on another replica of the same Redis stream): wait, briefly, until it has.
    Past the wait, the resume point is treated as ahead of the stream."""
    if since is None or not hub.numbered_elsewhere or since <= hub.head:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CATCH_UP_TIMEOUT
    while hub.head < since and not notifier.closing:
        left = deadline - loop.time()
        if left <= 0:
            return
        try:
            await asyncio.wait_for(notifier.waiter(), left)
        except TimeoutError:
            return


async def next_chunk(
    hub: Hub, cursor: Cursor, notifier: LoopNotifier | None = None
) -> tuple[bytes, int] | None:
    """What a writer sends next to ``cursor``, and how many frames: events
    from the hub's archive while the cursor is behind the ring (when there is
    an archive), else the ring's next chunk (:meth:`Hub.read`). The writer
    counts the frames in ``hub.counters.delivered`` once it has written them.

    None once the server is stopping (``notifier`` closing) while the cursor
    is still behind the ring: the stream ends there, without the shutdown
    event (whose seq would make the client resume past events it never got),
    instead of holding the stop until the archive has been read to the ring;
    the client reconnects and resumes from its last seq."""
    archive = hub.archive
    while archive is not None:
        span = hub.backfill_range(cursor)
        if span is None:
            break
        if notifier is not None and notifier.closing:
            return None
        cached = hub.cached_backfill(cursor)
        if cached is not None:
            return cached
        read = asyncio.ensure_future(archive.read(span[0], span[1], MAX_CHUNK_BYTES))
        if not read.done() and notifier is not None:
            closed: asyncio.Future[Any] = notifier.when_closed()
            await asyncio.wait({read, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()  # the archive skips what nobody waits for any more
                return None
        events = await read
        if not events:
            break  # the archive has none of them: read() announces the stretch
        chunk, frames = hub.backfill_chunk(cursor, events)
        if frames:
            return chunk, frames
    return hub.read(cursor)
