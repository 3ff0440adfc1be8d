"""What a server reports about itself: ``status()`` and its parts (a mixin of
:class:`~stream_hub.server.TrainingStreamServer`).

Everything here reads state the server, its hub, its host runtime and its
backend keep; nothing here changes it.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol

from .status import Status

if TYPE_CHECKING:
    from .backend import RedisBackend
    from .core.hub import Hub
    from .hosting import HostRuntime
    from .processes.joined import Forwarder
    from .transports.clients import ClientRegistry

__all__ = ["Reporting", "ServerOwner"]


class ServerOwner(Protocol):
    """Who shares a server (the manager): its reference count, and what a
    restart asked for over REST or a fault should go through."""

    @property
    def ref_count(self) -> int: ...

    def force_restart(self) -> Any: ...

    def recover(self, server: Any, cause: str) -> None: ...


class Reporting:
    """The server's reports: its status, clients, publishers and live runs."""

    hub: Hub
    clients: ClientRegistry
    owner: ServerOwner | None
    restarts: int
    _host: HostRuntime
    _forwarder: Forwarder | None
    _backend: RedisBackend | None
    _role: str | None

    @property
    def running(self) -> bool:
        raise NotImplementedError  # the server's

    @property
    def ports(self) -> dict[str, int]:
        raise NotImplementedError  # the server's

    @property
    def urls(self) -> dict[str, str]:
        raise NotImplementedError  # the server's

    def client_counts(self) -> dict[str, int]:
        """Connected SSE and WebSocket clients, and evictions so far."""
        notifier = self._host.notifier
        counts = dict(notifier.clients) if notifier is not None else {"sse": 0, "ws": 0}
        counts["evicted"] = self.clients.evicted
        return counts

    def sources(self) -> list[dict[str, Any]]:
        """The hub's publishers (``/api/sources``): this process, then joined ones."""
        me = {
            "source": "host",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "rank": self.hub.intake.rank,
            "role": "host",
            "events": self.hub.counters.published,
            "dropped": self.hub.intake.shed,
            "connected": self.running,
            "connected_since": time.time() - (time.monotonic() - (self._host.started_at or time.monotonic())),
        }
        channel = self._host.channel
        return [me, *(channel.describe_sources() if channel is not None else [])]

    def live_runs(self) -> set[str]:
        """Runs a live publisher of this hub has logged to (not stale)."""
        channel = self._host.channel
        joined = channel.live_runs() if channel is not None else set()
        return joined | (self.hub.intake.local_runs - self.hub.intake.finished_runs)

    def status(self) -> dict[str, Any]:
        """The status dict of the contract (``ref_count`` from the owner)."""
        hub, host, forwarder = self.hub, self._host, self._forwarder
        status = Status(
            running=self.running,
            ref_count=self.owner.ref_count if self.owner is not None else 0,
            uptime_s=(time.monotonic() - host.started_at) if host.started_at else 0.0,
            ports=self.ports,
            urls=self.urls,
            epoch=forwarder.target.epoch if forwarder is not None else hub.epoch,
            last_seq=forwarder.host_last_seq if forwarder is not None else hub.head,
            history={"size": hub.size, "capacity": hub.capacity},
            clients=self.client_counts(),
            events=hub.events_counts(),
            loop_thread_alive=host.alive,
            restarts=self.restarts,
            role=self._role or "stopped",
        ).to_dict()
        if forwarder is not None:
            status["host"] = {"pid": forwarder.target.pid, "urls": forwarder.target.urls}
            status["forwarding"] = forwarder.status()
        backend = self._backend
        if backend is not None:
            status["backend"] = backend.state
            status["redis"] = backend.describe()
        store = self.store_status()
        if store is not None:
            status["store"] = store
        return status

    @property
    def backend_state(self) -> str | None:
        """``"up"`` or ``"down"`` with a backend (is Redis answering?), else None."""
        return self._backend.state if self._backend is not None else None

    def backend_status(self) -> dict[str, Any] | None:
        """The backend's details (``status()["redis"]``), None without one."""
        return self._backend.describe() if self._backend is not None else None

    def store_status(self) -> dict[str, Any] | None:
        """The store's part of the status (None without a store, or while joined)."""
        return self._host.store.status() if self._host.store is not None else None
