"""Serving a namespace's Redis stream: this process's hub as one of its replicas.

A :class:`Replica` runs on the server's loop. It keeps the hub's ring a copy
of the stream's newest events (warm from ``XREVRANGE`` at start, then a
blocking ``XREAD`` from the newest seq it has), and answers resumes older
than the ring from the stream itself (:class:`StreamArchive`, ``XRANGE``).
Every replica composes the same event JSON from an entry and the epoch, so a
client resumes on any replica with the same ``Last-Event-ID``.

redis-py pitfalls designed around: the blocking read has a connection of its
own (a blocking ``XREAD`` on a pooled connection holds it, redis-py #2663),
with a socket timeout longer than the block (#3138); a read cut short (by
cancellation or an error, #2665) never reuses its connection: the client is
thrown away and a new one made.

Each read is a pipeline ``GET epoch`` + ``XREAD BLOCK`` + ``MGET epoch seq``:
the epoch comes with every answer, so Redis losing its data (a new epoch,
seqs from 1 again) is noticed on the next read, and becomes a ``gap`` for
every subscriber; the counter read after the entries says which of them are
ours (:mod:`.stream`: entries written by someone else). A read starts after
the last entry read, not after the head: an entry that is not ours is read
once, and one above the counter is removed (``REMOVE_FOREIGN``), so it can
neither wedge the replica nor keep it reading in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..core.hub import Archived, Hub
from .stream import (
    ENSURE_EPOCH,
    MISSING_REDIS,
    REMOVE_FOREIGN,
    Decoded,
    StreamKeys,
    decode_entries,
    entry_id,
    parse_id,
    safe_url,
)

__all__ = ["Replica", "StreamArchive", "connect_async"]

logger = logging.getLogger(__name__)

BLOCK_MS = 5_000  # how long one XREAD waits for new entries
READ_COUNT = 4_096  # entries per read at most
SOCKET_TIMEOUT = 5.0  # for queries; the blocking read gets BLOCK_MS + this
BACKOFF_MAX = 2.0
REPORT_INTERVAL = 60.0  # at most one warning a minute about entries that are not ours
_LAST_PART = (1 << 64) - 1  # the largest sequence part of an entry ID


def connect_async(url: str, blocking: bool = False) -> Any:
    """A redis-py asyncio client for ``url``; ``blocking``: one connection of
    its own, waiting longer than a blocking read lasts. redis-py's own retries
    are off: the caller reconnects, on its own schedule.

    Raises:
        ImportError: the ``redis`` package is missing (the ``[redis]`` extra).
    """
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:  # pragma: no cover - the extra is installed where it is used
        raise ImportError(MISSING_REDIS) from exc
    timeout = SOCKET_TIMEOUT + (BLOCK_MS / 1000 if blocking else 0.0)
    return Redis.from_url(
        url,
        single_connection_client=blocking,
        socket_timeout=timeout,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


class _Throttled:
    """A warning said at most once per ``interval`` s; ``held``: how many
    were held back since the last one said."""

    def __init__(self, interval: float = REPORT_INTERVAL) -> None:
        self.interval = interval
        self.held = 0
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.held += 1
            return False
        self._next = now + self.interval
        return True

    def said(self) -> int:
        """How many were held back (and now counted as said)."""
        held, self.held = self.held, 0
        return held


def _after(position: tuple[int, int]) -> tuple[int, int]:
    """The smallest entry ID after ``position``."""
    high, low = position
    return (high, low + 1) if low < _LAST_PART else (high + 1, 0)


class StreamArchive:
    """The stream as the hub's archive: events that left the ring, by ``XRANGE``."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def append(self, batch: list[Any], count: int, epoch: str) -> None:
        pass  # events reach the stream through the publishers, not through here

    async def read(self, first: int, last: int, max_bytes: int) -> list[Archived]:
        return await self.replica.range(first, last, max_bytes)


