"""A clean host stop with joined processes still connected: the history goes
to one of them, which hosts next on the same ports and in the same epoch.

Experiment B's curves must not vanish because experiment A, which happened
to host, finished. The steps, on the stopping host's loop:

1. the ``shutdown`` event is committed; the hub's state (epoch, last seq,
   the ring's events, the run curves) and what the channel took from each
   source go to the successor (``handover``);
2. the registry record says who is taking over, so the other joiners wait
   for it instead of electing a host of their own;
3. the transports close (the ports are released), then the successor is told
   to ``go``: it binds the same ports, adopts the state and writes its record;
   the other joiners find it there and resend what the old host never
   acknowledged, which the successor takes once (it has the old host's
   per-source batch numbers).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..core.hub import Hub
from .host_channel import HostChannel
from .registry import HubRecord, Registry

__all__ = ["HANDOVER_WINDOW", "HandoverToSuccessor"]

logger = logging.getLogger(__name__)

#: How long the other joiners wait for the successor's record before they
#: elect a host themselves.
HANDOVER_WINDOW = 15.0


class HandoverToSuccessor:
    """Hands the history of ``hub`` to the channel's successor (see the module docstring)."""

    def __init__(
        self, hub: Hub, registry: Registry | None, record: HubRecord | None, ports: dict[str, int]
    ) -> None:
        self.hub = hub
        self.registry = registry
        self.record = record
        self.ports = ports
        self.successor: str | None = None
        self.successor_pid: int | None = None

    async def send_state(self, channel: HostChannel) -> None:
        successor = channel.successor()
        if successor is None:
            return
        state: dict[str, Any] = {**self.hub.state(), "acked": dict(channel.acked), "ports": self.ports}
        if not await channel.send(successor, {"op": "handover", "state": state}):
            logger.warning("could not hand the history over to the next host; it starts afresh")
            return
        self.successor = successor
        self.successor_pid = channel.sources[successor].pid
        if self.registry is not None and self.record is not None:
            pid = channel.sources[successor].pid
            until = time.time() + HANDOVER_WINDOW
            self.registry.write(self.record.replace(successor=pid, handover_until=until))
        logger.info("handing the hub over to pid %d", channel.sources[successor].pid)

    async def go(self, channel: HostChannel) -> None:
        if self.successor is not None:
            await channel.send(self.successor, {"op": "go"})
