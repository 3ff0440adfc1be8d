"""A server's place among the processes of its user: the registry it meets
them in, the key of its configured ports, its join token, its record.

:class:`Membership` is a part of the server that outlives its roles (a
process keeps its key and token whether it hosts or is joined). What the
process does there is decided by the port resolver
(:mod:`stream_hub.roles.placement`); :meth:`Membership.meet` runs that
decision under the registry lock of the configured ports, so two processes
starting at once cannot both decide to host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

from ..config import StreamConfig
from ..errors import StreamHubError
from .handover import HANDOVER_WINDOW
from .registry import HubRecord, LockHolderStopped, Registry, new_token
from .rendezvous import my_record, rendezvous_key

__all__ = ["Membership"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest path a Unix socket can be bound at (``sun_path``, its final NUL aside).
_MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107


class Membership:
    """The registry, key, token and record of one server (see the module docstring)."""

    def __init__(self) -> None:
        self.token = new_token()
        self.key: str | None = None  # set once this server has met others in the registry
        self.record: HubRecord | None = None  # written while hosting
        #: The store of the hub this process joined (its record's): a successor writes it on.
        self.hub_store: str | Literal[False] | None = None
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry | None:
        """The registry, once :meth:`meet` or :meth:`channel_path` opened it."""
        return self._registry

    def _open(self) -> Registry:
        registry = self._registry = self._registry or Registry()
        return registry

    def meet(
        self,
        config: StreamConfig,
        decide: Callable[[HubRecord | None], T],
        act: Callable[[T], object],
        *,
        waiting: Callable[[T], float | None],
        without_lock: Callable[[HubRecord | None, int], T] | None = None,
    ) -> T:
        """With the registry lock of ``config``'s ports held: ``decide`` on its
        record, then ``act`` on the decision. While ``waiting(decision)``
        says a host hands over (a time until when), the lock is let go and
        asked for again, for at most the hand-over window.

        When the lock's holder is stopped (Ctrl-Z while it decided), nobody
        waits for it: ``without_lock(record, pid)`` decides instead, and
        ``act`` acts on that (when given; otherwise the error is raised).

        Raises:
            StreamHubError: the registry cannot be used, its lock stayed
                held, or a hand-over's successor never started.
        """
        registry = self._open()
        key = self.key = rendezvous_key(config)
        until = time.time() + HANDOVER_WINDOW
        pause = threading.Event()  # never set: a bounded wait for a successor's record
        delay = 0.01
        while True:
            try:
                locked = registry.lock(key)
                locked.__enter__()
            except LockHolderStopped as exc:
                if without_lock is None:
                    raise
                logger.warning("%s; not waiting for it", exc)
                decision = without_lock(registry.read(key), exc.pid)
                handover_until = waiting(decision)
                if handover_until is None:
                    act(decision)
                    return decision
            else:
                with contextlib.ExitStack() as stack:
                    stack.push(locked)
                    decision = decide(registry.read(key))
                    handover_until = waiting(decision)
                    if handover_until is None:
                        act(decision)
                        return decision
            if time.time() > min(until, handover_until):
                raise StreamHubError(f"the hub on {key} is handing over and its successor did not start")
            pause.wait(delay)
            delay = min(delay * 2, 0.25)

    def locked(self) -> bool:
        """Whether this server meets others in the registry (and so can elect)."""
        return self._registry is not None and self.key is not None

    def channel_path(self, owner: object) -> Path | None:
        """Where joiners reach a host: a Unix socket in the registry directory
        (None where there is none, or its path is too long for a socket: the
        channel then listens on loopback TCP)."""
        if not hasattr(socket, "AF_UNIX"):
            return None
        try:
            registry = self._open()
        except StreamHubError as exc:
            logger.warning("%s; joined processes reach this hub over loopback TCP", exc)
            return None
        path = registry.channel_path(self.key or f"pid{os.getpid()}-{id(owner):x}")
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            logger.info(
                "%s is too long for a Unix socket; joined processes reach this hub over loopback TCP", path
            )
            return None
        return path

    def record_host(self, config: StreamConfig, ports: Mapping[str, int], epoch: str, channel: str) -> None:
        """Hosting now: write this process's record (when it met others there)."""
        if self._registry is None or self.key is None:
            return
        self.record = my_record(self.key, config, ports, epoch, self.token, channel)
        self._registry.write(self.record)

    def mark_restarting(self, window: float) -> None:
        """Restarting in place: newcomers wait for this process (its record
        names it as its own successor) rather than take the ports meanwhile."""
        if self._registry is None or self.record is None:
            return
        until = time.time() + window
        self._registry.write(self.record.replace(successor=os.getpid(), handover_until=until))

    def forget_host(self) -> None:
        """Stopped hosting without a successor: remove this process's record."""
        if self._registry is not None and self.key is not None:
            self._registry.remove(self.key, os.getpid())
        self.record = None
