"""The one port resolver: given a config, the registry's record and what
holds the ports, which ports does this process use and in what role.

:func:`place` is a pure decision: everything it needs to know about the
machine comes through a :class:`Facts` object (the real one probes sockets
and processes, :mod:`stream_hub.roles.facts`; unit tests pass plain values),
and it changes nothing. The server acts on the :data:`Decision` it returns
(:meth:`stream_hub.server.TrainingStreamServer.start`): ends the holders it
names, forgets a stale record, then builds the role.

The inputs, in the order they are looked at:

1. a Redis backend without a replica: publish, serve nothing;
2. a restart: the ports this server hosted on, again;
3. a successor taking over a hand-over: the predecessor's ports (moved off
   the ones something else took meanwhile);
4. the registry (``port_conflict`` ``"auto"`` or ``"join"`` with fixed
   ports): a host handing over -> wait; a live hub of this user, or a busy
   one (it does not answer but works) -> join; a dead one or one that serves
   nothing -> forget its record and host; a wedged one (no answer, no CPU,
   asleep) -> end it in development (refuse in production) and host on its
   ports; anything else holding the ports — a stopped hub, a foreign
   program — is never ended: development takes the next free ports,
   production refuses;
5. otherwise (some port is 0, or another policy): ``"auto"`` moves off
   what holds a port as in 4 (never ending it); ``"fail"`` and ``"join"``
   refuse a busy port, ``"free"`` ends its holder (the guards permitting),
   ``"next"`` takes the next free port. Port 0 is never busy.

A forked child's role is not placed here: it forwards to whatever its
parent's hub is (:meth:`stream_hub.roles.base.Role.fork_target`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Set
from typing import Protocol

from ..config import StreamConfig
from ..errors import ConfigError, PortInUseError, StreamHubError, port_holder
from ..processes.channel import JoinTarget
from ..processes.registry import HubRecord

__all__ = [
    "BIND_ORDER",
    "Decision",
    "Facts",
    "Holder",
    "Host",
    "Join",
    "Publish",
    "Wait",
    "configured_ports",
    "moved_off",
    "place",
    "uses_registry",
]

logger = logging.getLogger(__name__)

#: REST first: its port is the lock between hubs of one machine.
BIND_ORDER = ("rest", "sse", "ws")


@dataclasses.dataclass(frozen=True)
class Holder:
    """A process holding a port this server wants, and whether it may be ended."""

    port: int
    transport: str
    pid: int | None
    process: str | None
    #: Why it must not be ended (a guard: another user, an ancestor, ...), or None.
    refusal: str | None = None

    def error(self, reason: str) -> PortInUseError:
        return PortInUseError(self.port, self.pid, self.process, transport=self.transport, reason=reason)


@dataclasses.dataclass(frozen=True)
class Publish:
    """Send events to the Redis backend; serve nothing."""


@dataclasses.dataclass(frozen=True)
class Host:
    """Serve the hub on ``ports`` (resolved, not yet bound).

    Before binding: end ``end_wedged`` (a wedged hub of this user; its ports are
    then this hub's), end each of ``evict`` (the ``"free"`` policy), and
    forget the registry record ``forget`` (its process is gone or serves
    nothing any more)."""

    ports: dict[str, int]
    evict: tuple[Holder, ...] = ()
    end_wedged: HubRecord | None = None
    forget: HubRecord | None = None


@dataclasses.dataclass(frozen=True)
class Join:
    """Forward to the live hub ``target``."""

    target: JoinTarget


@dataclasses.dataclass(frozen=True)
class Wait:
    """A host is handing over to a successor until ``until`` (a time): ask again shortly."""

    until: float


Decision = Publish | Host | Join | Wait


class Facts(Protocol):
    """What :func:`place` needs to know about the machine."""

    @property
    def production(self) -> bool:
        """Whether ``ENVIRONMENT=production`` (no process is ever ended, no port moved)."""

    @property
    def now(self) -> float:
        """The wall-clock time (records carry wall-clock deadlines)."""

    @property
    def my_pid(self) -> int: ...

    def in_use(self, port: int) -> bool:
        """Whether ``port`` cannot be bound (port 0 never is)."""

    def holder(self, port: int, transport: str) -> Holder:
        """Who holds a busy ``port``, and the guards' word on ending it."""

    def next_free(self, port: int, transport: str, exclude: set[int]) -> int:
        """The first free port above ``port`` not in ``exclude`` (raises
        :class:`~stream_hub.errors.PortInUseError` when there is none)."""

    def hub_state(self, record: HubRecord, stale_timeout: float) -> str:
        """What the hub a record names is: ``live``, ``busy``, ``wedged``,
        ``dead``, ``gone``, ``stopped`` or ``foreign``
        (:func:`stream_hub.processes.rendezvous.probe`)."""

    def target(self, record: HubRecord) -> JoinTarget:
        """How to reach the hub a live record names."""


def configured_ports(config: StreamConfig) -> dict[str, int]:
    return {"sse": config.sse_port, "ws": config.ws_port, "rest": config.rest_port}


def uses_registry(config: StreamConfig) -> bool:
    """Whether a server with ``config`` meets the user's other processes
    through the registry (fixed ports, ``port_conflict`` ``"auto"``/``"join"``)."""
    return config.port_conflict in ("auto", "join") and all(configured_ports(config).values())


def place(
    config: StreamConfig,
    facts: Facts,
    *,
    record: HubRecord | None = None,
    restart_ports: Mapping[str, int] | None = None,
    successor_ports: Mapping[str, int] | None = None,
    may_host: bool = True,
    lock_held_by_stopped: int | None = None,
) -> Decision:
    """Where this process goes (see the module docstring).

    Args:
        config: the server's settings.
        facts: what holds the ports, and what a record's hub is now.
        record: the registry's record for these configured ports, read with
            its lock held (used only when :func:`uses_registry`).
        restart_ports: a restart: the ports hosted on until now.
        successor_ports: taking over a hand-over: the predecessor's ports.
        may_host: False for a process that must not host (a forked child
            looking for its parent's hub's successor): where it would host,
            :class:`StreamHubError` is raised instead.
        lock_held_by_stopped: the pid of a stopped process holding the
            registry lock (decided without it): treated like a stopped hub
            on the configured ports — a live hub is still joined, otherwise
            development takes other ports and production refuses.

    Raises:
        PortInUseError: the policy (or production) refuses a busy port.
        StreamHubError: nothing to join where only joining is allowed.
        ConfigError: two transports ask for the same port.
    """
    if config.backend is not None and not config.replica:
        return Publish()
    if restart_ports:
        return Host(dict(restart_ports))
    if successor_ports is not None:
        return Host(_moved_off(config, successor_ports, facts))
    wanted = configured_ports(config)
    if uses_registry(config):
        decision = _place_with_registry(config, facts, record, wanted, may_host)
        if lock_held_by_stopped is None or not isinstance(decision, Host):
            return decision
        if facts.production:
            raise StreamHubError(
                f"pid {lock_held_by_stopped} is stopped (Ctrl-Z?) holding the registry lock of ports "
                f"{config.sse_port}/{config.ws_port}/{config.rest_port}; resume or end it "
                "(ENVIRONMENT=production never takes other ports by itself)"
            )
        avoid = set(wanted.values())
        return dataclasses.replace(decision, ports=_moved_off(config, wanted, facts, avoid=avoid))
    if not may_host:
        raise StreamHubError("no hub to forward to, and this process may not host")
    if config.port_conflict == "auto":
        return Host(_moved_off(config, wanted, facts))
    return _place_by_policy(config, facts, wanted)


def _place_with_registry(
    config: StreamConfig, facts: Facts, record: HubRecord | None, wanted: dict[str, int], may_host: bool
) -> Decision:
    forget: HubRecord | None = None
    end_wedged: HubRecord | None = None
    if record is not None:
        if record.successor is not None and (record.handover_until or 0) > facts.now:
            return Wait(record.handover_until or 0)
        state = facts.hub_state(record, config.stale_timeout)
        logger.debug("hub record %s names pid %d: %s", record.key, record.pid, state)
        if state in ("live", "busy"):
            # A busy hub answers once its long call returns: joining it buffers
            # until then (taking other ports would split the job in two).
            if record.pid == facts.my_pid:
                raise StreamHubError("the registry names this very process as the hub")
            return Join(facts.target(record))
        if state in ("dead", "gone"):
            forget = record
        elif state == "wedged":
            label = f"wedged stream_hub hub (pid {record.pid}, REST port {record.ports.get('rest')})"
            if facts.production:
                raise PortInUseError(
                    record.ports.get("rest", 0),
                    record.pid,
                    host=config.host,
                    transport="rest",
                    reason=f"a {label} holds it, and ENVIRONMENT=production never ends a process",
                )
            end_wedged = forget = record
    if config.port_conflict == "join" or not may_host:
        raise StreamHubError(
            f'port_conflict="join": no live stream_hub hub of this user to join on ports '
            f"{config.sse_port}/{config.ws_port}/{config.rest_port} (start one with `stream-hub serve`)"
        )
    # A wedged hub's ports are this hub's once it has been ended.
    freed = set(end_wedged.ports.values()) if end_wedged is not None else set()
    return Host(_moved_off(config, wanted, facts, freed), end_wedged=end_wedged, forget=forget)


def _moved_off(
    config: StreamConfig,
    wanted: Mapping[str, int],
    facts: Facts,
    freed: Set[int] = frozenset(),
    avoid: Set[int] = frozenset(),
) -> dict[str, int]:
    """Each wanted port if free; if something else holds it (or it is to be
    avoided), the next free one in development (never ending the holder), a
    refusal in production. ``freed``: ports a holder about to be ended gives back."""
    taken: set[int] = set()
    out: dict[str, int] = {}
    for name in BIND_ORDER:
        port = wanted[name]
        if port and (port in taken or port in avoid or (port not in freed and facts.in_use(port))):
            holder = facts.holder(port, name)
            if facts.production:
                raise holder.error(
                    "it is not a stream_hub hub this process can join, and ENVIRONMENT=production "
                    "never takes other ports by itself"
                )
            new = facts.next_free(port, name, taken | set(avoid) | {p for p in wanted.values() if p != port})
            mine = holder.pid is not None and holder.pid == facts.my_pid
            if holder.pid is None or mine:
                what = port_holder(holder.pid, holder.process, facts.my_pid)
            else:
                what = f"pid {holder.pid} ({holder.process or 'command line not visible'})"
            logger.warning(
                "%s port %d is held by %s, which is not a hub to join; this hub takes port %d instead "
                "(other processes find it through the registry%s)",
                name,
                port,
                what,
                new,
                "" if mine else f"; `stream-hub ports --free {port}` would end the holder",
            )
            port = new
        out[name] = port
        if port:
            taken.add(port)
    return {name: out[name] for name in ("sse", "ws", "rest")}


def _place_by_policy(config: StreamConfig, facts: Facts, wanted: dict[str, int]) -> Host:
    """``port_conflict`` applied to each busy port, every port examined
    before anything is decided (a refusal on the last leaves the others' holders alone)."""
    _check_distinct(wanted)
    policy = config.port_conflict
    busy = [name for name in BIND_ORDER if wanted[name] and facts.in_use(wanted[name])]
    if not busy:
        return Host(dict(wanted))
    if policy == "next":
        taken = {port for port in wanted.values() if port}
        out = dict(wanted)
        for name in busy:
            facts.holder(wanted[name], name)  # logs who holds it
            out[name] = facts.next_free(wanted[name], name, taken)
            taken.add(out[name])
        return Host(out)
    holders = tuple(facts.holder(wanted[name], name) for name in busy)
    for holder in holders:
        if policy in ("fail", "join"):
            raise holder.error(f'port_conflict="{policy}" never frees a port')
        if holder.refusal is not None:
            raise holder.error(holder.refusal)
    return Host(dict(wanted), evict=holders)


def moved_off(config: StreamConfig, wanted: Mapping[str, int], facts: Facts) -> dict[str, int]:
    """``wanted``, each port something else holds moved to the next free one
    (development; production refuses), as :func:`place` does for a hub."""
    return _moved_off(config, wanted, facts)


def _check_distinct(ports: Mapping[str, int]) -> None:
    owner: dict[int, str] = {}
    for name in BIND_ORDER:
        port = ports[name]
        if port and port in owner:
            raise ConfigError(
                f"{name}_port", f"port {port} is also {owner[port]}_port; each transport needs its own port"
            )
        owner[port] = name
