"""The machine as the port resolver sees it: the real :class:`~stream_hub.roles.placement.Facts`.

Each answer is looked up when asked (sockets, ``psutil``, a ``/health``
probe), so :func:`~stream_hub.roles.placement.place` sees the machine as it
is at the moment it decides. What the resolver decides to do about a holder
is done by :func:`act_before_binding`, not here.
"""

from __future__ import annotations

import dataclasses
import os
import time

from ..config import StreamConfig
from ..ports.policy import free, inspect, is_production, next_free
from ..ports.probe import is_port_in_use
from ..processes.channel import JoinTarget
from ..processes.registry import HubRecord, Registry
from ..processes.rendezvous import end_wedged_hub, probe, to_target
from .placement import Holder, Host, moved_off

__all__ = ["LiveFacts", "act_before_binding"]

#: How long each signal to a holder the ``"free"`` policy ends may take to work.
EVICT_TIMEOUT = 5.0


class LiveFacts:
    """The real answers, for servers bound to ``host``."""

    def __init__(self, host: str) -> None:
        self.host = host

    @property
    def production(self) -> bool:
        return is_production()

    @property
    def now(self) -> float:
        return time.time()

    @property
    def my_pid(self) -> int:
        return os.getpid()

    def in_use(self, port: int) -> bool:
        return bool(port) and is_port_in_use(port, self.host)

    def holder(self, port: int, transport: str) -> Holder:
        conflict = inspect(port, self.host, transport)
        return Holder(port, transport, conflict.pid, conflict.process, conflict.refusal)

    def next_free(self, port: int, transport: str, exclude: set[int]) -> int:
        return next_free(port, self.host, transport, exclude, policy=None)

    def hub_state(self, record: HubRecord, stale_timeout: float) -> str:
        return probe(record, stale_timeout)

    def target(self, record: HubRecord) -> JoinTarget:
        return to_target(record)


def act_before_binding(decision: Host, config: StreamConfig, registry: Registry | None) -> Host:
    """Do what ``decision`` says must happen before its ports are bound: end
    a wedged hub, end the holders the ``"free"`` policy evicts, forget a
    stale record. Returns the decision to bind: the same, or with its ports
    moved off what holds them when a recorded hub was not ended after all
    (it did not hold its port: someone else does, and is never ended).

    Raises:
        PortInUseError: a holder could not be ended (a guard refused, or it survived SIGKILL).
    """
    if decision.end_wedged is not None and not end_wedged_hub(decision.end_wedged, config):
        decision = dataclasses.replace(
            decision, ports=moved_off(config, decision.ports, LiveFacts(config.host)), end_wedged=None
        )
    for holder in decision.evict:
        if is_port_in_use(holder.port, config.host):  # it may have let go meanwhile
            free(inspect(holder.port, config.host, holder.transport), EVICT_TIMEOUT)
    if decision.forget is not None and registry is not None:
        registry.remove(decision.forget.key, decision.forget.pid)
    return decision
