"""What following a hub decides, without any I/O: where to resume, which
events to hand over, what the end of a stream means, how long to wait before
the next connection and when to give up.

The sync (:mod:`.sync`) and asyncio (:mod:`.asyncio`) layers only move bytes
and sleep; every decision is here, so both behave the same on SSE and on
WebSocket.

Resuming: the position is the ``seq`` and ``epoch`` of the last event taken
(a ``gap``'s seq is the last one lost). A reconnection asks for what comes
after it (``Last-Event-ID`` and ``epoch`` on SSE, ``since`` and ``epoch`` in
the WebSocket URL), so the hub replays exactly what was missed, or says with
a ``gap`` what it no longer has. Following "from now" (``since=None``) starts
with a resume point beyond any seq: the hub answers at once with a ``gap``
(reason ``ahead``) that says where it stands; that answer is taken as the
starting position and not handed over, so nothing published during a later
outage is missed even before the first event arrives.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from .follow_errors import FollowError, HubNotFound, HubRefused, HubUnreachable

__all__ = ["PROBE", "UNLOCATED", "Dropped", "Follower", "OnShutdown", "Position", "describe", "error_text"]

logger = logging.getLogger("stream_hub.client")

OnShutdown = Literal["end", "wait"]

# What a follower without a URL calls the hub until discovery has found it.
UNLOCATED = "the user's hub"

# A resume point beyond any seq (the hub accepts up to 18 digits): see the module doc.
PROBE = 10**18 - 1

# Reconnection delays: doubled from FIRST up to LAST, with some jitter so that
# many clients of a restarted hub do not all come back at the same instant.
FIRST_DELAY = 0.05
LAST_DELAY = 2.0

# HTTP answers that mean "not now" (a hub shutting down, or full): retry.
TRANSIENT_STATUS = frozenset({502, 503, 504})


class Dropped(Exception):
    """The connection failed or broke: reconnect (internal to the client)."""

    def __init__(self, cause: str, quiet: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.quiet = quiet  # expected (a read cut short on purpose): not worth a warning


def _names(value: str | Iterable[str] | None, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    out: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what} must be a string or an iterable of strings, got {item!r}")
        out.update(part.strip() for part in item.split(",") if part.strip())
    return frozenset(out) or None


class Follower:
    """The state of one ``follow()``: its subscription, its position, and the
    current outage, if any."""

    def __init__(
        self,
        url: str | None,
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
    ) -> None:
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise ValueError(f"since must be a seq (an int >= 0) or None, got {since!r}")
        if on_shutdown not in ("end", "wait"):
            raise ValueError(f'on_shutdown must be "end" or "wait", got {on_shutdown!r}')
        for name, value in (("retry_for", retry_for), ("idle_timeout", idle_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        # Without a URL the hub is looked for before every connection (it may
        # have moved ports since the last one): see located() and not_found().
        self.discovering = url is None
        self._looked: str | None = None
        self._query: list[tuple[str, str]] = []
        if url is None:
            self.transport, self.url = "sse", UNLOCATED
        else:
            self.transport, self.url, self._query = _endpoint(url)
        self.runs = _names(runs, "runs")
        self.types = _names(types, "types")
        self.token = token
        self.on_shutdown = on_shutdown
        self.retry_for = retry_for
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # The position: the last event taken (None: none yet, follow from now).
        self.last_seq: int | None = since
        self.epoch: str | None = epoch if since is not None else None
        self._probing = since is None
        self.delivered = 0
        self.duplicates = 0
        self._shutdown: dict[str, Any] | None = None
        self._waiting_for_restart = False  # the hub stopped cleanly; we wait for it
        self._outage_since: float | None = None
        self._outage_logged = False
        self._delay = FIRST_DELAY
        self._connections = 0
        self._idle_deadline: float | None = None
        self.touch()

    # -- requests ---------------------------------------------------------------------

    def _resume_point(self) -> tuple[int, str | None]:
        if self._probing or self.last_seq is None:
            return PROBE, None
        return self.last_seq, self.epoch

    def sse_request(self) -> tuple[str, dict[str, str]]:
        """The URL (with its query) and headers of the next ``GET /events``."""
        since, epoch = self._resume_point()
        query = list(self._query)
        if self.runs:
            query.append(("run", ",".join(sorted(self.runs))))
        if self.types:
            query.append(("types", ",".join(sorted(self.types))))
        if epoch:
            query.append(("epoch", epoch))
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(since), "Cache-Control": "no-store"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return _with_query(self.url, query), headers

    def ws_request(self) -> tuple[str, dict[str, str]]:
        """The connect URL (the subscription in its query) and headers."""
        since, epoch = self._resume_point()
        query = [*self._query, ("since", str(since))]
        if epoch:
            query.append(("epoch", epoch))
        if self.runs:
            query.append(("runs", ",".join(sorted(self.runs))))
        if self.types:
            query.append(("types", ",".join(sorted(self.types))))
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return _with_query(self.url, query), headers

    # -- discovery (no URL given) -------------------------------------------------------

    def located(self, url: str) -> None:
        """Discovery found the hub: its SSE base URL (``http://host:port``)."""
        self._looked = None
        transport, url, query = _endpoint(url)
        if url != self.url:
            if self.url != UNLOCATED:
                logger.info("the hub moved from %s to %s", self.url, url)
            self.transport, self.url, self._query = transport, url, query

    def not_found(self, looked: str) -> float:
        """Discovery found no hub (it looked at ``looked``): the delay before
        looking again.

        Raises:
            HubNotFound: none for ``retry_for`` seconds.
        """
        self._looked = looked
        return self.failed(f"looked at {looked}")

    # -- events -----------------------------------------------------------------------

    def check_content_type(self, content_type: str) -> None:
        """Raise unless an answer of this content type is an event stream."""
        if not content_type.startswith("text/event-stream"):
            raise FollowError(
                f"{self.url} answered with {content_type or 'no content type'}, not an event "
                "stream: is this the hub's SSE endpoint (http://host:8888/events by default)?"
            )

    def decode(self, data: bytes | str) -> Any:
        """One event's JSON (an SSE frame's data, a WebSocket text frame)."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            raise FollowError(f"{self.url} sent something that is not JSON ({exc}): {text[:200]!r}") from None

    def take(self, event: Any) -> bool:
        """Account for one event from the hub; True if the caller gets it.

        Every event moves the position, also those the caller does not get
        (server events the filters leave out). A repeated event (same epoch,
        seq not beyond the position) is dropped: the hub never sends one, and
        this makes sure the caller never sees one either.
        """
        if not isinstance(event, dict):
            raise FollowError(f"{self.url} sent something that is not an event object: {event!r:.200}")
        seq, kind, epoch = event.get("seq"), event.get("type"), event.get("epoch")
        if not isinstance(seq, int):
            return False  # not an event (a WebSocket pong or error frame)
        data = event.get("data")
        if kind == "gap":
            probe = (
                self._probing
                and isinstance(data, dict)
                and data.get("reason") == "ahead"
                and data.get("since") == PROBE
            )
            self._move(seq, epoch)
            if probe:
                return False  # the answer to our "from now" resume point: the start
            self._deliver()
            return True
        self._probing = False
        if epoch == self.epoch and self.last_seq is not None and seq <= self.last_seq:
            self.duplicates += 1
            return False
        self._move(seq, epoch)
        if kind == "shutdown":
            self._shutdown = data if isinstance(data, dict) else {}
        if not self.wanted(kind, event.get("run")):
            return False
        self._deliver()
        return True

    def wanted(self, kind: Any, run: Any) -> bool:
        """Does the caller want an event of this type and run? (Gaps: always.)

        The hub sends ``gap`` and ``shutdown`` whatever the type filter says;
        a shutdown reaches the caller only if it asked for no type filter or
        for it. Events without a run (the server's ``status``, ``shutdown``)
        pass a run filter only when a type filter names them.
        """
        if kind == "gap":
            return True
        if self.types is not None and kind not in self.types:
            return False
        if self.runs is not None and run not in self.runs:
            return run is None and self.types is not None
        return True

    def _move(self, seq: int, epoch: Any) -> None:
        self.last_seq = seq
        self._probing = False
        if isinstance(epoch, str):
            self.epoch = epoch

    def _deliver(self) -> None:
        self.delivered += 1
        self.touch()

    # -- idle timeout -------------------------------------------------------------------

    def touch(self) -> None:
        """An event was handed over: the idle timeout starts again."""
        if self.idle_timeout is not None:
            self._idle_deadline = time.monotonic() + self.idle_timeout

    def idle_left(self) -> float | None:
        """Seconds until the idle timeout (None: no idle timeout)."""
        if self._idle_deadline is None:
            return None
        return self._idle_deadline - time.monotonic()

    def read_timeout_now(self) -> float:
        """How long one read may wait: the read timeout, or less when the
        idle timeout comes first."""
        left = self.idle_left()
        return self.read_timeout if left is None else max(0.001, min(self.read_timeout, left))

    # -- connections --------------------------------------------------------------------

    def connected(self) -> None:
        """A connection is open and subscribed."""
        self._connections += 1
        if self._outage_since is not None and self._outage_logged:
            took = time.monotonic() - self._outage_since
            logger.info("reconnected to %s after %.1f s; %s", self.url, took, self._where())
        elif self._connections == 1:
            logger.debug("connected to %s; %s", self.url, self._where())
        self._outage_since = None
        self._outage_logged = False
        self._waiting_for_restart = False

    def received(self) -> None:
        """Bytes arrived on an open connection: the next outage starts afresh."""
        self._delay = FIRST_DELAY

    def ended(self) -> bool:
        """The stream ended (the hub closed it). True: reconnect; False: the
        iteration is over (the hub stopped cleanly and ``on_shutdown="end"``)."""
        shutdown, self._shutdown = self._shutdown, None
        if shutdown is None:
            self._begin_outage("the hub closed the stream without a shutdown event", logging.WARNING)
            return True
        if shutdown.get("restart"):
            self._begin_outage("the hub is restarting", logging.INFO)
            return True
        if self.on_shutdown == "end":
            logger.info("the hub at %s stopped (clean shutdown); following ends", self.url)
            return False
        self._waiting_for_restart = True
        self._begin_outage("the hub stopped; waiting for it to come back", logging.INFO)
        return True

    def failed(self, cause: str, quiet: bool = False) -> float:
        """A connection attempt failed or an open one broke: the delay before
        the next attempt.

        Raises:
            HubUnreachable: the outage has lasted ``retry_for`` seconds (never
                while waiting for a cleanly stopped hub with ``on_shutdown="wait"``).
        """
        self._begin_outage(cause, logging.DEBUG if quiet else logging.WARNING)
        assert self._outage_since is not None
        if not self._waiting_for_restart and self.retry_for is not None:
            if time.monotonic() - self._outage_since >= self.retry_for:
                if self._looked is not None:
                    raise HubNotFound(self._looked, self.retry_for)
                raise HubUnreachable(self.url, self.retry_for, cause)
        return self.next_delay()

    def refused(self, status: int, message: str) -> Exception:
        """What an HTTP answer that is not a stream means: retry (returns
        :class:`Dropped`) or give up (returns :class:`HubRefused`)."""
        if status in TRANSIENT_STATUS:
            return Dropped(f"{self.url} answered {status}: {message}")
        return HubRefused(self.url, status, message)

    def next_delay(self) -> float:
        delay = self._delay * random.uniform(0.75, 1.0)
        self._delay = min(self._delay * 2, LAST_DELAY)
        if self._outage_since is not None and not self._waiting_for_restart and self.retry_for is not None:
            # Never sleep past the moment we give up: try once more then.
            left = self._outage_since + self.retry_for - time.monotonic()
            delay = max(0.0, min(delay, left))
        return delay

    def _begin_outage(self, cause: str, level: int) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        if self._outage_logged or level <= logging.DEBUG:
            logger.debug("%s: %s", self.url, cause)
            return
        self._outage_logged = True
        if self._connections == 0:
            budget = "indefinitely" if self.retry_for is None else f"for up to {self.retry_for:g} s"
            logger.warning("no hub answers at %s (%s); retrying %s", self.url, cause, budget)
        else:
            logger.log(level, "%s: %s; reconnecting, %s", self.url, cause, self._where())

    def _where(self) -> str:
        if self._probing or self.last_seq is None:
            return "following new events"
        return f"resuming after seq {self.last_seq}"


def _endpoint(url: str) -> tuple[str, str, list[tuple[str, str]]]:
    """The transport, the URL without its query, and the query's own pairs.

    ``http(s)://host:port`` (``/events`` is added when no path is given) is
    SSE; ``ws(s)://host:port/`` is WebSocket.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        transport, path = "sse", parts.path if parts.path not in ("", "/") else "/events"
    elif scheme in ("ws", "wss"):
        transport, path = "ws", parts.path or "/"
    else:
        raise ValueError(
            f"url must start with http:// or https:// (SSE, e.g. http://127.0.0.1:8888/events) "
            f"or ws:// or wss:// (WebSocket, e.g. ws://127.0.0.1:8889/), got {url!r}"
        )
    if not parts.netloc:
        raise ValueError(f"url has no host: {url!r}")
    ours = {"run", "runs", "types", "since", "epoch", "last_event_id"}
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    return transport, urlunsplit((scheme, parts.netloc, path, "", "")), query


def _with_query(url: str, query: list[tuple[str, str]]) -> str:
    return f"{url}?{urlencode(query)}" if query else url


def error_text(body: bytes | None) -> str:
    """The hub's error message in an answer (``{"error": ...}``), or the body's start."""
    try:
        value = orjson.loads(body or b"")
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"])
    return (body or b"").decode("utf-8", "replace").strip()[:300] or "no message"


def describe(exc: BaseException) -> str:
    """An exception as "Type: message" for a log line or an error."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Position:
    """Where a subscription stands: what ``follow()`` and ``afollow()``'s
    iterators share (the decisions are their :class:`Follower`'s)."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event taken (None: none yet)."""
        return self.follower.last_seq

    @property
    def epoch(self) -> str | None:
        """The epoch of the last event taken."""
        return self.follower.epoch
