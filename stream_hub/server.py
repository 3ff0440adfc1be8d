"""TrainingStreamServer: one loop thread serving the SSE, WebSocket and REST
transports over one hub; start binds all three ports or none; stop returns
only once every port is verified free.

Lifecycle, in the order the steps run::

    start()   -> _resolve_ports -> _bind_sockets -> loop start -> _startup -> _announce
    stop()    -> _shutdown (on the loop) -> loop stop -> _release_resources -> verify_released
    restart() -> stop (keeping ports and history) -> start
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .config import StreamConfig, base_urls
from .core.hub import Hub
from .errors import StreamHubError
from .ports import PortManager, bind_port, verify_released
from .runtime.forking import close_inherited_sockets
from .runtime.loop import LoopThread
from .runtime.notifier import LoopNotifier
from .status import Status
from .telemetry import LatencyHistogram, MetricsExporter
from .transports import TRANSPORTS, Transports
from .transports.access import AccessPolicy, is_loopback_host
from .transports.clients import ClientRegistry

__all__ = ["ServerOwner", "TrainingStreamServer"]

logger = logging.getLogger(__name__)

WATCH_INTERVAL = 0.25  # seconds between listener health checks
# Of stop()'s timeout, the part streams get to flush; the rest stops the loop thread.
GRACEFUL_SHARE = 0.8

# Where the one "serving" line goes when the application configured no logging.
_STDERR = logging.StreamHandler()
_STDERR.setFormatter(logging.Formatter("%(message)s"))

# Every server object of this process, so a forked child can disown them.
_ALL_SERVERS: weakref.WeakSet[TrainingStreamServer] = weakref.WeakSet()


class ServerOwner(Protocol):
    """Who shares a server (the manager): its reference count, and what a
    restart asked for over REST or a fault should go through."""

    @property
    def ref_count(self) -> int: ...

    def force_restart(self) -> Any: ...

    def recover(self, server: TrainingStreamServer, cause: str) -> None: ...


class TrainingStreamServer:
    """SSE, WebSocket and REST over one hub, on one dedicated loop thread.

    Most code gets one through :func:`stream_hub.get_stream_server`, which
    shares a single server per process. ``log`` and ``publish`` may be called
    from any thread, before, during and after the server runs; they never
    block on the network.

    ``server.log(metrics, step=None, run=None)`` publishes one metric event
    and returns its seq; a value that is not a real number raises
    ``TypeError`` in the caller's thread. It *is* the hub's intake method
    (one call on the training thread's hot path, not two).
    """

    log: Callable[..., int | None]

    def __init__(self, config: StreamConfig | None = None, training_system: Any = None) -> None:
        self.config = cfg = config if config is not None else StreamConfig()
        self.training_system = training_system
        self.hub = Hub(cfg.history_size, cfg.series_points, cfg.history_bytes, cfg.max_series)
        self.log = self.hub.intake.log  # HOT PATH: see the class docstring
        self.owner: ServerOwner | None = None
        self.restarts = 0
        self.faults = 0
        self.last_fault: str | None = None
        self.latency = LatencyHistogram()
        # Every client connection, and the eviction of those that stop reading.
        self.clients = ClientRegistry(cfg.send_timeout, cfg.client_buffer_bytes)
        # The Host and Origin rules every transport applies.
        self.access = AccessPolicy(cfg, lambda: self._ports.get("rest"))
        # The SSE streams running now (the WebSocket server keeps its own).
        self.streams: set[asyncio.Task[Any]] = set()
        self._metrics = MetricsExporter(self)
        self._loop = LoopThread(on_crash=self._loop_crashed)
        self._lifecycle = threading.RLock()
        self._notifier: LoopNotifier | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._ports: dict[str, int] = {}
        self._sockets: dict[str, socket.socket] = {}
        self._transports = self._new_transports()
        self._started_at: float | None = None
        self._running = False
        _ALL_SERVERS.add(self)

    def publish(
        self, event_type: str, data: Any = None, run: str | None = None, step: int | None = None
    ) -> int | None:
        """Publish any JSON-able event of ``event_type`` and return its seq.

        Raises:
            TypeError: the type is reserved or not a plain word, or ``data``
                is not JSON-able (in the caller's thread).
        """
        return self.hub.intake.publish(event_type, data, run, step)

    # -- state ----------------------------------------------------------------------

    @property
    def notifier(self) -> LoopNotifier | None:
        """The loop side of the hub while serving (None when stopped)."""
        return self._notifier

    @property
    def running(self) -> bool:
        """True while serving (False as soon as the loop thread has died)."""
        return self._running and self._loop.is_alive()

    @property
    def loop_thread_alive(self) -> bool:
        return self._loop.is_alive()

    @property
    def ports(self) -> dict[str, int]:
        """The bound ports: ``{"sse": int, "ws": int, "rest": int}`` (empty when stopped)."""
        return dict(self._ports)

    @property
    def urls(self) -> dict[str, str]:
        """Base URLs of the three transports (empty when stopped)."""
        return base_urls(self.config.host, self._ports)

    def client_counts(self) -> dict[str, int]:
        """Connected SSE and WebSocket clients, and evictions so far."""
        notifier = self._notifier
        counts = dict(notifier.clients) if notifier is not None else {"sse": 0, "ws": 0}
        counts["evicted"] = self.clients.evicted
        return counts

    def status(self) -> dict[str, Any]:
        """The status dict of the contract (``ref_count`` from the owner)."""
        hub = self.hub
        return Status(
            running=self.running,
            ref_count=self.owner.ref_count if self.owner is not None else 0,
            uptime_s=(time.monotonic() - self._started_at) if self._started_at else 0.0,
            ports=self.ports,
            urls=self.urls,
            epoch=hub.epoch,
            last_seq=hub.head,
            history={"size": hub.size, "capacity": hub.capacity},
            clients=self.client_counts(),
            events=hub.events_counts(),
            loop_thread_alive=self._loop.is_alive(),
            restarts=self.restarts,
        ).to_dict()

    def check_not_in_loop(self, what: str) -> None:
        """Raise :class:`~stream_hub.LoopThreadError` if called from this
        server's loop thread (where a blocking call would deadlock)."""
        self._loop.check_not_in_loop(what)

    # -- start ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind all three ports and serve; on any failure nothing stays bound.

        Raises:
            PortInUseError: a port is taken and the ``port_conflict`` policy
                refused to free it (nothing is bound then).
            LoopThreadError: called from the server's own loop thread.
        """
        self.check_not_in_loop("TrainingStreamServer.start()")
        with self._lifecycle:
            if self._running:
                return
            cfg = self.config
            wanted = self._ports or {"sse": cfg.sse_port, "ws": cfg.ws_port, "rest": cfg.rest_port}
            _warn_if_exposed(cfg)
            self._bind_sockets(self._resolve_ports(wanted))
            try:
                loop = self._loop.start()
                self._notifier = LoopNotifier(self.hub, loop, cfg.busy_flush_interval, cfg.heartbeat_interval)
                self._loop.run(self._startup(), timeout=30)
            except BaseException:
                self._abort_start()
                raise
            self._running = True
            self._started_at = time.monotonic()
            state = {"state": "started", "ports": self.ports, "pid": os.getpid(), "restarts": self.restarts}
            self.hub.submit("status", None, None, state)
            _announce(self.urls)

    def _resolve_ports(self, wanted: dict[str, int]) -> dict[str, int]:
        """Apply the port-conflict policy to all three ports before binding any."""
        return PortManager(self.config.host, self.config.port_conflict).resolve(wanted)

    def _bind_sockets(self, wanted: dict[str, int]) -> None:
        """Bind and listen on all three ports, or on none (closing the others)."""
        bound: dict[str, socket.socket] = {}
        try:
            for name in TRANSPORTS:
                bound[name] = bind_port(self.config.host, wanted[name], name)
        except BaseException:
            for sock in bound.values():
                sock.close()
            raise
        self._sockets = bound
        self._ports = {name: sock.getsockname()[1] for name, sock in bound.items()}

    def _new_transports(self) -> Transports:
        return Transports(
            self,
            restart=self._restart_in_background,
            # Looked up per request: a training system may be given later.
            training_status=lambda: _status_method(self.training_system),
            metrics_text=self._metrics.render,
        )

    async def _startup(self) -> None:
        notifier = self._notifier
        assert notifier is not None
        # The hub commits on this loop from now on, before any listener accepts:
        # no reader can ever see a commit running on a training thread.
        notifier.attach()
        await self._transports.start(self._sockets)
        self._watch_task = asyncio.get_running_loop().create_task(self._watch(), name="stream-hub-watch")

    async def _watch(self) -> None:
        """Notice a transport that stopped listening underneath us (within a second)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if not self._running or (self._notifier is not None and self._notifier.closing):
                continue
            broken = self._transports.broken()
            if broken:
                self._report_fault(f"{', '.join(broken)} listener stopped serving")
                return

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

    def _abort_start(self) -> None:
        """Undo a partial start: close listeners, stop the loop, free the ports."""
        try:
            if self._loop.is_alive():
                with contextlib.suppress(Exception):
                    self._loop.run(self._transports.close(time.monotonic() + 0.5), timeout=5)
                self._loop.stop()
        finally:
            self._release_resources()
            if not self._running:
                self._ports = {}

    # -- stop -----------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop serving; return only after every port is verified free.

        Ends every SSE stream (after a ``shutdown`` event), closes every
        WebSocket with 1001, stops listening, cancels every task the server
        started, joins the loop thread and closes the loop, all within
        ``timeout`` seconds (``shutdown_timeout`` by default) in total. Safe
        to call when stopped.

        Raises:
            StreamHubError: the loop thread did not exit in time, or a port
                could still not be bound afterwards.
            LoopThreadError: called from the server's own loop thread.
        """
        self.check_not_in_loop("TrainingStreamServer.stop()")
        with self._lifecycle:
            self._stop(timeout, reason="stop", keep_ports=False)

    async def aclose(self, timeout: float | None = None) -> None:
        """``stop()`` for async callers: awaits it without blocking their loop."""
        self.check_not_in_loop("TrainingStreamServer.aclose()")
        await asyncio.to_thread(self.stop, timeout)

    def restart(self, timeout: float | None = None) -> None:
        """Stop and start again on the same ports, keeping history and seq.

        Clients see a ``shutdown`` event, reconnect, and resume from their
        last seq without loss.
        """
        self.check_not_in_loop("TrainingStreamServer.restart()")
        with self._lifecycle:
            if self._running:
                self._stop(timeout, reason="restart", keep_ports=True)
            self.restarts += 1
            self.start()

    def _stop(self, timeout: float | None, reason: str, keep_ports: bool) -> None:
        if not self._running and not self._loop.is_alive():
            return
        timeout = self.config.shutdown_timeout if timeout is None else max(0.0, timeout)
        ports = dict(self._ports)
        started = time.monotonic()
        # ``timeout`` bounds the whole stop: streams get most of it to flush,
        # the rest is kept for stopping the loop thread.
        deadline = started + timeout
        graceful = started + timeout * GRACEFUL_SHARE
        self._running = False
        try:
            if self._loop.is_alive():
                try:
                    left = max(0.01, graceful - time.monotonic())
                    self._loop.run(self._shutdown(reason, graceful), timeout=left)
                except (TimeoutError, StreamHubError) as exc:
                    logger.warning("graceful shutdown incomplete (%s); stopping the loop anyway", exc)
            self._loop.stop(timeout=max(0.01, deadline - time.monotonic()))
        finally:
            self._release_resources()
            self._started_at = None
        verify_released(self.config.host, ports)
        if not keep_ports:
            self._ports = {}
        took = (time.monotonic() - started) * 1000
        logger.info(
            "stream_hub stopped (%s) in %.1f ms; ports %s verified free", reason, took, sorted(ports.values())
        )

    def _release_resources(self) -> None:
        """Detach the hub from the (stopped) loop and close our listening sockets."""
        if self._notifier is not None:
            self._notifier.detach()
        self._notifier = None
        for sock in self._sockets.values():
            sock.close()
        self._sockets = {}

    async def _shutdown(self, reason: str, deadline: float) -> None:
        """On the loop: announce, flush every stream, close every connection
        (streams still running at ``deadline`` are dropped)."""
        notifier = self._notifier
        self.hub.submit("shutdown", None, None, {"reason": reason, "restart": reason == "restart"})
        self.hub.commit()
        if notifier is not None:
            notifier.close()
        await self._transports.close(deadline)

    def _loop_crashed(self, exc: BaseException) -> None:
        # On the dying loop thread: it can no longer serve anything.
        if self._running:
            self._report_fault(f"event-loop thread died: {exc!r}")

    def _restart_in_background(self) -> None:
        """Called on the loop by the admin endpoint: restart from another thread."""
        target = self.owner.force_restart if self.owner is not None else self.restart
        threading.Thread(target=target, name="stream-hub-restart", daemon=True).start()

    # -- fork ----------------------------------------------------------------------------

    def _disown_after_fork(self) -> None:
        """In a forked child: let go of the parent's sockets, forget its loop and locks.

        The child never serves: it holds none of the server's listeners or
        client connections (see :mod:`stream_hub.runtime.forking`).
        """
        if self._ports:
            close_inherited_sockets(self._ports.values())
        self.hub.intake.reinit_after_fork()
        self._notifier = None
        self.clients = ClientRegistry(self.config.send_timeout, self.config.client_buffer_bytes)
        self.streams = set()
        self._running = False
        self._loop = LoopThread(on_crash=self._loop_crashed)
        self._lifecycle = threading.RLock()
        self._sockets = {}
        self._ports = {}
        self._started_at = None
        self._transports = self._new_transports()


def _status_method(training_system: Any) -> Any:
    method = getattr(training_system, "get_status", None)
    return method if callable(method) else None


def _warn_if_exposed(cfg: StreamConfig) -> None:
    """Binding beyond loopback: say what the missing tokens leave open."""
    if is_loopback_host(cfg.host):
        return
    problems = []
    if cfg.read_token is None:
        problems.append("without read_token anyone who can reach it can read your training events")
    if cfg.publish_token is None:
        problems.append("without publish_token other machines cannot publish (they are refused)")
    if problems:
        logger.warning(
            "binding %s, which other machines can reach: %s. Set STREAM_HUB_READ_TOKEN / "
            "STREAM_HUB_PUBLISH_TOKEN, or bind 127.0.0.1.",
            cfg.host,
            "; ".join(problems),
        )


def _announce(urls: dict[str, str]) -> None:
    """Say where the server is: at INFO, and on stderr if logging is not configured.

    A library user who configured no logging would never see an INFO record
    (Python's default level is WARNING), and would not learn the dashboard's
    URL; one line on stderr tells them. With logging configured, the record
    goes where they sent it and nothing else is printed.
    """
    message = "stream_hub serving: dashboard %s/ SSE %s/events WebSocket %s/ (REST %s/api/status)"
    args = (urls["rest"], urls["sse"], urls["ws"], urls["rest"])
    logger.info(message, *args)
    if not logger.hasHandlers():
        _STDERR.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, args, None))


def _after_fork_in_child() -> None:
    for server in list(_ALL_SERVERS):
        server._disown_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
