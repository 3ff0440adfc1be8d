"""TrainingStreamServer: one process's part in a hub, in one of two roles.

- ``"host"``: this process serves the hub — SSE, WebSocket and REST on one
  loop thread (:mod:`stream_hub.hosting`); start binds all three ports or
  none; stop returns only once every port is verified free.
- ``"joined"``: another process of this user serves the hub of these ports,
  and this one forwards its events there (:mod:`stream_hub.processes`).

Which one is decided at start (:meth:`start`): with ``port_conflict="auto"``
(the default) or ``"join"`` and fixed ports, through the per-user registry
(:mod:`stream_hub.processes.rendezvous`); otherwise this process hosts. The
same object changes role when its host hands over, or dies and this process
is elected; a forked child forwards to its parent's hub and never serves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from typing import Any

from . import job
from .backend import RedisBackend
from .config import StreamConfig, base_urls
from .core.hub import Hub
from .hosting import HostRuntime, announce, warn_if_exposed
from .ports import PortManager
from .processes.handover import HandoverToSuccessor
from .processes.host_channel import HostChannel
from .processes.joined import Forwarder
from .processes.membership import Membership, configured_ports
from .processes.registry import HubRecord, Registry, new_token
from .processes.rendezvous import my_record, resolve_ports, uses_rendezvous
from .reporting import Reporting, ServerOwner
from .runtime.forking import close_inherited_sockets
from .runtime.notifier import LoopNotifier
from .system_metrics import SystemMetrics
from .telemetry import LatencyHistogram, MetricsExporter
from .transports import Transports
from .transports.access import AccessPolicy
from .transports.clients import ClientRegistry

__all__ = ["ServerOwner", "TrainingStreamServer"]

logger = logging.getLogger(__name__)

# Every server object of this process, so a forked child can disown them.
_ALL_SERVERS: weakref.WeakSet[TrainingStreamServer] = weakref.WeakSet()


class TrainingStreamServer(Reporting, Membership):
    """One process's part in a hub: hosting it, or joined to another process's.

    Most code gets one through :func:`stream_hub.get_stream_server`, which
    shares a single server per process. ``log`` and ``publish`` may be called
    from any thread, before, during and after the server runs, in either
    role; they never block on the network.

    ``server.log(metrics, step=None, run=None)`` publishes one metric event;
    it returns its seq while this process hosts, ``None`` while it is joined
    (the host numbers the event). A value that is not a real number raises
    ``TypeError`` in the caller's thread. It *is* the hub's intake method (one
    call on the training thread's hot path, not two).
    """

    log: Any

    def __init__(self, config: StreamConfig | None = None, training_system: Any = None) -> None:
        self.config = cfg = config if config is not None else StreamConfig()
        self.training_system = training_system
        identity = job.current()
        self.hub = Hub(
            cfg.history_size,
            cfg.series_points,
            cfg.history_bytes,
            cfg.max_series,
            run=identity.run,
            rank=identity.rank,
        )
        self.log = self.hub.intake.log  # HOT PATH: see the class docstring
        # With a backend, events go into Redis, whatever the role (except joined:
        # then the local host publishes them).
        self._backend: RedisBackend | None = None
        if cfg.backend is not None:
            if cfg.store is not None:
                logger.warning("store %s unused: with a backend, Redis keeps the history", cfg.store)
            self._backend = RedisBackend(self.hub, cfg.backend, cfg.namespace)
            self.hub.intake.set_sink(self._backend.sink, numbered=False)
        self.owner: ServerOwner | None = None
        self.restarts = 0
        self.faults = 0
        self.last_fault: str | None = None
        self.latency = LatencyHistogram()
        # Every client connection, and the eviction of those that stop reading.
        self.clients = ClientRegistry(cfg.send_timeout, cfg.client_buffer_bytes)
        # The Host and Origin rules every transport applies.
        self.access = AccessPolicy(cfg, lambda: self._host.ports.get("rest"))
        # The SSE streams running now (the WebSocket server keeps its own).
        self.streams: set[asyncio.Task[Any]] = set()
        self._metrics = MetricsExporter(self, cfg.max_prometheus_series)
        self._transports = Transports(
            self,
            restart=self._restart_in_background,
            # Looked up per request: a training system may be given later.
            training_status=lambda: _status_method(self.training_system),
            metrics_text=self._metrics.render,
        )
        self._host = HostRuntime(self, self._transports, self._report_fault)
        # The machine's metrics, published while this process hosts (system_metrics.py).
        self._system = SystemMetrics(self.hub.intake, cfg.system_metrics) if cfg.system_metrics else None
        self._lifecycle = threading.RLock()
        self._role: str | None = None
        self._forwarder: Forwarder | None = None
        self._registry: Registry | None = None
        self._key: str | None = None  # the registry key, when this server met others there
        self._record: HubRecord | None = None
        self._token = new_token()
        self._hosted_ports: dict[str, int] = {}  # kept across a restart
        _ALL_SERVERS.add(self)

    def publish(
        self, event_type: str, data: Any = None, run: str | None = None, step: int | None = None
    ) -> Any:
        """Publish any JSON-able event of ``event_type``; its seq (None while joined).

        Raises:
            TypeError: the type is reserved or not a plain word, or ``data``
                is not JSON-able (in the caller's thread).
        """
        return self.hub.intake.publish(event_type, data, run, step)

    def finish(self, run: str | None = None, status: str = "finished") -> Any:
        """Say that ``run`` (this process's default run when None) has ended:
        a ``run_end`` event with ``status`` (finished, failed or killed)."""
        if status not in ("finished", "failed", "killed"):
            raise ValueError(f"status must be finished, failed or killed, got {status!r}")
        self.hub.intake.finished_runs.add(run or self.hub.intake.default_run)
        return self.publish("run_end", {"status": status}, run=run)

    def finish_local_runs(self, status: str = "finished", forget: bool = False) -> None:
        """Finish every run this process logged to and did not finish itself
        (at the last release and at exit: ``finished``, or ``failed`` after
        an exception). ``forget``: a run logged to after this starts afresh."""
        intake = self.hub.intake
        for run in sorted(intake.local_runs - intake.finished_runs):
            try:
                self.finish(run, status)
            except (TypeError, ValueError):
                continue
        if forget:
            intake.forget_runs()

    def finish_into_backend(self, status: str = "finished") -> None:
        """At exit, stopped, with a backend: the runs this process logged to
        still end in Redis (their ``run_end`` events and whatever waited in
        the publisher's buffer are sent, for ``shutdown_timeout`` s at most)."""
        backend = self._backend
        if backend is None or self._role is not None:
            return
        self.finish_local_runs(status)
        backend.flush(self.config.shutdown_timeout)

    # -- state ----------------------------------------------------------------------

    @property
    def role(self) -> str | None:
        """``"host"``, ``"joined"`` (``"forked"`` in a forked child;
        ``"publisher"`` with a backend and ``replica=False``), or None when stopped."""
        return self._role

    @property
    def notifier(self) -> LoopNotifier | None:
        """The loop side of the hub while hosting (None otherwise)."""
        return self._host.notifier

    @property
    def running(self) -> bool:
        """True while hosting (False as soon as the loop thread has died) or joined."""
        if self._role == "host":
            return self._host.running and self._host.alive
        return self._role in ("joined", "forked", "publisher")

    @property
    def loop_thread_alive(self) -> bool:
        return self._host.alive

    @property
    def ports(self) -> dict[str, int]:
        """The hub's ports: ``{"sse": int, "ws": int, "rest": int}`` (empty when stopped)."""
        if self._forwarder is not None:
            return dict(self._forwarder.target.ports)
        return dict(self._host.ports)

    @property
    def urls(self) -> dict[str, str]:
        """Base URLs of the hub's three transports (empty when stopped)."""
        if self._forwarder is not None:
            return dict(self._forwarder.target.urls)
        return base_urls(self.config.host, self._host.ports)

    def check_not_in_loop(self, what: str) -> None:
        """Raise :class:`~stream_hub.LoopThreadError` if called from this
        server's loop thread (where a blocking call would deadlock)."""
        self._host.loop.check_not_in_loop(what)

    # -- start ------------------------------------------------------------------------

    def start(self) -> None:
        """Host the hub of this config's ports, or join the live one.

        Raises:
            PortInUseError: a port is taken and the ``port_conflict`` policy
                refused to take another (nothing is bound then).
            StreamHubError: ``port_conflict="join"`` found no hub to join.
            LoopThreadError: called from the server's own loop thread.
        """
        self.check_not_in_loop("TrainingStreamServer.start()")
        with self._lifecycle:
            if self._role is not None:
                return
            cfg = self.config
            warn_if_exposed(cfg)
            if self._backend is not None and not cfg.replica:
                self._backend.start_publishing()
                self._role = "publisher"
            elif self._hosted_ports:  # a restart: the same ports again
                self._host_on(self._hosted_ports)
            elif uses_rendezvous(cfg):
                self._start_with_registry()
            elif cfg.port_conflict == "auto":
                self._host_on(resolve_ports(cfg, configured_ports(cfg)))
            else:
                self._host_on(PortManager(cfg.host, cfg.port_conflict).resolve(configured_ports(cfg)))

    def _host_on(
        self, ports: dict[str, int], state: dict[str, Any] | None = None, successor: bool = False
    ) -> None:
        """Serve on ``ports`` (the registry lock held, if this server uses it); ``state``:
        a handed-over history; ``successor``: taking over from another host."""
        hub, backend = self.hub, self._backend
        if state is not None:
            hub.adopt(state)
        # A successor writes on the store of the hub it succeeds; with a backend, Redis keeps history.
        store = (self._hub_store or self.config.store) if successor else self.config.store
        opened = self._host.open_store(None if backend else store, successor, handed_over=state is not None)
        channel = HostChannel(hub, self._token, self._welcome)
        if state is not None:
            channel.acked.update(state.get("acked", {}))
        try:
            if backend is None:
                hub.intake.set_sink(hub.store_batch, numbered=True)
                self._host.start(ports, channel, self._channel_path())
            else:
                self._host.start(ports, channel, self._channel_path(), service=backend)
                backend.start_publishing()
        except BaseException:
            if opened:
                self._host.close_store()
            raise
        self._role = "host"
        if self._system is not None:
            self._system.start()
        self._hosted_ports = dict(self._host.ports)
        if self._registry is not None and self._key is not None:
            record = my_record(
                self._key, self._host.settings(), self._host.ports, hub.epoch, self._token, channel.address
            )
            self._record = record
            self._registry.write(record)
        if backend is None:  # a replica's start is not news to the other replicas' clients
            info = {"state": "started", "ports": self.ports, "pid": os.getpid(), "restarts": self.restarts}
            hub.submit("status", None, None, info)
        announce(self.urls)

    # -- stop -----------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop hosting (verifying every port free) or leave the hub joined,
        within ``timeout`` s (``shutdown_timeout`` by default) in total.

        A host with joined processes hands its history to one of them, which
        hosts next on the same ports in the same epoch. Safe when stopped.

        Raises:
            StreamHubError: the loop thread did not exit in time (the stop
                completed without it), or a port could still not be bound
                afterwards.
            LoopThreadError: called from the server's own loop thread.
        """
        self.check_not_in_loop("TrainingStreamServer.stop()")
        with self._lifecycle:
            self._stop(timeout, reason="stop")
            self._hosted_ports = {}
            self._host.raise_if_left_behind()

    async def aclose(self, timeout: float | None = None) -> None:
        """``stop()`` for async callers: awaits it without blocking their loop."""
        self.check_not_in_loop("TrainingStreamServer.aclose()")
        await asyncio.to_thread(self.stop, timeout)

    def restart(self, timeout: float | None = None) -> None:
        """Host: stop and start again on the same ports, keeping history and
        seq (clients reconnect and resume without loss). Joined: reconnect to
        the host (never restarting another process's hub)."""
        self.check_not_in_loop("TrainingStreamServer.restart()")
        with self._lifecycle:
            if self._forwarder is not None:
                self._forwarder.reconnect()
                self.restarts += 1
                return
            self._stop(timeout, reason="restart")
            self.restarts += 1
            self.start()

    def _stop(self, timeout: float | None, reason: str) -> None:
        timeout = self.config.shutdown_timeout if timeout is None else max(0.0, timeout)
        forwarder, backend = self._forwarder, self._backend
        if forwarder is not None:
            self._forwarder = None
            forwarder.close(timeout)
            if backend is not None:
                self.hub.intake.set_sink(backend.sink, numbered=False)
            else:
                self.hub.intake.set_sink(self.hub.store_batch, numbered=True)
            self._role = None
            return
        if self._role == "publisher" and backend is not None:
            self._role = None
            backend.stop_publishing(timeout)
            return
        if self._role is None and not self._host.alive:
            if reason == "stop":
                self._host.close_store()  # left open by a restart that could not start again
            return
        handover = None
        if reason == "stop":
            handover = HandoverToSuccessor(self.hub, self._registry, self._record, self._host.ports)
        self._role = None
        started = time.monotonic()
        if self._system is not None:
            self._system.stop()
        try:
            self._host.stop(timeout, reason, handover)
            if backend is not None:
                backend.stop_publishing(max(0.0, timeout - (time.monotonic() - started)))
        finally:
            if reason == "stop":  # a restart keeps writing it
                self._host.close_store(max(1.0, timeout - (time.monotonic() - started)))
            handed = handover is not None and handover.successor is not None
            if reason == "stop" and not handed and self._registry and self._key:
                self._registry.remove(self._key, os.getpid())

    def _report_fault(self, cause: str) -> None:
        """Log a fault and hand recovery to the owner (on a thread of its own)."""
        logger.error("stream_hub fault: %s; restarting in place", cause)
        self.faults += 1
        self.last_fault = cause
        owner = self.owner
        if owner is not None:
            threading.Thread(
                target=owner.recover, args=(self, cause), name="stream-hub-recover", daemon=True
            ).start()

    def _restart_in_background(self) -> None:
        """Called on the loop by the admin endpoint: restart from another thread."""
        target = self.owner.force_restart if self.owner is not None else self.restart
        threading.Thread(target=target, name="stream-hub-restart", daemon=True).start()

    # -- fork ----------------------------------------------------------------------------

    def _disown_after_fork(self) -> None:
        """In a forked child: let go of the parent's sockets and threads; the
        child's events go to the parent's hub (it never serves).

        See :mod:`stream_hub.runtime.forking`.
        """
        target = self._fork_target()
        channel = self._host.channel
        unix = [channel.address[5:]] if channel is not None and channel.address.startswith("unix:") else []
        if self._host.ports or unix:
            close_inherited_sockets(self._host.ports.values(), unix)
        if self._forwarder is not None:
            self._forwarder.release_after_fork()
        self.hub.intake.reinit_after_fork()
        if self._backend is not None:  # the parent's publisher: its thread and locks stayed there
            self._backend = RedisBackend(self.hub, self._backend.url, self._backend.keys.namespace)
            self.hub.intake.set_sink(self._backend.sink, numbered=False)
        self.clients = ClientRegistry(self.config.send_timeout, self.config.client_buffer_bytes)
        self.streams = set()
        self._lifecycle = threading.RLock()
        self._host = HostRuntime(self, self._transports, self._report_fault)
        self._forwarder = None
        self._role = None
        self._hosted_ports = {}
        if target is not None:
            self._join(target, role="forked")
        elif self._backend is not None and not self.config.replica:
            self._backend.start_publishing()  # the parent published directly: so does the child
            self._role = "publisher"


def _status_method(training_system: Any) -> Any:
    method = getattr(training_system, "get_status", None)
    return method if callable(method) else None


def _after_fork_in_child() -> None:
    for server in list(_ALL_SERVERS):
        server._disown_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
