"""``afollow()``: the asynchronous iterator, over SSE (httpx) or WebSocket
(websockets' asyncio client). The decisions are the
:class:`~.follower.Follower`'s; this module only connects, reads and sleeps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..config import StreamConfig
from .discovery import afind_hub, where_to_look
from .follow_errors import FollowError, FollowTimeout, HubNotFound
from .follower import Dropped, Follower, OnShutdown, Position, describe, error_text
from .sse_decoder import SSEDecoder

__all__ = ["AsyncSubscription", "afollow"]


def afollow(
    url: str | None = None,
    runs: str | Iterable[str] | None = None,
    types: str | Iterable[str] | None = None,
    since: int | None = None,
    *,
    epoch: str | None = None,
    token: str | None = None,
    on_shutdown: OnShutdown = "end",
    retry_for: float | None = 30.0,
    idle_timeout: float | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    config: StreamConfig | None = None,
) -> AsyncSubscription:
    """:func:`~stream_hub.client.follow` for asyncio: ``async for event in afollow(url)``.

    The same arguments (without ``url``, the hub is found the same way),
    events, reconnections and exceptions; ``async with``
    (or ``await sub.aclose()``) lets go of the connection before the end.
    """
    follower = Follower(
        url,
        runs,
        types,
        since,
        epoch=epoch,
        token=token,
        on_shutdown=on_shutdown,
        retry_for=retry_for,
        idle_timeout=idle_timeout,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    return AsyncSubscription(follower, where_to_look(url, config))


class AsyncSubscription(Position):
    """The asynchronous iterator :func:`afollow` returns."""

    def __init__(self, follower: Follower, config: StreamConfig | None = None) -> None:
        super().__init__(follower)
        # The reader does not point back here (see the sync Subscription).
        self._events = _Reader(follower, config).run()

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Let go of the connection; the iteration ends."""
        await self._events.aclose()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _Reader:
    """Connects, reads and sleeps for one :class:`AsyncSubscription`."""

    def __init__(self, follower: Follower, config: StreamConfig | None) -> None:
        self.follower = follower
        self.config = config  # where to look for the hub (no URL given)
        self._client: httpx.AsyncClient | None = None

    async def run(self) -> AsyncGenerator[dict[str, Any], None]:
        follower = self.follower
        session = self._sse if follower.transport == "sse" else self._ws
        try:
            while True:
                try:
                    if self.config is not None:
                        hub = await afind_hub(self.config, timeout=follower.connect_timeout)
                        follower.located(hub.urls["sse"])
                    async with contextlib.aclosing(session()) as events:
                        async for event in events:
                            yield event
                    if not follower.ended():
                        return
                    delay = follower.next_delay()
                except Dropped as exc:
                    delay = follower.failed(exc.cause, exc.quiet)
                except HubNotFound as exc:
                    delay = follower.not_found(exc.looked)
                left = follower.idle_left()
                if left is not None and left < delay:
                    await asyncio.sleep(max(0.0, left))
                    self._timed_out()
                await asyncio.sleep(delay)
        finally:
            if self._client is not None:
                await self._client.aclose()

    def _timed_out(self) -> None:
        follower = self.follower
        assert follower.idle_timeout is not None
        raise FollowTimeout(follower.url, follower.idle_timeout, follower.last_seq)

    async def _next(self, source: AsyncIterator[Any]) -> Any:
        """The next item of ``source``, within the idle timeout."""
        left = self.follower.idle_left()
        if left is None:
            return await source.__anext__()
        try:
            return await asyncio.wait_for(source.__anext__(), max(0.0, left))
        except asyncio.TimeoutError:
            self._timed_out()

    # -- SSE ----------------------------------------------------------------------------

    async def _sse(self) -> AsyncGenerator[dict[str, Any], None]:
        follower = self.follower
        if self._client is None:
            self._client = httpx.AsyncClient()
        url, headers = follower.sse_request()
        timeout = httpx.Timeout(follower.connect_timeout, read=follower.read_timeout)
        try:
            async with self._client.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise follower.refused(response.status_code, error_text(response.content))
                follower.check_content_type(response.headers.get("content-type", ""))
                follower.connected()
                decoder = SSEDecoder()
                chunks = response.aiter_bytes()
                while True:
                    try:
                        chunk = await self._next(chunks)
                    except StopAsyncIteration:
                        return
                    follower.received()
                    for frame in decoder.feed(chunk):
                        event = follower.decode(frame.data)
                        if follower.take(event):
                            yield event
        except httpx.TransportError as exc:
            raise Dropped(describe(exc)) from None

    # -- WebSocket ------------------------------------------------------------------------

    async def _ws(self) -> AsyncGenerator[dict[str, Any], None]:
        follower = self.follower
        url, headers = follower.ws_request()
        try:
            conn = await ws_connect(
                url,
                additional_headers=headers,
                open_timeout=follower.connect_timeout,
                close_timeout=1.0,
                max_size=None,
                compression=None,
                ping_interval=follower.read_timeout / 3,
                ping_timeout=follower.read_timeout / 3,
            )
        except InvalidStatus as exc:
            response = exc.response
            raise follower.refused(response.status_code, error_text(bytes(response.body))) from None
        except InvalidURI as exc:
            raise FollowError(f"not a WebSocket URL: {exc}") from None
        except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
            raise Dropped(describe(exc)) from None
        async with conn:
            follower.connected()
            messages = aiter(conn)
            while True:
                try:
                    message = await self._next(messages)
                except StopAsyncIteration:
                    return  # closed with 1000 or 1001: what it means is the follower's call
                except ConnectionClosed as exc:
                    raise Dropped(describe(exc)) from None
                follower.received()
                event = follower.decode(message)
                if follower.take(event):
                    yield event
