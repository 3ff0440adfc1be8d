"""A Redis Streams backend: one numbered stream per namespace, any number of
publishers and replicas (see ``ARCHITECTURE.md``, "Scaling out").

- :mod:`.stream` — the namespace's keys, the append script, entry decoding;
- :mod:`.publisher` — a process's events into the stream (a flusher thread);
- :mod:`.replica` — the stream into a serving hub's ring (on its loop).

:class:`RedisBackend` is what a server holds: the publisher for as long as
the server lives (events logged while it is stopped wait in its bounded
buffer), and the replica while it serves. The ``redis`` package (the
``[redis]`` extra) is imported only when a backend is configured.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.hub import Hub
from ..errors import StreamHubError
from ..runtime.notifier import LoopNotifier
from .publisher import RedisPublisher
from .replica import Replica, StreamArchive
from .stream import StreamKeys, safe_url

__all__ = ["MissingExtraError", "RedisBackend", "require_redis", "stream_maxlen"]

logger = logging.getLogger(__name__)


class MissingExtraError(StreamHubError, ImportError):
    """A configured feature needs a package that is not installed; the
    message names the extra that brings it (``pip install 'stream_hub[redis]'``).

    ``extra`` is the extra's name.
    """

    def __init__(self, feature: str, package: str, extra: str) -> None:
        self.extra = extra
        super().__init__(
            f"{feature} needs the {package} package, which is not installed: "
            f"pip install 'stream_hub[{extra}]'"
        )


def require_redis() -> None:
    """Make sure the ``redis`` package (sync and asyncio clients) imports.

    Raises:
        MissingExtraError: it does not (the ``[redis]`` extra is missing).
    """
    try:
        import redis.asyncio  # noqa: F401  (imports redis itself first)
    except ImportError as exc:
        raise MissingExtraError(
            "a Redis backend (StreamConfig.backend, --backend, STREAM_HUB_BACKEND)", "redis", "redis"
        ) from exc


def stream_maxlen(history_size: int) -> int:
    """About how many events the Redis stream keeps: ten rings' worth, at
    least 100 000 (resumes older than a replica's ring are served from it)."""
    return max(10 * history_size, 100_000)


class RedisBackend:
    """A server's link to its namespace's stream.

    Args:
        hub: the server's hub (its intake publishes; its ring replicates).
        url: the Redis URL (``redis://`` or ``rediss://``).
        namespace: the namespace (its keys' prefix).

    Raises:
        MissingExtraError: the ``redis`` package is missing. Built with the
            server, so the server refuses to exist rather than start and
            then fail on its publisher's thread, where nobody hears it.
    """

    def __init__(self, hub: Hub, url: str, namespace: str) -> None:
        require_redis()
        self.hub = hub
        self.url = url
        self.keys = StreamKeys(namespace)
        self.publisher = RedisPublisher(hub.intake, url, self.keys, stream_maxlen(hub.capacity))
        self.replica: Replica | None = None

    def sink(self, batch: list[Any], count: int) -> None:
        """The intake's sink: committed batches go to the publisher's outbox."""
        self.publisher.take(batch, count)

    # -- publishing: the life of the server ---------------------------------------------------------

    def start_publishing(self) -> None:
        """Commit and send on the publisher's thread (the server routes the
        intake's batches to :meth:`sink` whenever it has a backend, but joined)."""
        self.publisher.start()

    def stop_publishing(self, timeout: float) -> None:
        """Send what waits (``timeout`` s at most); later events wait in the outbox."""
        self.publisher.stop(timeout)

    def flush(self, timeout: float) -> None:
        """Stopped: send what waits in the buffer (``timeout`` s at most)."""
        if self.publisher.status()["queued"]:
            self.publisher.start()
            self.publisher.stop(timeout)

    # -- serving: the host role (ServingRuntime's service) ---------------------------------------------

    async def start(self, notifier: LoopNotifier) -> None:
        """On the loop, before any listener accepts: warm the ring from the
        stream and follow it; resumes older than the ring read the stream."""
        replica = self.replica = Replica(self.hub, self.url, self.keys, notifier.committed)
        self.hub.archive = StreamArchive(replica)
        self.hub.farewell_frames = None
        await replica.start()

    async def close(self) -> None:
        replica, self.replica = self.replica, None
        if replica is not None:
            await replica.close()
        if isinstance(self.hub.archive, StreamArchive):
            self.hub.archive = None

    # -- state ----------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"up"`` while Redis answers this process (its replica's reads, or
        its publisher when it does not serve), else ``"down"``."""
        replica = self.replica
        up = replica.up if replica is not None else self.publisher.up
        return "up" if up else "down"

    def describe(self) -> dict[str, Any]:
        """For ``/api/status`` (``redis``): where, which namespace, both sides' counters."""
        return {
            "url": safe_url(self.url),
            "namespace": self.keys.namespace,
            "state": self.state,
            "publisher": self.publisher.status(),
            "replica": self.replica.describe() if self.replica is not None else None,
        }
