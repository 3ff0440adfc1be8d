"""Serving a hub: the machinery of the host role.

A :class:`ServingRuntime` owns what serving needs: the bound ports, the loop
thread, the notifier that commits on it, the three transports and the
channel joined processes publish through, and the store (open from the first
start to the last stop: a restart keeps it). Its steps, in the order they run::

    start(ports) -> bind (REST first) -> loop start -> _startup (attach the
                    notifier, start transports, open the channel, watch)
    stop()       -> _shutdown on the loop (hand over, a shutdown event,
                    close transports and channel) -> loop stop ->
                    release (detach) -> verify the ports free

What hosting means for a server (its record, its store's path, the hand-over,
the machine's metrics) is the :class:`~stream_hub.roles.hosting.Hosting`
role's; everything else (references, other roles) is the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from .config import StreamConfig, base_urls
from .errors import StreamHubError
from .ports import bind_port, verify_released
from .processes.host_channel import HostChannel
from .processes.joined import RESTART_WINDOW
from .runtime.loop import LoopThread, LoopThreadLeftBehind
from .runtime.notifier import LoopNotifier
from .store import HubStore
from .store.directory import DEFAULT_MAX_BYTES, DEFAULT_MAX_DAYS, is_default_store, new_store_file, prune
from .transports import Transports
from .transports.access import is_loopback_host
from .transports.params import ServerView

__all__ = ["BIND_ORDER", "Handover", "ServingRuntime", "announce", "warn_if_exposed"]

logger = logging.getLogger(__name__)

# Where the one "serving" line goes when the application configured no logging.
_STDERR = logging.StreamHandler()
_STDERR.setFormatter(logging.Formatter("%(message)s"))

WATCH_INTERVAL = 0.25  # seconds between listener health checks
# Of stop()'s timeout, the part streams get to flush; the rest stops the loop thread.
GRACEFUL_SHARE = 0.8
#: REST first: its port is the lock between hubs of one machine.
BIND_ORDER = ("rest", "sse", "ws")
# How long opening the store waits for another hub to let go of it: a
# successor waits for the host it takes over from to finish writing.
STORE_WAIT = 2.0
STORE_WAIT_SUCCESSOR = 15.0


class Handover(Protocol):
    """A hand-over of the history to a successor, in two steps on the loop."""

    async def send_state(self, channel: HostChannel) -> None:
        """Before the transports close: the successor gets the history."""

    async def go(self, channel: HostChannel) -> None:
        """Once the ports are released: the successor may bind them."""

    @property
    def successor_pid(self) -> int | None:
        """The process told to go on (it may hold the ports by the time they are verified)."""


class Service(Protocol):
    """What else feeds the hub while it is served, on the loop (a Redis
    replica): the hub's events then come from it, not from the intake."""

    async def start(self, notifier: LoopNotifier) -> None:
        """Before any listener accepts; call ``notifier.committed()`` after storing events."""

    async def close(self) -> None:
        """After the transports closed."""


