"""Publishing into Redis: a process's events, numbered by Redis.

The intake keeps its hot path (``log()`` validates, appends under one lock,
wakes once per batch, returns ``None``: Redis numbers the event). The
:class:`RedisPublisher` is its notifier and sink: a thread that takes each
committed batch, turns its events into templates (their JSON without seq and
epoch), and appends them with one script call per batch, several batches per
round trip (a pipeline). Each batch carries this publisher's id and number,
so a retry after a lost answer is taken once.

Redis down or paused never reaches the training thread: batches wait in a
bounded buffer (``buffer_events``; the oldest are dropped first, and counted),
the thread reconnects with backoff, and sends what waited once Redis answers.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
import uuid
from typing import Any

from ..core.intake import FIELDS, Intake
from ..events import encode_template
from ..runtime.signals import block_sigterm_in_this_thread
from .stream import APPEND, MISSING_REDIS, StreamKeys, safe_url

__all__ = ["RedisPublisher", "connect_sync"]

logger = logging.getLogger(__name__)

MIN_INTERVAL = 0.001  # spacing between two sends while publishers keep it busy
POLL_INTERVAL = 0.25
BACKOFF_MAX = 2.0
PIPELINE_BATCHES = 16  # batches per round trip at most
BATCH_EVENTS = 1_000  # events per script call at most (Redis runs one call at a time)
SOURCE_TTL = 86_400  # how long Redis remembers a publisher's last batch number
SOCKET_TIMEOUT = 2.0


def connect_sync(url: str) -> Any:
    """A redis-py client for ``url`` (``redis://`` or ``rediss://``).

    Raises:
        ImportError: the ``redis`` package is missing (the ``[redis]`` extra).
    """
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - the extra is installed where it is used
        raise ImportError(MISSING_REDIS) from exc
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0)
    )


@dataclasses.dataclass
class _Batch:
    n: int
    count: int
    templates: list[bytes]


class RedisPublisher:
    """One process's flusher into a namespace's Redis stream.

    Args:
        intake: the process's intake (``numbered`` off: Redis numbers events).
        url: the Redis URL; ``keys``: the namespace's keys.
        maxlen: about how many entries the stream keeps (``MAXLEN ~``).
    """

    def __init__(
        self, intake: Intake, url: str, keys: StreamKeys, maxlen: int, buffer_events: int = 100_000
    ) -> None:
        self.intake = intake
        self.url = url
        self.keys = keys
        self.maxlen = maxlen
        self.buffer_events = buffer_events
        self.source = uuid.uuid4().hex
        self.sent = 0  # events Redis took
        self.dropped = 0  # events dropped: the buffer was full
        self.rejected = 0  # events that could not be encoded
        self.up = False
        self.epoch: str | None = None
        self.last_seq = 0
        self._outbox: collections.deque[_Batch] = collections.deque()
        self._queued = 0
        self._next = 1
        self._io = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._flushed = threading.Event()
        self._warned = False
        self._urgent = False
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._script: Any = None

    # -- the intake's notifier and sink ------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def wake_urgent(self) -> None:
        self._urgent = True
        self._wake.set()

    def committed(self) -> None:
        pass  # the ring is fed from the stream, not from this intake

    def take(self, batch: list[Any], count: int) -> None:
        """A committed batch: its templates join the outbox (committing thread)."""
        templates: list[bytes] = []
        for k in range(count):
            _seq, ts, event_type, run, step, payload, rank = batch[k * FIELDS : (k + 1) * FIELDS]
            try:
                templates.append(encode_template(ts, event_type, run, step, payload, rank))
            except (TypeError, ValueError):
                self.rejected += 1
        if not templates:
            return
        with self._io:
            for i in range(0, len(templates), BATCH_EVENTS):
                part = templates[i : i + BATCH_EVENTS]
                self._outbox.append(_Batch(self._next, len(part), part))
                self._next += 1
                self._queued += len(part)
            while self._queued > self.buffer_events and len(self._outbox) > 1:
                lost = self._outbox.popleft()
                self._queued -= lost.count
                self.dropped += lost.count

    # -- state ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "queued": self._queued,
            "sent": self.sent,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "last_seq": self.last_seq,
        }

    def start(self) -> None:
        """Commit the intake's batches on the flusher thread from now on, and send them."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self.intake.attach(self)
        self._thread = threading.Thread(target=self._run, name="stream-hub-redis-publisher", daemon=True)
        self._thread.start()
        self._wake.set()  # what waited while stopped goes now

    def stop(self, timeout: float = 2.0) -> None:
        """Send what waits (for at most ``timeout`` s, while Redis answers),
        then stop the thread; the intake commits inline into the outbox again
        (it waits there, bounded, for the next :meth:`start`)."""
        deadline = time.monotonic() + timeout
        self.intake.detach(self)  # commits what is pending, into the outbox
        # While Redis has not been found failing (after a failure, waiting is pointless).
        while self._queued and not self._warned and self._thread is not None and time.monotonic() < deadline:
            self._flushed.clear()
            self._wake.set()
            self._flushed.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(max(0.1, deadline - time.monotonic()))
        if self._queued:
            logger.warning("%d events not yet in Redis wait for the next start", self._queued)
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a connection that may be broken
                logger.debug("closing the Redis client failed", exc_info=True)

    # -- the flusher thread --------------------------------------------------------------------------

    def _run(self) -> None:
        block_sigterm_in_this_thread()  # SIGTERM is the main thread's (runtime/signals.py)
        backoff = 0.05
        last_send = 0.0
        while not self._stopping.is_set():
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()
            spacing = last_send + MIN_INTERVAL - time.monotonic()
            if spacing > 0 and not self._urgent:
                self._stopping.wait(spacing)  # let a tight publishing loop fill the batch
            self._urgent = False
            if self.intake.notifier is self:
                self.intake.commit()
            while self._outbox and not self._stopping.is_set():
                try:
                    self._send()
                    last_send = time.monotonic()
                    backoff = 0.05
                except Exception as exc:  # any Redis or socket error: wait and retry
                    self._went_down(exc)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    break
            if not self._outbox:
                self._flushed.set()
            elif not self.up:
                self._wake.set()  # retry after the backoff, not after the poll interval

    def _went_down(self, exc: BaseException) -> None:
        if self.up or not self._warned:
            logger.warning("Redis at %s is not answering (%s); buffering events", safe_url(self.url), exc)
            self._warned = True
        self.up = False
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # the connection is broken already
                logger.debug("closing the Redis client failed", exc_info=True)

    def _send(self) -> None:
        if self._client is None:
            self._client = connect_sync(self.url)
            self._script = self._client.register_script(APPEND)
        with self._io:
            batches = list(itertools.islice(self._outbox, PIPELINE_BATCHES))
        pipe = self._client.pipeline(transaction=False)
        keys = [self.keys.stream, self.keys.epoch, self.keys.seq, self.keys.source(self.source)]
        candidate = uuid.uuid4().hex
        for batch in batches:
            self._script(
                keys=keys, args=[candidate, self.maxlen, batch.n, SOURCE_TTL, *batch.templates], client=pipe
            )
        results = pipe.execute()
        if not self.up:
            if self._warned:
                logger.info("Redis at %s answers again; publishing", safe_url(self.url))
            self.up = True
            self._warned = False
        with self._io:
            for batch, (epoch, _first, last) in zip(batches, results):
                if self._outbox and self._outbox[0] is batch:
                    self._outbox.popleft()
                    self._queued -= batch.count
                    self.sent += batch.count
                self.epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
                if last:
                    self.last_seq = int(last)
