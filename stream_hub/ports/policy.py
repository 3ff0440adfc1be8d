"""What to do with one busy port: the port-conflict policy, applied.

Part of :mod:`stream_hub.ports`, which re-exports the public names and
describes the policies. The steps, in order: :func:`inspect` finds the holder
and asks the guards; the policy may refuse; :func:`free` ends the holder and
waits for the port; or, under ``"next"``, :func:`next_free` looks upward.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping

import psutil

from ..config import check_port_conflict
from ..config import is_production as _configured_is_production
from ..errors import ConfigError, PortInUseError
from .kill import listens_on, refusal, terminate
from .probe import (
    check_port,
    describe_process,
    find_holder,
    get_process_using_port,
    is_port_in_use,
    looks_like_stream_hub,
    wait_port_free,
)

__all__ = [
    "NEXT_PORT_SEARCH",
    "Conflict",
    "PortManager",
    "PortStatus",
    "ensure_port_available",
    "free",
    "inspect",
    "is_production",
    "next_free",
    "policy_refusal",
]

# Records keep the public module's name (see probe.py).
logger = logging.getLogger("stream_hub.ports")

#: How many ports above a busy one the ``"next"`` policy tries.
NEXT_PORT_SEARCH = 100
# A server may hand its listening socket to forked workers; after the first
# holder ends, the next one shows up. Bounded so a respawning supervisor cannot
# keep us killing forever.
_MAX_HOLDERS = 4
# After the holder has exited the kernel normally releases the port at once;
# this is only a safety margin for slow platforms.
_RELEASE_WAIT = 2.0
_TRANSPORT_NAMES = ("sse", "ws", "rest")


def is_production(environment: str | None = None) -> bool:
    """Whether ``environment`` (default: ``$ENVIRONMENT``) is ``production``, any case."""
    return _configured_is_production(environment)


def policy_refusal(policy: str, environment: str | None) -> str | None:
    """Why ``policy`` in ``environment`` forbids ending a holder, or ``None``."""
    if policy in ("fail", "join"):
        return f'port_conflict="{policy}" never frees a port'
    if policy == "auto" and is_production(environment):
        return 'ENVIRONMENT=production, where stream_hub never kills processes (port_conflict="auto")'
    return None


def _label(port: int, transport: str | None) -> str:
    return f"{transport} port {port}" if transport else f"port {port}"


@dataclasses.dataclass
class Conflict:
    """A busy port, its holder and, if it must not be ended, why."""

    port: int
    host: str
    transport: str | None
    pid: int | None
    process: str | None
    proc: psutil.Process | None
    refusal: str | None

    def error(self, reason: str | None) -> PortInUseError:
        return PortInUseError(
            self.port,
            self.pid,
            self.process,
            host=self.host,
            reason=reason,
            transport=self.transport,
        )


def inspect(port: int, host: str, transport: str | None) -> Conflict:
    """Find who holds a busy port and whether the guards let us end it (logs both)."""
    label = _label(port, transport)
    logger.warning("%s on %s busy", label, host)
    pid = find_holder(port, host)
    if pid is None:
        logger.warning("%s: no listening process visible to this user", label)
        return Conflict(
            port,
            host,
            transport,
            None,
            None,
            None,
            "no listening process could be identified: it may belong to another user, "
            "or be a socket that is bound but not listening (possibly in this very process)",
        )
    process = describe_process(pid)
    logger.info("%s held by pid %d (%s)", label, pid, process or "unknown")
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:  # it just exited; the caller re-checks the port
        return Conflict(port, host, transport, pid, process, None, None)
    except psutil.Error as exc:
        return Conflict(port, host, transport, pid, process, None, f"cannot inspect it ({exc})")
    reason = refusal(proc)
    if reason is None and not listens_on(proc, port):
        reason = f"pid {pid} is not (visibly) listening on port {port}"
    return Conflict(port, host, transport, pid, process, proc, reason)


def free(conflict: Conflict, timeout: float) -> None:
    """End the holder(s) of a busy port and wait until it is bindable, or raise."""
    label = _label(conflict.port, conflict.transport)
    for _ in range(_MAX_HOLDERS):
        if conflict.refusal is not None:
            raise conflict.error(conflict.refusal)
        if conflict.proc is not None and not terminate(conflict.proc, timeout, label):
            raise conflict.error(f"pid {conflict.pid} did not exit after SIGTERM and SIGKILL")
        if wait_port_free(conflict.port, conflict.host, _RELEASE_WAIT):
            logger.info("%s is free", label)
            return
        # Still held: typically a forked worker that shares the listening socket.
        conflict = inspect(conflict.port, conflict.host, conflict.transport)
    raise conflict.error(f"still held after ending {_MAX_HOLDERS} processes")


def next_free(
    port: int, host: str, transport: str | None, exclude: Collection[int], *, policy: str | None = "next"
) -> int:
    """The first free port above ``port`` not in ``exclude``, or raise.

    Logged as a choice of ``policy`` (None: the caller says why it moves)."""
    last = min(port + NEXT_PORT_SEARCH, 65535)
    for candidate in range(port + 1, last + 1):
        if candidate not in exclude and not is_port_in_use(candidate, host):
            if policy is not None:
                logger.warning(
                    '%s busy; using port %d instead (port_conflict="%s")',
                    _label(port, transport),
                    candidate,
                    policy,
                )
            return candidate
    pid = find_holder(port, host)
    raise PortInUseError(
        port,
        pid,
        describe_process(pid) if pid is not None else None,
        host=host,
        transport=transport,
        reason=f"no free port in {port + 1}-{last} either",
    )


def ensure_port_available(
    port: int,
    host: str = "127.0.0.1",
    policy: str = "auto",
    environment: str | None = None,
    *,
    transport: str | None = None,
    exclude: Collection[int] = (),
    timeout: float = 5.0,
) -> int:
    """Make ``port`` usable under ``policy`` and return the port to bind.

    Returns ``port`` itself when it is free or was freed, and ``0`` untouched
    for port 0 (any free port). With policy ``"next"`` a busy port (or one in
    ``exclude``, the ports already taken by sibling transports) is replaced by
    the first free port above it, at most :data:`NEXT_PORT_SEARCH` ports up; it
    is free when checked, so bind it promptly. ``environment`` ``None`` reads
    ``$ENVIRONMENT``. ``timeout`` is how long each signal may take to work.
    ``transport`` (``"sse"``, ``"ws"``, ``"rest"``) only labels logs and errors.

    Raises:
        PortInUseError: the policy or a guard forbids freeing the port, the
            holder survived SIGKILL, or ``"next"`` found no free port.
        ConfigError: ``policy`` is unknown, or ``port`` is in ``exclude``
            under a policy other than ``"next"``.
        ValueError: ``port`` is not 0-65535.
    """
    check_port_conflict(policy)
    check_port(port)
    if port == 0:
        return 0
    if port in exclude:
        if policy != "next":
            field = f"{transport}_port" if transport in _TRANSPORT_NAMES else "port"
            raise ConfigError(field, f"port {port} is already used by another transport")
        return next_free(port, host, transport, exclude)
    if not is_port_in_use(port, host):
        return port
    if policy == "next":
        inspect(port, host, transport)  # logs who holds it
        return next_free(port, host, transport, exclude)
    conflict = inspect(port, host, transport)
    reason = policy_refusal(policy, environment) or conflict.refusal
    if reason is not None:
        raise conflict.error(reason)
    free(conflict, timeout)
    return port


# -- the three ports of a server, grouped -------------------------------------------


@dataclasses.dataclass(frozen=True)
class PortStatus:
    """What :meth:`PortManager.check` saw on one port.

    ``pid``/``process`` are ``None`` when the port is free or the holder is not
    visible; ``is_stream_hub`` is true when the holder's command line mentions
    ``stream_hub`` or ``stream-hub``.
    """

    port: int
    in_use: bool
    pid: int | None = None
    process: str | None = None
    is_stream_hub: bool = False


class PortManager:
    """The port functions bound to one host, policy and environment.

    ``environment`` ``None`` reads ``$ENVIRONMENT`` at each call. ``timeout`` is
    how long SIGTERM (then SIGKILL) may take per holder.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        policy: str = "auto",
        environment: str | None = None,
        *,
        timeout: float = 5.0,
    ) -> None:
        check_port_conflict(policy)
        self.host = host
        self.policy = policy
        self.environment = environment
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"PortManager(host={self.host!r}, policy={self.policy!r})"

    def is_port_in_use(self, port: int) -> bool:
        """See :func:`is_port_in_use`."""
        return is_port_in_use(port, self.host)

    def get_process_using_port(self, port: int) -> int | None:
        """See :func:`get_process_using_port`."""
        return get_process_using_port(port, self.host)

    def check(self, port: int) -> PortStatus:
        """Whether ``port`` is in use and by whom. Never signals anything."""
        if not is_port_in_use(port, self.host):
            return PortStatus(port, False)
        pid = find_holder(port, self.host)
        if pid is None:
            return PortStatus(port, True)
        return PortStatus(port, True, pid, describe_process(pid), looks_like_stream_hub(pid))

    def ensure(self, port: int, *, transport: str | None = None, exclude: Collection[int] = ()) -> int:
        """:func:`ensure_port_available` with this manager's settings."""
        return ensure_port_available(
            port,
            self.host,
            self.policy,
            self.environment,
            transport=transport,
            exclude=exclude,
            timeout=self.timeout,
        )

    def resolve(self, ports: Mapping[str, int]) -> dict[str, int]:
        """The ports to bind for a server, e.g. ``{"sse": 8888, "ws": 8889, "rest": 8890}``.

        Every port is examined before anything is signalled, so a refusal on
        the last port leaves the holders of the others untouched, and nothing
        is bound here. Under ``"next"`` the returned non-zero ports are
        distinct and never take a port another entry asked for. Port 0 stays 0.

        Raises:
            PortInUseError: for the first port that cannot be made available.
            ConfigError: two entries ask for the same non-zero port.
        """
        _check_duplicates(ports)
        busy = [name for name, port in ports.items() if is_port_in_use(port, self.host)]
        if not busy:
            return dict(ports)
        if self.policy == "next":
            return self._resolve_next(ports)
        conflicts = [inspect(ports[name], self.host, name) for name in busy]
        for conflict in conflicts:
            reason = policy_refusal(self.policy, self.environment) or conflict.refusal
            if reason is not None:
                raise conflict.error(reason)
        for conflict in conflicts:
            free(conflict, self.timeout)
        return dict(ports)

    def _resolve_next(self, ports: Mapping[str, int]) -> dict[str, int]:
        taken = {port for port in ports.values() if port}
        resolved: dict[str, int] = {}
        for name, port in ports.items():
            new = self.ensure(port, transport=name, exclude=taken - {port})
            resolved[name] = new
            if new:
                taken.add(new)
        return resolved


def _check_duplicates(ports: Mapping[str, int]) -> None:
    owner: dict[int, str] = {}
    for name, port in ports.items():
        check_port(port)
        if port and port in owner:
            raise ConfigError(
                f"{name}_port",
                f"port {port} is also {owner[port]}_port; each transport needs its own port",
            )
        owner[port] = name
