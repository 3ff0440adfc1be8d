"""The ``"publisher"`` role: with a Redis backend and ``replica=False``, this
process sends its events to the namespace's stream and serves nothing (the
replicas serve them)."""

from __future__ import annotations

from typing import Any

from ..backend import RedisBackend
from ..core.intake import Notifier, Sink, Submission
from ..processes.channel import JoinTarget

__all__ = ["Publishing"]


class Publishing:
    """Publish to ``backend`` (see the module docstring)."""

    name = "publisher"

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend

    @property
    def sink(self) -> Sink:
        return self.backend.sink

    @property
    def numbered(self) -> bool:
        return False  # Redis numbers the events

    @property
    def notifier(self) -> Notifier | None:
        return None  # the publisher detaches itself when it stops

    @property
    def running(self) -> bool:
        return True

    @property
    def ports(self) -> dict[str, int]:
        return {}

    @property
    def urls(self) -> dict[str, str]:
        return {}

    def start(self) -> None:
        self.backend.start_publishing()

    def stop(self, timeout: float) -> None:
        """Send what waits (``timeout`` s at most); later events wait in the buffer."""
        self.backend.stop_publishing(timeout)

    def restart(self, timeout: float) -> None:
        self.backend.stop_publishing(timeout)
        self.backend.start_publishing()

    def retire(self, acked: dict[str, int]) -> list[Submission]:
        raise RuntimeError("a publisher is never replaced by another role of its own")

    def fork_target(self) -> JoinTarget | None:
        return None  # the child publishes on its own (the server builds it a backend)

    def disown_after_fork(self) -> None:
        pass  # the publisher's thread stayed in the parent; the child gets a new backend

    def report(self, status: dict[str, Any]) -> None:
        pass  # the backend's part is the server's (it outlives the role)

    def sources(self) -> list[dict[str, Any]]:
        return []

    def live_runs(self) -> set[str]:
        return set()

    def live_tracks(self) -> set[tuple[str, int | None]]:
        return set()
