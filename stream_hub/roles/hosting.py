"""The ``"host"`` role: this process serves the hub.

:class:`Hosting` owns what serving on its ports means for one server: the
store it writes, the channel joined processes publish through, its registry
record, the machine's metrics, and the hand-over of its history to a joined
process when it stops. The serving machinery itself (bound sockets, the loop
thread, the transports) is the server's :class:`~stream_hub.serving.ServingRuntime`,
which a restart reuses.

Its steps::

    start()   adopt a handed-over history -> open the store -> bind and serve
              (all ports or none) -> record itself -> announce
    restart() stop serving (no hand-over, the store kept) -> start() on the same ports
    stop()    hand over to a joined process if there is one -> stop serving
              -> close the store -> forget the record if nobody took over
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Literal, Protocol

from ..backend import RedisBackend
from ..config import StreamConfig, base_urls
from ..core.hub import Hub
from ..core.intake import Notifier, Sink, Submission
from ..processes.channel import JoinTarget
from ..processes.handover import HandoverToSuccessor
from ..processes.host_channel import HostChannel
from ..processes.joined import RESTART_WINDOW
from ..processes.membership import Membership
from ..processes.shm_ring import process_alive
from ..processes.spool import ingest
from ..runtime.forking import close_inherited_sockets
from ..serving import ServingRuntime, announce
from ..system_metrics import SystemMetrics

__all__ = ["Hosting"]

logger = logging.getLogger(__name__)


class HostedServer(Protocol):
    """What hosting needs of the server that hosts."""

    config: StreamConfig
    hub: Hub
    restarts: int


class Hosting:
    """Serve the hub on ``ports`` (see the module docstring).

    Args:
        server: the hosting server (its config, hub and restart count).
        serving: the server's serving machinery.
        membership: the server's registry key, token and record.
        ports: the ports to bind (resolved by :func:`~stream_hub.roles.placement.place`).
        backend: the server's Redis backend: it then feeds the hub (a replica).
        system: the machine's metrics, sampled while hosting.
        state: a history handed over by the previous host.
        successor: taking over from another host (its store is written on).
    """

    name = "host"

    def __init__(
        self,
        server: HostedServer,
        serving: ServingRuntime,
        membership: Membership,
        ports: dict[str, int],
        *,
        backend: RedisBackend | None = None,
        system: SystemMetrics | None = None,
        state: dict[str, Any] | None = None,
        successor: bool = False,
    ) -> None:
        self.server = server
        self.serving = serving
        self.membership = membership
        self.backend = backend
        self.system = system
        self._wanted = dict(ports)
        self._state = state
        self._successor = successor
        self._channel: HostChannel | None = None
        self._pid = os.getpid()  # the hosting process (a forked child's parent)

    # -- what the server asks --------------------------------------------------------------

    @property
    def sink(self) -> Sink:
        # With a backend, the events go into Redis and come back through the replica.
        return self.backend.sink if self.backend is not None else self.server.hub.store_batch

    @property
    def numbered(self) -> bool:
        return self.backend is None

    @property
    def notifier(self) -> Notifier | None:
        return None  # the serving runtime detaches its own

    @property
    def running(self) -> bool:
        return self.serving.running and self.serving.alive

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.serving.ports)

    @property
    def urls(self) -> dict[str, str]:
        return base_urls(self.server.config.host, self.serving.ports)

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on the ports (all or none).

        Raises:
            PortInUseError: a port could not be bound (nothing is kept).
            StoreError: the configured store cannot be used.
        """
        server, serving, backend = self.server, self.serving, self.backend
        hub = server.hub
        state, self._state = self._state, None
        if state is not None:
            hub.adopt(state)
        config = server.config
        # A successor writes on the store of the hub it succeeds (its own
        # file, or the host's default one); with a backend, Redis keeps history.
        store: str | Literal[False] | None = config.store
        if self._successor and store is not False and self.membership.hub_store is not None:
            store = self.membership.hub_store
        opened = serving.open_store(
            False if backend else store, self._successor, handed_over=state is not None
        )
        channel = self._channel = HostChannel(hub, self.membership.token, self._welcome)
        if state is not None:
            channel.acked.update(state.get("acked", {}))
        try:
            serving.start(self._wanted, channel, self.membership.channel_path(server), service=backend)
            if backend is not None:
                backend.start_publishing()
        except BaseException:
            if opened:
                serving.close_store()
            raise
        self._wanted = dict(serving.ports)  # a restart binds these again
        if self.system is not None:
            self.system.start()
        self.membership.record_host(serving.settings(), serving.ports, hub.epoch, channel.address)
        if backend is None:  # a replica's start is not news to the other replicas' clients
            info = {"state": "started", "ports": self.ports, "pid": os.getpid(), "restarts": server.restarts}
            hub.submit("status", None, None, info)
        if opened and serving.store is not None:
            # What processes that ended with no hub to take their events kept.
            ingest(hub.submit_many)
            self._take_orphan_rings(channel)
        announce(self.urls)

    def _take_orphan_rings(self, channel: HostChannel) -> None:
        """The rings of writers that died while no hub of their ports was left
        (a SIGKILLed process whose host died too): kept like the spool."""
        registry = self.membership.registry
        if registry is None:
            return

        def hub_alive(key: str) -> bool:
            record = registry.read(key)
            return record is not None and process_alive(record.pid)

        async def take() -> int:  # on the loop, which owns the hub's runs and the rings
            return channel.rings.take_orphans(registry.directory, hub_alive)

        try:
            self.serving.run_on_loop(take(), timeout=30)
        except Exception:  # serving goes on: the rings stay for the next hub
            logger.exception("taking the rings of processes that died with no hub failed")

    def _welcome(self) -> dict[str, Any]:
        return {"epoch": self.server.hub.epoch, "pid": os.getpid(), "ports": self.ports, "urls": self.urls}

    # -- stop ------------------------------------------------------------------------------

    def stop(self, timeout: float) -> None:
        """Hand over to a joined process if one is connected, stop serving
        (ports verified free), close the store; within ``timeout`` s.

        Raises:
            StreamHubError: a port is still bound afterwards.
        """
        membership = self.membership
        if not self.serving.alive and not self.serving.running:
            # Not serving (a restart that could not start again): what is left open.
            self.serving.close_store()
            membership.forget_host()
            return
        self._wait_for_joiners_to_leave()
        handover = HandoverToSuccessor(self.server.hub, membership.registry, membership.record, self.ports)
        started = time.monotonic()
        try:
            self._stop_serving(timeout, "stop", handover)
        finally:
            self.serving.close_store(
                max(1.0, timeout - (time.monotonic() - started)), handing_over=handover.successor is not None
            )
            if handover.successor is None:
                membership.forget_host()

    def _wait_for_joiners_to_leave(self) -> None:
        """The end of a job: the other ranks are finishing too. Serving on
        until they have handed over their last events and left (``drain_timeout``
        at most) lets this hub's clients see every event, where handing over
        to a process that is itself exiting could leave nobody hosting."""
        channel = self.serving.channel
        if channel is None or channel.all_gone.is_set():
            return
        drain = self.server.config.drain_timeout
        logger.info("waiting up to %.1f s for %d joined processes to finish", drain, channel.joiners)
        channel.all_gone.wait(drain)

    def restart(self, timeout: float) -> None:
        """Stop serving and serve again on the same ports, history, seq and store kept.

        Raises:
            PortInUseError: a port was taken meanwhile (the role stays, not
                running; :meth:`start` tries again).
        """
        if self.serving.alive or self.serving.running:
            self.membership.mark_restarting(RESTART_WINDOW)
            self._stop_serving(timeout, "restart", None)
        self.start()

    def _stop_serving(self, timeout: float, reason: str, handover: HandoverToSuccessor | None) -> None:
        started = time.monotonic()
        if self.system is not None:
            self.system.stop()
        self.serving.stop(timeout, reason, handover)
        if self.backend is not None:
            self.backend.stop_publishing(max(0.0, timeout - (time.monotonic() - started)))

    def retire(self, acked: dict[str, int]) -> list[Submission]:
        raise RuntimeError("a hosting server is never replaced by another role of its own")

    # -- processes ----------------------------------------------------------------------------

    def fork_target(self) -> JoinTarget | None:
        # (Not self.running: in the child, the loop thread is no longer alive.)
        channel = self._channel
        if not self.serving.running or channel is None or not channel.address:
            return None
        # Called in the child: the host is the process that started serving.
        return JoinTarget(
            channel.address, self.membership.token, self._pid, self.ports, self.urls, self.server.hub.epoch
        )

    def disown_after_fork(self) -> None:
        channel = self.serving.channel
        if channel is not None:
            channel.rings.release_after_fork()
        unix = [channel.address[5:]] if channel is not None and channel.address.startswith("unix:") else []
        if self.serving.ports or unix:
            close_inherited_sockets(self.serving.ports.values(), unix)

    # -- reports ------------------------------------------------------------------------------

    def report(self, status: dict[str, Any]) -> None:
        store = self.serving.store
        drops = self.server.hub.drop_counts()
        if store is not None:
            status["store"] = store.status()
            drops["store"] = status["store"].get("dropped", drops["store"])  # with those lost at close
        status["drops"] = drops

    def sources(self) -> list[dict[str, Any]]:
        channel = self.serving.channel
        return channel.describe_sources() if channel is not None else []

    def live_runs(self) -> set[str]:
        channel = self.serving.channel
        return channel.live_runs() if channel is not None else set()

    def live_tracks(self) -> set[tuple[str, int | None]]:
        channel = self.serving.channel
        return channel.live_tracks() if channel is not None else set()