class Replica:
    """Keeps ``hub`` a replica of a namespace's stream (on the server's loop).

    Args:
        hub: the hub whose ring follows the stream.
        url: the Redis URL; ``keys``: the namespace's keys.
        on_stored: called on the loop after new events were stored (wakes
            the subscribers).
    """

    def __init__(self, hub: Hub, url: str, keys: StreamKeys, on_stored: Callable[[], None]) -> None:
        self.hub = hub
        self.url = url
        self.keys = keys
        self.on_stored = on_stored
        self.up = False
        self.reads = 0  # XREAD round trips
        self.stored = 0  # events taken from the stream
        self.epoch_changes = 0
        self.rejected = 0  # entries in our numbering that are not events: served as gaps
        self.reserved = 0  # of those, entries of a type only hubs emit
        self.foreign = 0  # entries outside our numbering, left out (and removed when above the counter)
        self.last_error: str | None = None
        self._remote_last = 0  # the namespace's counter, as of the last read
        self._position = (0, 0)  # the last entry read (an entry ID), in this epoch
        self._rejected_report = _Throttled()
        self._foreign_report = _Throttled()
        self._synced = False  # the ring continues the stream's current epoch
        self._warned = False
        self._reader: Any = None
        self._queries: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    @property
    def lag(self) -> int:
        """Entries in the stream this replica has not stored yet (as of its last read)."""
        return max(0, self._remote_last - self.hub.head)

    async def start(self, timeout: float = 2.0) -> None:
        """Get warm (the stream's newest events in the ring) within ``timeout``
        s if Redis answers, then follow the stream. Redis not answering is not
        an error: the replica serves what it has and keeps trying."""
        self.hub.numbered_elsewhere = True
        self._closed.clear()
        try:
            await asyncio.wait_for(self._sync(), timeout)
        except Exception as exc:  # any Redis or socket error: follow() retries
            self._went_down(exc)
            await self._drop_clients()  # a command cut short leaves its connection unusable
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="stream-hub-replica")

    async def close(self) -> None:
        """Stop following and close the connections (on the loop)."""
        self._closed.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._drop_clients()
        self.up = False

    # -- reading -------------------------------------------------------------------------------

    async def _follow(self) -> None:
        backoff = 0.05
        while not self._closed.is_set():
            try:
                if not self._synced:
                    await self._sync()
                    backoff = 0.05
                await self._read_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any Redis or socket error: reconnect later
                self._went_down(exc)
                await self._drop_clients()
                try:
                    await asyncio.wait_for(self._closed.wait(), backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _sync(self) -> None:
        """(Re)connect: agree on the epoch, then catch up from our head (or get
        warm from the stream's newest events when we are too far behind)."""
        if self._reader is None:
            self._reader = connect_async(self.url, blocking=True)
            self._queries = connect_async(self.url)
        queries = self._queries
        epoch = await self._ensure_epoch()
        hub = self.hub
        if epoch != hub.epoch:
            if hub.head:
                logger.warning(
                    "the Redis stream %s has a new epoch (Redis lost its data?): subscribers get a gap",
                    self.keys.stream,
                )
                self.epoch_changes += 1
            hub.reset_epoch(epoch)
            self._position = (0, 0)
            self.on_stored()  # subscribers announce the gap now, not at the next event
        self._position = max(self._position, (hub.head, 0))
        # Entries above the counter are not ours: the reads stop at it.
        counter = self._remote_last = _counter(await queries.get(self.keys.seq))
        top = entry_id((counter, 0))
        if counter - hub.head > hub.capacity:
            entries = await queries.xrevrange(self.keys.stream, top, "-", count=hub.capacity)
            self._store(list(reversed(entries)), epoch, counter)
        while self._position < (counter, 0):
            start = self._position
            entries = await queries.xrange(self.keys.stream, entry_id(_after(start)), top, count=READ_COUNT)
            self._store(entries, epoch, counter)
            if not entries or self._position == start:
                break
        if self._warned:
            logger.info("Redis at %s answers again: replica at seq %d", safe_url(self.url), hub.head)
        self.up = self._synced = True
        self._warned = False
        self.last_error = None

    async def _ensure_epoch(self) -> str:
        """The namespace's epoch, made now if Redis has none (it lost its data,
        or nobody published yet); every replica and publisher agrees on it."""
        answer = await self._queries.eval(
            ENSURE_EPOCH, 3, self.keys.stream, self.keys.epoch, self.keys.seq, uuid.uuid4().hex
        )
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    async def _read_once(self) -> None:
        pipe = self._reader.pipeline(transaction=False)
        pipe.get(self.keys.epoch)
        pipe.xread({self.keys.stream: entry_id(self._position)}, count=READ_COUNT, block=BLOCK_MS)
        pipe.mget(self.keys.epoch, self.keys.seq)  # after the entries: which of them are ours
        epoch_raw, answer, (epoch_after, counter_raw) = await pipe.execute()
        self.reads += 1
        epoch = epoch_raw.decode() if isinstance(epoch_raw, bytes) else None
        if epoch != self.hub.epoch or epoch_after != epoch_raw:
            self._synced = False  # the data is gone, or another epoch began: sync again
            return
        counter = _counter(counter_raw)
        self._remote_last = max(self._remote_last, counter)
        above = 0
        for _stream, entries in answer or ():
            if entries:
                above += self._store(entries, epoch, counter)
        if above:
            await self._remove_foreign()

    def _store(self, entries: list[Any], epoch: str, counter: int) -> int:
        """Store what ``entries`` hold of ours; returns how many are above the counter."""
        decoded = decode_entries(entries, epoch, counter)
        if decoded.position is not None and decoded.position > self._position:
            self._position = decoded.position
        if decoded.rejected or decoded.foreign:
            self._note_strangers(decoded)
        stored = self.hub.store_numbered(decoded.numbered)
        if stored:
            self.stored += stored
            self.on_stored()
        return decoded.above

    def _note_strangers(self, decoded: Decoded) -> None:
        """Count the entries that are not ours; warn about them, at most once a minute."""
        self.rejected += len(decoded.rejected)
        self.reserved += decoded.reserved
        self.foreign += decoded.foreign
        if decoded.rejected and self._rejected_report.due():
            seq, why = decoded.rejected[0]
            logger.warning(
                "the Redis stream %s holds an entry that is not a stream_hub event (seq %d: %s): "
                "rejected, clients get a one-event gap in its place (%d such entries so far, %d unreported)",
                self.keys.stream,
                seq,
                why,
                self.rejected,
                self._rejected_report.said(),
            )
        if decoded.foreign and self._foreign_report.due():
            logger.warning(
                "the Redis stream %s holds entries stream_hub did not number (IDs past its counter, or "
                "with a sequence part): left out, and those past the counter removed "
                "(%d such entries so far, %d unreported)",
                self.keys.stream,
                self.foreign,
                self._foreign_report.said(),
            )

    async def _remove_foreign(self) -> None:
        """Remove the entries above the counter (the next read would find them
        again); a Redis that refuses (no permission) leaves them to the
        publishers, whose appends remove them, and the next read waits a while."""
        from redis.exceptions import ResponseError

        try:
            await self._queries.eval(REMOVE_FOREIGN, 2, self.keys.stream, self.keys.seq)
        except ResponseError as exc:
            if self._foreign_report.due():
                logger.warning(
                    "could not remove the entries past the counter of %s (%s); publishers will",
                    self.keys.stream,
                    exc,
                )
            try:
                await asyncio.wait_for(self._closed.wait(), BACKOFF_MAX)
            except TimeoutError:
                pass

    # -- resumes from the stream ---------------------------------------------------------------

    async def range(self, first: int, last: int, max_bytes: int) -> list[Archived]:
        """Events ``first..last`` still in the stream (for a resume older than the ring)."""
        queries = self._queries
        if queries is None or not self.up:
            return []
        epoch = self.hub.epoch
        out: list[Archived] = []
        size = 0
        start = first
        try:
            while start <= last and size < max_bytes:
                entries = await queries.xrange(self.keys.stream, f"{start}-0", f"{last}-0", count=512)
                if not entries:
                    break
                archived = decode_entries(entries, epoch, last).archived
                out += archived
                size += sum(len(event[4]) for event in archived)
                start = parse_id(entries[-1][0])[0] + 1
        except Exception as exc:  # Redis gone mid-resume: the rest is a gap
            logger.warning("could not read seqs %d..%d from %s: %s", start, last, self.keys.stream, exc)
        if epoch != self.hub.epoch:
            return []
        return out

    # -- state -----------------------------------------------------------------------------------

    def _went_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.up = self._synced = False
        if not self._warned:
            self._warned = True
            logger.warning(
                "Redis at %s is not answering (%s); serving what this replica has",
                safe_url(self.url),
                self.last_error,
            )

    async def _drop_clients(self) -> None:
        reader, queries = self._reader, self._queries
        self._reader = self._queries = None
        for client in (reader, queries):
            if client is not None:
                try:
                    await client.aclose()
                except Exception:  # closing a connection that may be broken
                    logger.debug("closing a Redis client failed", exc_info=True)

    def describe(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "lag": self.lag,
            "stored": self.stored,
            "reads": self.reads,
            "epoch_changes": self.epoch_changes,
            "rejected": self.rejected,
            "reserved": self.reserved,
            "foreign": self.foreign,
            "last_error": self.last_error,
        }


def _counter(raw: object) -> int:
    """The namespace's counter from its raw value (none yet: 0)."""
    return int(raw) if isinstance(raw, (bytes, str)) else 0