class ServingRuntime:
    """The loop thread, transports and channel of a server while it hosts.

    Args:
        server: what the transports see of the server.
        transports: the server's transports (built once, reused by restarts).
        on_fault: called (on a thread of its own) when the loop thread dies or
            a listener stops serving.
    """

    def __init__(self, server: ServerView, transports: Transports, on_fault: Callable[[str], None]) -> None:
        self.server = server
        self.transports = transports
        self.on_fault = on_fault
        self.loop = LoopThread(on_crash=self._loop_crashed)
        self.notifier: LoopNotifier | None = None
        self.channel: HostChannel | None = None
        self.service: Service | None = None
        self.store: HubStore | None = None  # open from the first start to stop (restarts keep it)
        self.ports: dict[str, int] = {}
        self.started_at: float | None = None
        self.running = False
        #: Set by a stop() whose loop thread did not exit in time (see raise_if_left_behind).
        self.left_behind: LoopThreadLeftBehind | None = None
        self._sockets: dict[str, socket.socket] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._silence_task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.loop.is_alive()

    # -- start ------------------------------------------------------------------------------

    def start(
        self,
        ports: dict[str, int],
        channel: HostChannel,
        channel_path: Path | None,
        service: Service | None = None,
    ) -> None:
        """Bind ``ports`` (all or none), then serve them and the channel (and
        ``service``, whose events the hub serves instead of its intake's).

        Raises:
            PortInUseError: a port could not be bound (nothing stays bound).
        """
        self._bind(ports)
        cfg = self.server.config
        self.left_behind = None
        try:
            closer = functools.partial(self._close_leftovers, channel)
            loop = self.loop.start(closer, wait_previous=cfg.shutdown_timeout)
            self.notifier = LoopNotifier(
                self.server.hub, loop, cfg.busy_flush_interval, cfg.heartbeat_interval
            )
            self.channel = channel
            self.service = service
            self.loop.run(self._startup(channel_path), timeout=30)
        except BaseException:
            self._abort_start()
            raise
        self.running = True
        self.started_at = time.monotonic()
        if self.store is not None:  # a refused second writer says where this hub serves
            self.store.note_urls(base_urls(cfg.host, self.ports))

    def _bind(self, wanted: dict[str, int]) -> None:
        """Bind and listen on all three ports, REST first, or on none."""
        bound: dict[str, socket.socket] = {}
        try:
            for name in BIND_ORDER:
                bound[name] = bind_port(self.server.config.host, wanted[name], name)
        except BaseException:
            for sock in bound.values():
                sock.close()
            raise
        self._sockets = bound
        self.ports = {name: bound[name].getsockname()[1] for name in ("sse", "ws", "rest")}

    async def _startup(self, channel_path: Path | None) -> None:
        notifier = self.notifier
        assert notifier is not None and self.channel is not None
        if self.service is not None:
            notifier.attach(commits=False)
            await self.service.start(notifier)
        else:
            # The hub commits on this loop from now on, before any listener accepts:
            # no reader can ever see a commit running on a training thread.
            notifier.attach()
        await self.transports.start(self._sockets)
        await self.channel.start(channel_path)
        loop = asyncio.get_running_loop()
        self._watch_task = loop.create_task(self._watch(), name="stream-hub-watch")
        self._silence_task = loop.create_task(self._check_silence(), name="stream-hub-silence")

    async def _watch(self) -> None:
        """Notice a transport that stopped listening underneath us (within a second)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if not self.running or (self.notifier is not None and self.notifier.closing):
                continue
            broken = self.transports.broken()
            if broken:
                self.on_fault(f"{', '.join(broken)} listener stopped serving")
                return

    async def _check_silence(self) -> None:
        """Now and then, alert the live publishers that fell silent (the hub's
        silence rule, :meth:`Watch.check_silence`): on the loop, which commits,
        so the alerts' numbers follow the events the rule looked at."""
        hub = self.server.hub
        while True:
            await asyncio.sleep(hub.watch.rules.check_interval)
            if not self.running or (self.notifier is not None and self.notifier.closing):
                continue
            try:
                hub.check_silence(time.time(), self.server.live_tracks())
            except Exception:  # a bug in a rule must not end the checks, nor the loop
                logger.exception("the silence check failed")

    def _abort_start(self) -> None:
        """Undo a partial start: close listeners, stop the loop, free the ports."""
        try:
            if self.loop.is_alive():
                with contextlib.suppress(Exception):
                    self.loop.run(self._close_all(time.monotonic() + 0.5), timeout=5)
            with contextlib.suppress(LoopThreadLeftBehind):  # logged; it ends by itself
                self.loop.stop()
        finally:
            self._release()
            self.ports = {}

    # -- the store -------------------------------------------------------------------------------

    def open_store(
        self, path: str | Literal[False] | None, successor: bool = False, handed_over: bool = False
    ) -> bool:
        """Open the store at ``path`` (``None``: a new file of the default
        store; ``False``: none), if not open yet, and give the hub its
        history and archive, before serving; whether it opened now.
        ``handed_over``: the hub has just taken over a newer history.

        Raises:
            StoreError: an explicit store cannot be used (another hub writes
                it, ...). A ``successor`` (taking over from another host)
                hosts without it instead, after logging why, and so does a
                hub whose default store cannot be used: persistence by
                default never stops training.
        """
        if path is False or self.store is not None:
            return False
        default = path is None
        try:
            if path is None:
                path = new_store_file()
                prune(
                    self.server.config.store_max_bytes or DEFAULT_MAX_BYTES,
                    self.server.config.store_max_days or DEFAULT_MAX_DAYS,
                    keep=path,
                )
            store = HubStore(path, self.server.config, default=default or is_default_store(path))
            store.open(wait=STORE_WAIT_SUCCESSOR if successor else STORE_WAIT)
        except StreamHubError as exc:  # StoreError among them
            if not (successor or default):
                raise
            logger.error("%s; hosting without %s", exc, "the default store" if default else "the store")
            return False
        store.attach(self.server.hub, handed_over)
        self.store = store
        return True

    def settings(self) -> StreamConfig:
        """The server's config as this hub runs it (its record says it to
        joiners): with the store it writes, a successor's being its predecessor's."""
        config = self.server.config
        store = self.store.path if self.store is not None else config.store
        return config if store == config.store else config.replace(store=store)

    def close_store(self, timeout: float = 10.0, handing_over: bool = False) -> None:
        """Write what the store has queued, close it and let go of its lock
        (waiting at most ``timeout`` s; a slower disk finishes in the
        background); ``handing_over``: a successor continues the file."""
        store, self.store = self.store, None
        if store is not None:
            store.close(timeout, handing_over)

    # -- stop -----------------------------------------------------------------------------------

    def stop(self, timeout: float, reason: str, handover: Handover | None = None) -> dict[str, int]:
        """Stop serving within ``timeout`` s in total; returns the ports, verified free.

        With ``handover``, the history goes to a successor first, and it is
        told to go on once the ports are released.

        The loop thread gets what is left of ``timeout`` after the graceful
        part; if it has not exited by then it is left behind (it ends by
        itself; see :class:`~stream_hub.runtime.loop.LoopThread`), the stop
        completes without it and :attr:`left_behind` says so: the next start
        works either way.

        Raises:
            StreamHubError: a port is still bound afterwards.
        """
        ports = dict(self.ports)
        started = time.monotonic()
        # ``timeout`` bounds the whole stop: streams get most of it to flush,
        # the rest is kept for stopping the loop thread.
        deadline = started + timeout
        graceful = started + timeout * GRACEFUL_SHARE
        self.running = False
        try:
            if self.loop.is_alive():
                try:
                    left = max(0.01, graceful - time.monotonic())
                    self.loop.run(self._shutdown(reason, graceful, handover), timeout=left)
                except (TimeoutError, StreamHubError) as exc:
                    logger.warning("graceful shutdown incomplete (%s); stopping the loop anyway", exc)
                except Exception:  # a bug in a close step: the loop must stop all the same
                    logger.exception("graceful shutdown failed; stopping the loop anyway")
            try:
                self.loop.stop(timeout=max(0.01, deadline - time.monotonic()))
            except LoopThreadLeftBehind as exc:
                self.left_behind = exc
        finally:
            self._release()
            self.started_at = None
        # Handed over, the successor may have bound the ports already: that is the point.
        verify_released(
            self.server.config.host, ports, successor=handover.successor_pid if handover is not None else None
        )
        self.ports = {}
        took = (time.monotonic() - started) * 1000
        logger.info(
            "stream_hub stopped (%s) in %.1f ms; ports %s verified free", reason, took, sorted(ports.values())
        )
        return ports

    async def _shutdown(self, reason: str, deadline: float, handover: Handover | None) -> None:
        """On the loop: hand over if asked, announce, flush every stream, close
        every connection (streams still running at ``deadline`` are dropped)."""
        hub = self.server.hub
        channel = self.channel
        if channel is not None:
            # The joiners' rings, read one last time before the shutdown event
            # and the hand-over: a successor goes on from where this left them.
            channel.rings.stop()
        # Handing over, the hub lives on in the successor: clients should come back.
        handing_over = handover is not None and channel is not None and channel.successor() is not None
        farewell = {
            "reason": "handover" if handing_over else reason,
            "restart": reason == "restart" or handing_over,
        }
        if self.service is not None:
            hub.farewell("shutdown", farewell)  # this replica's clients only
        else:
            hub.submit("shutdown", None, None, farewell)
            hub.commit()
        if reason == "restart" and channel is not None:
            # Joined processes wait for this hub to come back instead of electing one.
            await channel.tell_all({"op": "restarting", "for": RESTART_WINDOW})
        if handover is not None and channel is not None:
            await handover.send_state(channel)  # the history, shutdown event included
        if self.notifier is not None:
            self.notifier.close()
        await self.transports.close(deadline)
        await self._close_service()
        if handover is not None and channel is not None:
            await handover.go(channel)
        if channel is not None:
            channel.close()

    def raise_if_left_behind(self) -> None:
        """Raise (once) the error of a stop whose loop thread was left behind."""
        error, self.left_behind = self.left_behind, None
        if error is not None:
            raise error

    def _close_leftovers(self, channel: HostChannel, loop: asyncio.AbstractEventLoop) -> None:
        """On a loop thread that is ending, however it ends: stop accepting and
        drop every connection still open on it, joiners' included."""
        try:
            self.transports.abandon(loop)
        finally:
            channel.close()

    async def _close_all(self, deadline: float) -> None:
        await self.transports.close(deadline)
        await self._close_service()
        if self.channel is not None:
            self.channel.close()

    async def _close_service(self) -> None:
        service, self.service = self.service, None
        if service is not None:
            try:
                await service.close()
            except Exception:  # stopping goes on whatever the service did
                logger.exception("closing %r failed", service)

    def _release(self) -> None:
        """Detach the hub from the (stopped) loop and close our listening
        sockets; once the loop thread has ended, close the channel's too if
        the loop could not (a closed loop's listener closes from any thread)."""
        if self.notifier is not None:
            self.notifier.detach()
        self.notifier = None
        for sock in self._sockets.values():
            sock.close()
        self._sockets = {}
        if self.channel is not None and self.loop.thread is None and self.loop.left_behind is None:
            self.channel.close()

    def _loop_crashed(self, exc: BaseException) -> None:
        # On the dying loop thread: it can no longer serve anything.
        if self.running:
            self.on_fault(f"event-loop thread died: {exc!r}")

    def run_on_loop(self, coro: Awaitable[Any], timeout: float) -> Any:
        """Run ``coro`` on the loop and wait for its result (another thread)."""
        return self.loop.run(coro, timeout=timeout)  # type: ignore[arg-type]


def warn_if_exposed(cfg: StreamConfig) -> None:
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


def announce(urls: dict[str, str]) -> None:
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
