"""How this process takes part in the hub of its ports: through the registry
it hosts or joins, it changes role when its host hands over or dies, and a
forked child forwards to its parent's hub.

:class:`Membership` is the part of :class:`~stream_hub.TrainingStreamServer`
that deals with other processes; the server itself keeps the lifecycle
(:meth:`_host_on`, stopping, references).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..config import StreamConfig
from ..core.hub import Hub
from ..errors import PortInUseError, StreamHubError
from ..hosting import HostRuntime
from .channel import JoinTarget, decode_events
from .handover import HANDOVER_WINDOW
from .joined import Forwarder
from .registry import HubRecord, Registry
from .rendezvous import HostOn, JoinHub, decide, rendezvous_key, resolve_ports

__all__ = ["Membership", "configured_ports"]

logger = logging.getLogger(__name__)


class Membership:
    """The server's roles among the processes of its user (a mixin of the server)."""

    config: StreamConfig
    hub: Hub
    _host: HostRuntime
    _lifecycle: threading.RLock
    _role: str | None
    _forwarder: Forwarder | None
    _registry: Registry | None
    _key: str | None
    _record: HubRecord | None
    _token: str
    # The store of the hub this process joined (its record's): a successor writes it on.
    _hub_store: str | None = None

    def _host_on(
        self, ports: dict[str, int], state: dict[str, Any] | None = None, successor: bool = False
    ) -> None:
        raise NotImplementedError  # the server's

    @property
    def ports(self) -> dict[str, int]:
        raise NotImplementedError  # the server's

    @property
    def urls(self) -> dict[str, str]:
        raise NotImplementedError  # the server's

    def _start_with_registry(self) -> None:
        registry = self._registry = self._registry or Registry()
        key = self._key = rendezvous_key(self.config)
        until = time.time() + HANDOVER_WINDOW
        pause = threading.Event()  # never set: a bounded wait for a successor's record
        delay = 0.01
        while True:
            with registry.lock(key):
                decision = decide(self.config, registry, key)
                if isinstance(decision, HostOn):
                    self._host_on(decision.ports)
                    return
                if isinstance(decision, JoinHub):
                    self._join(decision.target)
                    return
            if time.time() > min(until, decision.until):
                raise StreamHubError(f"the hub on {key} is handing over and its successor did not start")
            pause.wait(delay)
            delay = min(delay * 2, 0.25)

    def _channel_path(self) -> Path | None:
        """Where joiners reach this host: a Unix socket in the registry directory
        (None where there is none: the channel then listens on loopback TCP)."""
        if not hasattr(socket, "AF_UNIX"):
            return None
        try:
            registry = self._registry = self._registry or Registry()
        except StreamHubError as exc:
            logger.warning("%s; joined processes reach this hub over loopback TCP", exc)
            return None
        return registry.channel_path(self._key or f"pid{os.getpid()}-{id(self):x}")

    def _welcome(self) -> dict[str, Any]:
        return {"epoch": self.hub.epoch, "pid": os.getpid(), "ports": self.ports, "urls": self.urls}

    def _join(self, target: JoinTarget, role: str = "joined") -> None:
        intake = self.hub.intake
        forwarder = Forwarder(
            intake,
            target,
            self._find_host,
            take_over=self._take_over if role == "joined" else None,
            role=role,
            rank=intake.rank,
        )
        intake.set_sink(forwarder.take, numbered=False)
        self._forwarder = forwarder
        self._hub_store = target.settings.get("store") or self._hub_store
        self._role = role
        forwarder.start()
        logger.info("joined the stream_hub hub of pid %d: dashboard %s/", target.pid, target.urls.get("rest"))
        differ = [n for n, v in target.settings.items() if getattr(self.config, n, None) != v]
        if differ:
            logger.warning(
                "this process's config differs from the hub's in %s; the hub's settings apply "
                "(the hub has %s)",
                ", ".join(differ),
                ", ".join(f"{n}={target.settings[n]!r}" for n in differ),
            )

    # -- changing roles (the forwarder's thread) ----------------------------------------------

    def _find_host(self) -> JoinTarget | None:
        """The host is lost: join whoever hosts now, or host (a forked child never does)."""
        registry, key = self._registry, self._key
        if registry is None or key is None or not self._lifecycle.acquire(blocking=False):
            return None
        try:
            with registry.lock(key):
                may_host = self._role == "joined"
                config = self.config if may_host else self.config.replace(port_conflict="join")
                try:
                    decision = decide(config, registry, key)
                except StreamHubError:
                    return None
                if isinstance(decision, JoinHub):
                    return decision.target if decision.target.pid != os.getpid() else None
                if isinstance(decision, HostOn):
                    logger.warning("the hub's host is gone; this process (pid %d) hosts now", os.getpid())
                    self._become_host(decision.ports, None)
                return None
        finally:
            self._lifecycle.release()

    def _take_over(self, state: dict[str, Any]) -> None:
        """The host handed its history to this process: host it, same ports, same epoch."""
        if not self._lifecycle.acquire(blocking=False):
            return  # this process is stopping
        try:
            registry, key = self._registry, self._key
            if registry is None or key is None:
                self._become_host(dict(state["ports"]), state)
                return
            with registry.lock(key):
                self._become_host(dict(state["ports"]), state)
        finally:
            self._lifecycle.release()

    def _become_host(self, ports: dict[str, int], state: dict[str, Any] | None) -> None:
        forwarder, self._forwarder = self._forwarder, None
        left = forwarder.close(0.0) if forwarder is not None else []
        acked = int((state or {}).get("acked", {}).get(forwarder.source, 0)) if forwarder is not None else 0
        self._role = None
        try:
            self._host_on(ports, state, successor=True)
        except PortInUseError:
            self._host_on(resolve_ports(self.config, ports), state, successor=True)
        for batch in left:
            if batch.n > acked:
                self.hub.submit_many(decode_events(batch.events))

    def _fork_target(self) -> JoinTarget | None:
        """The hub a forked child sends to: its parent's, or its parent's host."""
        if self._forwarder is not None:
            return self._forwarder.target
        channel = self._host.channel
        if self._role != "host" or channel is None or not channel.address:
            return None
        return JoinTarget(channel.address, self._token, os.getpid(), self.ports, self.urls, self.hub.epoch)


def configured_ports(config: StreamConfig) -> dict[str, int]:
    return {"sse": config.sse_port, "ws": config.ws_port, "rest": config.rest_port}
