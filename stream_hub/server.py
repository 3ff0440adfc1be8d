"""TrainingStreamServer: one process's part in a hub, in one role at a time.

The roles (:mod:`stream_hub.roles`), each an object with its own state:

- ``"host"`` (:class:`~stream_hub.roles.hosting.Hosting`): this process
  serves the hub — SSE, WebSocket and REST on one loop thread
  (:mod:`stream_hub.serving`); start binds all three ports or none; stop
  returns only once every port is verified free;
- ``"joined"`` (:class:`~stream_hub.roles.joined.Joined`): another process
  of this user serves the hub of these ports, and this one forwards its
  events there (``"forked"`` in a forked child: to its parent's hub);
- ``"publisher"`` (:class:`~stream_hub.roles.publishing.Publishing`): with
  a Redis backend and ``replica=False``, events go to Redis, nothing is served.

Which one is decided at start by the port resolver
(:func:`stream_hub.roles.placement.place`), under the registry lock when the
config meets other processes there. The server changes role in one place,
:meth:`TrainingStreamServer._switch`: the next role starts before the
previous one is retired, so ``server.role`` is a role from start to stop and
``None`` only before start and after stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import weakref
from typing import Any

from . import job
from .backend import RedisBackend
from .config import StreamConfig
from .core.hub import Hub
from .core.intake import Notifier
from .errors import StreamHubError
from .events import alert_data
from .inline import InlineDashboard, dashboard_url
from .processes.channel import JoinTarget
from .processes.membership import Membership
from .reporting import ServerOwner
from .roles.base import Role
from .roles.facts import LiveFacts, act_before_binding
from .roles.hosting import Hosting
from .roles.joined import Joined
from .roles.placement import Decision, Host, Join, Publish, Wait, place, uses_registry
from .roles.publishing import Publishing
from .runtime import hooks
from .runtime.forking import chain_sigterm, in_each_multiprocessing_child, on_multiprocessing_exit
from .runtime.notifier import LoopNotifier
from .serving import ServingRuntime, warn_if_exposed
from .status import Status
from .system_metrics import SystemMetrics
from .telemetry import LatencyHistogram, MetricsExporter
from .transports import Transports
from .transports.access import AccessPolicy
from .transports.clients import ClientRegistry
from .webhook import AlertWebhook

__all__ = ["ServerOwner", "TrainingStreamServer"]

logger = logging.getLogger(__name__)

# Every server object of this process, so a forked child can disown them.
_ALL_SERVERS: weakref.WeakSet[TrainingStreamServer] = weakref.WeakSet()
# How long a forked child's SIGTERM waits for its last events to reach the hub.
SIGTERM_FLUSH = 5.0
# How long a stop waits for the alert webhook to post what it holds.
WEBHOOK_FLUSH = 2.0
# How long a multiprocessing child's exit waits for the hub to take its last
# events (a hub slowed by a loaded machine; a gone hub fails at once).
EXIT_FLUSH = 15.0


class TrainingStreamServer:
    """One process's part in a hub: hosting it, joined to another process's,
    or publishing to Redis.

    Most code gets one through :func:`stream_hub.get_stream_server`, which
    shares a single server per process. ``log`` and ``publish`` may be called
    from any thread, before, during and after the server runs, in any role;
    they never block on the network.

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
        # Every alert this hub commits is also POSTed there (webhook.py).
        self._webhook = AlertWebhook(cfg.alert_webhook) if cfg.alert_webhook else None
        self.hub = Hub(
            cfg.history_size,
            cfg.series_points,
            cfg.history_bytes,
            cfg.max_series,
            max_runs=cfg.max_runs,
            run=identity.run,
            rank=identity.rank,
            alert_outbox=self._webhook,
            history_media_bytes=cfg.history_media_bytes,
        )
        self.log = self.hub.intake.log  # HOT PATH: see the class docstring
        # With a backend, events go into Redis whatever the role, but joined
        # (then the local host publishes them); stopped, they wait in its buffer.
        self._backend: RedisBackend | None = None
        if cfg.backend is not None:
            if cfg.store is not None:
                logger.warning("store %s unused: with a backend, Redis keeps the history", cfg.store)
            self._backend = RedisBackend(self.hub, cfg.backend, cfg.namespace)
        self.owner: ServerOwner | None = None
        self.restarts = 0
        self.faults = 0
        self.last_fault: str | None = None
        self.latency = LatencyHistogram()
        # Every client connection, and the eviction of those that stop reading.
        self.clients = ClientRegistry(cfg.send_timeout, cfg.client_buffer_bytes)
        # The Host and Origin rules every transport applies.
        self.access = AccessPolicy(cfg, lambda: self._serving.ports.get("rest"))
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
        # The serving machinery, reused by every time this server hosts.
        self._serving = ServingRuntime(self, self._transports, self._report_fault)
        # The machine's metrics, published while this process hosts (system_metrics.py).
        self._system = SystemMetrics(self.hub.intake, cfg.system_metrics) if cfg.system_metrics else None
        self._membership = Membership()
        self._lifecycle = threading.RLock()
        self._role: Role | None = None
        self._route(None)
        _ALL_SERVERS.add(self)
        hooks.after_fork_in_child("server", _after_fork_in_child)
        in_each_multiprocessing_child(self, TrainingStreamServer._flush_at_multiprocessing_exit)

    def publish(
        self, event_type: str, data: Any = None, run: str | None = None, step: int | None = None
    ) -> Any:
        """Publish any JSON-able event of ``event_type``; its seq (None while joined).

        Raises:
            TypeError: the type is reserved or not a plain word, or ``data``
                is not JSON-able (in the caller's thread).
        """
        return self.hub.intake.publish(event_type, data, run, step)

    def alert(
        self,
        title: str,
        text: str,
        level: str = "warning",
        run: str | None = None,
        metric: str | None = None,
    ) -> Any:
        """Publish an alert of yours (an ``alert`` event, source ``"user"``) to
        ``run`` (this process's default run when None), about ``metric`` if
        given; served like the hub's own, counted and sent to the webhook.
        Its seq (None while joined).

        Raises:
            ValueError: ``level`` is not info, warning or error; ``title`` is
                empty or over 200 characters, ``text`` over 4000, ``metric``
                empty or over 200.
            TypeError: ``title``, ``text`` or ``metric`` is not a str, or
                ``run`` is not a run's name.
        """
        return self.publish("alert", alert_data(title, text, level, metric, source="user"), run=run)

    def finish(self, run: str | None = None, status: str = "finished") -> Any:
        """Say that ``run`` (this process's default run when None) has ended:
        a ``run_end`` event with ``status`` (finished, failed or killed)."""
        if status not in ("finished", "failed", "killed"):
            raise ValueError(f"status must be finished, failed or killed, got {status!r}")
        seq = self.publish("run_end", {"status": status}, run=run)
        self.hub.intake.ended(run or self.hub.intake.default_run)
        return seq

    def adopt_rank(self, rank: int, world_size: int | None = None) -> int | None:
        """Stamp this process's events with ``rank`` from now on, when it had
        no rank (:func:`stream_hub.job.adopt_rank`: a rank already known is
        kept). For a framework that learns the rank after the server was made
        (the Lightning bridge under Lightning's own launcher). Returns the
        rank in force.

        Raises:
            ValueError: ``rank`` is negative, or not below ``world_size``.
        """
        identity = job.adopt_rank(rank, world_size)
        intake = self.hub.intake
        if intake.rank is None and identity.rank is not None:
            intake.rank = identity.rank  # one attribute the intake reads per event
            role = self._role
            if isinstance(role, Joined):
                role.link.rank = identity.rank  # said in its next hello; the ring's events stamped
        return intake.rank

    def finish_local_runs(self, status: str = "finished", forget: bool = False) -> None:
        """Finish every run this process logged to and did not finish itself
        (at the last release and at exit: ``finished``, or ``failed`` after
        an exception). ``forget``: a run logged to after this starts afresh.

        A run this process does not own — its parent's, inherited by a
        multiprocessing child — is left to its owner (contract v3: a run
        ends once)."""
        intake = self.hub.intake
        identity = job.current()  # asked now: a forked child shares this object
        for run in sorted(intake.local_runs - intake.finished_runs):
            if run == identity.run and not identity.owns_run:
                continue
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

    def _repr_html_(self) -> str:
        """In a notebook, a server shown as a cell's value is its live
        dashboard, filtered to this process's run (:mod:`stream_hub.inline`)."""
        rest = self.urls.get("rest")
        if not rest:
            return "<p>stream_hub server: stopped</p>"
        run = self.hub.intake.default_run
        return InlineDashboard(dashboard_url(rest, run), run)._repr_html_()

    # -- state ----------------------------------------------------------------------

    @property
    def role(self) -> str | None:
        """``"host"``, ``"joined"``, ``"forked"`` or ``"publisher"`` from start
        to stop (through hand-overs and restarts); None before start and after stop."""
        role = self._role
        return role.name if role is not None else None

    @property
    def notifier(self) -> LoopNotifier | None:
        """The loop side of the hub while hosting (None otherwise)."""
        return self._serving.notifier

    @property
    def running(self) -> bool:
        """True while the role does its work (a host whose loop thread died does not)."""
        role = self._role
        return role is not None and role.running

    @property
    def loop_thread_alive(self) -> bool:
        return self._serving.alive

    @property
    def ports(self) -> dict[str, int]:
        """The hub's ports: ``{"sse": int, "ws": int, "rest": int}`` (empty when stopped)."""
        role = self._role
        return role.ports if role is not None else {}

    @property
    def urls(self) -> dict[str, str]:
        """Base URLs of the hub's three transports (empty when stopped)."""
        role = self._role
        return role.urls if role is not None else {}

    def check_not_in_loop(self, what: str) -> None:
        """Raise :class:`~stream_hub.LoopThreadError` if called from this
        server's loop thread (where a blocking call would deadlock)."""
        self._serving.loop.check_not_in_loop(what)

    # -- start ------------------------------------------------------------------------

    def start(self) -> None:
        """Host the hub of this config's ports, join the live one, or publish to Redis.

        Raises:
            PortInUseError: a port is taken and the ``port_conflict`` policy
                refused to take another (nothing is bound then).
            StreamHubError: ``port_conflict="join"`` found no hub to join.
            LoopThreadError: called from the server's own loop thread.
        """
        self.check_not_in_loop("TrainingStreamServer.start()")
        with self._lifecycle:
            role = self._role
            if role is not None:
                if not role.running:
                    role.start()  # a host whose restart failed: its ports again
                return
            cfg = self.config
            warn_if_exposed(cfg)
            facts = LiveFacts(cfg.host)
            if uses_registry(cfg) and not (cfg.backend is not None and not cfg.replica):
                self._membership.meet(
                    cfg,
                    lambda record: place(cfg, facts, record=record),
                    self._act,
                    waiting=_handover_until,
                    without_lock=lambda record, pid: place(
                        cfg, facts, record=record, lock_held_by_stopped=pid
                    ),
                )
            else:
                self._act(place(cfg, facts))

    def _act(self, decision: Decision) -> None:
        """Take the role ``decision`` names (the registry lock held, if this server uses it)."""
        if isinstance(decision, Publish):
            assert self._backend is not None
            self._switch(Publishing(self._backend))
        elif isinstance(decision, Join):
            self._switch(self._joined(decision.target))
        elif isinstance(decision, Host):
            decision = act_before_binding(decision, self.config, self._membership.registry)
            self._switch(self._hosting(decision.ports))

    def _hosting(
        self, ports: dict[str, int], state: dict[str, Any] | None = None, successor: bool = False
    ) -> Hosting:
        return Hosting(
            self,
            self._serving,
            self._membership,
            ports,
            backend=self._backend,
            system=self._system,
            state=state,
            successor=successor,
        )

    def _joined(self, target: JoinTarget, forked: bool = False) -> Joined:
        if "store" in target.settings:  # the hub's store: a path, or False for none
            self._membership.hub_store = target.settings["store"]
        return Joined(
            self.config,
            self.hub.intake,
            target,
            find_host=self._elect,
            take_over=None if forked else self._succeed,
            forked=forked,
        )

    # -- the one place the role changes ------------------------------------------------------

    def _switch(self, new: Role, acked: dict[str, int] | None = None) -> None:
        """Make ``new`` this server's role: route the intake to it, start it,
        then retire the previous role (its unacknowledged events, if any, go
        into the hub again). If ``new`` cannot start, the previous role stays."""
        old = self._role
        self._route(new)
        try:
            new.start()
        except BaseException:
            self._route(old)
            raise
        self._role = new
        if old is not None:
            events = old.retire(acked or {})
            if events:
                self.hub.submit_many(events)

    def _leave(self, timeout: float) -> None:
        """Stop the role for good; the server is stopped afterwards, whatever happened."""
        role = self._role
        if role is None:
            return
        try:
            role.stop(timeout)
        finally:
            self._role = None
            self._route(None, release=role.notifier)

    def _route(self, role: Role | None, release: Notifier | None = None) -> None:
        """Where the intake's committed batches go: the role's sink, or with
        no role, this process's own hub (Redis's buffer, with a backend)."""
        intake = self.hub.intake
        if role is not None:
            intake.set_sink(role.sink, role.numbered, release)
        elif self._backend is not None:
            intake.set_sink(self._backend.sink, False, release)
        else:
            intake.set_sink(self.hub.store_batch, True, release)

    # -- changing roles when the host goes (the forwarder's thread) ----------------------------

    def _elect(self) -> JoinTarget | None:
        """The host is lost: whom to join now, or host (a forked child never does)."""
        membership = self._membership
        if not membership.locked() or not self._lifecycle.acquire(blocking=False):
            return None
        try:
            role = self._role
            if role is None:
                return None
            cfg, facts = self.config, LiveFacts(self.config.host)
            may_host = role.name == "joined"
            decision = membership.meet(
                cfg,
                lambda record: place(cfg, facts, record=record, may_host=may_host),
                self._elected,
                waiting=lambda decision: None,
            )
        except StreamHubError as exc:
            logger.debug("no hub to join yet: %s", exc)
            return None
        finally:
            self._lifecycle.release()
        return decision.target if isinstance(decision, Join) else None

    def _elected(self, decision: Decision) -> None:
        if isinstance(decision, Host):
            logger.warning("the hub's host is gone; this process (pid %d) hosts now", os.getpid())
            decision = act_before_binding(decision, self.config, self._membership.registry)
            self._switch(self._hosting(decision.ports, successor=True))

    def _succeed(self, state: dict[str, Any]) -> None:
        """The host handed its history to this process: host it, same ports, same epoch."""
        if not self._lifecycle.acquire(blocking=False):
            return  # this process is stopping
        try:
            membership, cfg = self._membership, self.config
            registry, key = membership.registry, membership.key
            decision = place(cfg, LiveFacts(cfg.host), successor_ports=dict(state["ports"]))
            assert isinstance(decision, Host)
            hosting = self._hosting(decision.ports, state, successor=True)
            if registry is not None and key is not None:
                with registry.lock(key):
                    self._switch(hosting, acked=dict(state.get("acked", {})))
            else:
                self._switch(hosting, acked=dict(state.get("acked", {})))
        except Exception:  # the forwarder goes on: it reconnects or elects
            logger.exception("could not take over the hub handed to this process")
        finally:
            self._lifecycle.release()

    # -- stop -----------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop hosting (verifying every port free), leave the hub joined, or
        stop publishing, within ``timeout`` s (``shutdown_timeout`` by default) in total.

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
            self._leave(self._timeout(timeout))
            if self._webhook is not None:  # the last alerts (a run that failed) still go out
                self._webhook.flush(min(self._timeout(timeout), WEBHOOK_FLUSH))
            self._serving.raise_if_left_behind()

    async def aclose(self, timeout: float | None = None) -> None:
        """``stop()`` for async callers: awaits it without blocking their loop."""
        self.check_not_in_loop("TrainingStreamServer.aclose()")
        await asyncio.to_thread(self.stop, timeout)

    def restart(self, timeout: float | None = None) -> None:
        """Host: stop and start again on the same ports, keeping history and
        seq (clients reconnect and resume without loss). Joined: reconnect to
        the host (never restarting another process's hub). The role stays
        the same throughout.

        Raises:
            PortInUseError: a port was taken meanwhile (still the host, not
                running: the next start or restart tries again).
        """
        self.check_not_in_loop("TrainingStreamServer.restart()")
        with self._lifecycle:
            self.restarts += 1
            role = self._role
            if role is None:
                self.start()
            else:
                role.restart(self._timeout(timeout))

    def _timeout(self, timeout: float | None) -> float:
        return self.config.shutdown_timeout if timeout is None else max(0.0, timeout)

    # -- reports -----------------------------------------------------------------------------

    def client_counts(self) -> dict[str, int]:
        """Connected SSE and WebSocket clients, and evictions so far."""
        notifier = self._serving.notifier
        counts = dict(notifier.clients) if notifier is not None else {"sse": 0, "ws": 0}
        counts["evicted"] = self.clients.evicted
        return counts

    def sources(self) -> list[dict[str, Any]]:
        """The hub's publishers (``/api/sources``): this process, then joined ones."""
        role = self._role
        started = self._serving.started_at
        me = {
            "source": "host",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "rank": self.hub.intake.rank,
            "role": "host",
            "events": self.hub.counters.published,
            "dropped": self.hub.intake.shed,
            "connected": self.running,
            "connected_since": time.time() - (time.monotonic() - (started or time.monotonic())),
        }
        return [me, *(role.sources() if role is not None else [])]

    def live_runs(self) -> set[str]:
        """Runs a live publisher of this hub has logged to (not stale)."""
        role = self._role
        intake = self.hub.intake
        joined = role.live_runs() if role is not None else set()
        return joined | (intake.local_runs - intake.finished_runs)

    def live_tracks(self) -> set[tuple[str, int | None]]:
        """(run, rank) of each run a live publisher of this hub has logged to,
        with that publisher's rank: whom the silence rule watches."""
        role = self._role
        intake = self.hub.intake
        joined = role.live_tracks() if role is not None else set()
        return joined | {(run, intake.rank) for run in intake.local_runs - intake.finished_runs}

    def status(self) -> dict[str, Any]:
        """The status dict of the contract (``ref_count`` from the owner)."""
        hub, serving, role = self.hub, self._serving, self._role
        status = Status(
            running=self.running,
            ref_count=self.owner.ref_count if self.owner is not None else 0,
            uptime_s=(time.monotonic() - serving.started_at) if serving.started_at else 0.0,
            ports=self.ports,
            urls=self.urls,
            epoch=hub.epoch,
            last_seq=hub.head,
            history={"size": hub.size, "capacity": hub.capacity},
            clients=self.client_counts(),
            events=hub.events_counts(),
            loop_thread_alive=serving.alive,
            restarts=self.restarts,
            role=role.name if role is not None else "stopped",
        ).to_dict()
        if role is not None:
            role.report(status)
        backend = self._backend
        if backend is not None:
            status["backend"] = backend.state
            status["redis"] = backend.describe()
        return status

    @property
    def backend_state(self) -> str | None:
        """``"up"`` or ``"down"`` with a backend (is Redis answering?), else None."""
        return self._backend.state if self._backend is not None else None

    def backend_status(self) -> dict[str, Any] | None:
        """The backend's details (``status()["redis"]``), None without one."""
        return self._backend.describe() if self._backend is not None else None

    def webhook_status(self) -> dict[str, int] | None:
        """The alert webhook's counts (sent, failed, dropped, queued); None without one."""
        return self._webhook.status() if self._webhook is not None else None

    def store_status(self) -> dict[str, Any] | None:
        """The store's part of the status (None without a store, or while not hosting)."""
        store = self._serving.store
        return store.status() if store is not None else None

    # -- faults ----------------------------------------------------------------------------

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
        role = self._role
        target = role.fork_target() if role is not None else None
        if role is not None:
            role.disown_after_fork()
        self.hub.intake.reinit_after_fork()
        if self._webhook is not None:
            self._webhook.reinit_after_fork()
        if self._backend is not None:  # the parent's publisher: its thread and locks stayed there
            self._backend = RedisBackend(self.hub, self._backend.url, self._backend.keys.namespace)
        self.clients = ClientRegistry(self.config.send_timeout, self.config.client_buffer_bytes)
        self.streams = set()
        self._lifecycle = threading.RLock()
        self._serving = ServingRuntime(self, self._transports, self._report_fault)
        self._role = None
        self._route(None)
        if target is not None:
            self._switch(self._joined(target, forked=True))
            # A pool's worker is ended with SIGTERM: its last events go first.
            chain_sigterm(lambda: self._flush_forked(min(self.config.shutdown_timeout, SIGTERM_FLUSH)))
        elif self._backend is not None and not self.config.replica:
            self._switch(Publishing(self._backend))  # the parent published directly: so does the child

    def _flush_at_multiprocessing_exit(self) -> None:
        """In a multiprocessing child, set up: flush before it ends with ``os._exit``."""
        on_multiprocessing_exit(lambda: self._flush_forked(max(EXIT_FLUSH, self.config.shutdown_timeout)))

    def _flush_forked(self, timeout: float) -> bool:
        """A forked child ends: its last events to the hub. False when a
        flush was already under way (a SIGTERM during the exit's flush)."""
        role = self._role
        if not (isinstance(role, Joined) and role.name == "forked"):
            return True
        done = role.flush_before_exit(timeout)
        if done is None:
            return False
        if not done:
            logger.warning(
                "a forked child ended before the hub took all its events (%s); spooling the rest",
                role.link.status(),
            )
            role.spool_the_rest()
        return True


def _handover_until(decision: Decision) -> float | None:
    return decision.until if isinstance(decision, Wait) else None


def _status_method(training_system: Any) -> Any:
    method = getattr(training_system, "get_status", None)
    return method if callable(method) else None


def _after_fork_in_child() -> None:
    for server in list(_ALL_SERVERS):
        server._disown_after_fork()
