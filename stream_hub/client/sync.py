"""``follow()``: the blocking iterator, over SSE (httpx) or WebSocket
(websockets' sync client). The decisions are the :class:`~.follower.Follower`'s;
this module only connects, reads and sleeps."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import connect as ws_connect

from ..config import StreamConfig
from .discovery import find_hub, where_to_look
from .follow_errors import FollowError, FollowTimeout, HubNotFound
from .follower import Dropped, Follower, OnShutdown, Position, describe, error_text
from .sse_decoder import SSEDecoder

__all__ = ["Subscription", "follow"]


def follow(
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
) -> Subscription:
    """Follow a hub's events: an iterator of event dicts, in seq order, each once.

    ``url`` is the hub's SSE endpoint (``http://127.0.0.1:8888``, ``/events``
    added when no path is given) or its WebSocket one (``ws://127.0.0.1:8889/``).
    Without one, the user's hub is found before every connection (so also
    after it moved ports): through the registry's record of the configured
    bind address and ports first, which names the ports the hub really bound,
    then at the configured ports; its REST port must answer ``/health`` as
    stream_hub. "Configured" is ``config`` (host and the three ports), or
    else ``STREAM_HUB_HOST`` and ``STREAM_HUB_*_PORT``, then the defaults.
    ``runs`` and ``types`` filter (a name, comma-separated names, or an
    iterable); ``since`` replays what history still holds after that seq
    (``0``: all of it; with ``epoch``, the epoch of that seq), None follows
    new events only.

    Dropped connections and hub restarts are handled: it reconnects with
    backoff and resumes after the last event, so nothing is missed or
    repeated; a stretch the hub no longer has arrives as a ``gap`` event.
    When the hub stops cleanly, the iteration ends (``on_shutdown="end"``)
    or waits for it to come back (``"wait"``).

    Raises:
        ConfigError: no URL, and the host or a port in the environment is invalid.
        TypeError, ValueError: a bad argument (both ``url`` and ``config``, ...).

    Raises (from the iteration):
        HubUnreachable: no hub answered for ``retry_for`` seconds (None: never
            give up); without a URL, :class:`HubNotFound`, saying where it looked.
        NotAHub: without a URL, the configured REST port answers, but not as
            a stream_hub hub (another program holds it).
        HubRefused: the hub refused the subscription (a token or parameter problem).
        FollowTimeout: no event for ``idle_timeout`` seconds (None: wait forever).

    Use it as a context manager, or call ``close()``, to let go of the
    connection before the end; ``last_seq`` and ``epoch`` say where it stands.
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
    return Subscription(follower, where_to_look(url, config))


class Subscription(Position):
    """The iterator :func:`follow` returns."""

    def __init__(self, follower: Follower, config: StreamConfig | None = None) -> None:
        super().__init__(follower)
        # The reader does not point back here: a subscription dropped without
        # close() is freed at once, and its generator closes the connection.
        self._events = _Reader(follower, config).run()

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._events)

    def close(self) -> None:
        """Let go of the connection; the iteration ends (call it from the
        iterating thread)."""
        self._events.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Reader:
    """Connects, reads and sleeps for one :class:`Subscription`."""

    def __init__(self, follower: Follower, config: StreamConfig | None) -> None:
        self.follower = follower
        self.config = config  # where to look for the hub (no URL given)
        self._client: httpx.Client | None = None

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> Generator[dict[str, Any], None, None]:
        follower = self.follower
        session = self._sse if follower.transport == "sse" else self._ws
        try:
            while True:
                try:
                    if self.config is not None:
                        hub = find_hub(self.config, timeout=follower.connect_timeout)
                        follower.located(hub.urls["sse"])
                    yield from session()
                    if not follower.ended():
                        return
                    delay = follower.next_delay()
                except Dropped as exc:
                    delay = follower.failed(exc.cause, exc.quiet)
                except HubNotFound as exc:
                    delay = follower.not_found(exc.looked)
                self._sleep(delay)
        finally:
            if self._client is not None:
                self._client.close()

    def _sleep(self, delay: float) -> None:
        # The reconnect backoff itself, on the caller's thread inside its
        # iteration: nothing else could end the wait (close() runs between
        # events, not during one), so waiting for the time to pass is the point.
        left = self.follower.idle_left()
        if left is not None and left < delay:
            time.sleep(max(0.0, left))
            self._timed_out()
        time.sleep(delay)

    def _timed_out(self) -> None:
        follower = self.follower
        assert follower.idle_timeout is not None
        raise FollowTimeout(follower.url, follower.idle_timeout, follower.last_seq)

    def _check_idle(self) -> None:
        left = self.follower.idle_left()
        if left is not None and left <= 0:
            self._timed_out()

    # -- SSE ----------------------------------------------------------------------------

    def _sse(self) -> Generator[dict[str, Any], None, None]:
        follower = self.follower
        if self._client is None:
            self._client = httpx.Client()
        url, headers = follower.sse_request()
        # One read waits at most this long: the hub sends keep-alives while
        # idle, so a silent connection is a dead one. With an idle timeout
        # shorter than that, a read waits no longer than the idle time left.
        read_for = follower.read_timeout_now()
        timeout = httpx.Timeout(follower.connect_timeout, read=read_for)
        try:
            with self._client.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    raise follower.refused(response.status_code, error_text(response.content))
                follower.check_content_type(response.headers.get("content-type", ""))
                follower.connected()
                decoder = SSEDecoder()
                for chunk in response.iter_bytes():
                    follower.received()
                    for frame in decoder.feed(chunk):
                        event = follower.decode(frame.data)
                        if follower.take(event):
                            yield event
                    self._check_idle()
        except httpx.ReadTimeout as exc:
            left = follower.idle_left()
            if left is not None and left < 0.05:
                self._timed_out()
            # A read shortened by the idle timeout is not a dead connection.
            raise Dropped(describe(exc), quiet=read_for < follower.read_timeout) from None
        except httpx.TransportError as exc:
            raise Dropped(describe(exc)) from None

    # -- WebSocket ------------------------------------------------------------------------

    def _ws(self) -> Generator[dict[str, Any], None, None]:
        follower = self.follower
        url, headers = follower.ws_request()
        try:
            conn = ws_connect(
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
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise Dropped(describe(exc)) from None
        with conn:
            follower.connected()
            while True:
                left = follower.idle_left()
                try:
                    message = conn.recv(timeout=None if left is None else max(0.0, left))
                except TimeoutError:
                    self._timed_out()
                except ConnectionClosed as exc:
                    if exc.rcvd is not None and exc.rcvd.code in (1000, 1001):
                        return  # a clean close: what it means is the follower's call
                    raise Dropped(describe(exc)) from None
                follower.received()
                event = follower.decode(message)
                if follower.take(event):
                    yield event
