"""What to do with one busy port: the port-conflict policy, applied.

Private to :mod:`stream_hub.ports`, which re-exports the public names and
describes the policies. The steps, in order: :func:`inspect` finds the holder
and asks the guards; the policy may refuse; :func:`free` ends the holder and
waits for the port; or, under ``"next"``, :func:`next_free` looks upward.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Collection

import psutil

from ._ports_free import listens_on, refusal, terminate
from ._ports_probe import (
    check_port,
    describe_process,
    get_process_using_port,
    is_port_in_use,
    own_socket_on,
    wait_port_free,
)
from .config import PORT_CONFLICT_POLICIES
from .errors import ConfigError, PortInUseError

__all__ = [
    "NEXT_PORT_SEARCH",
    "Conflict",
    "check_policy",
    "ensure_port_available",
    "free",
    "inspect",
    "is_production",
    "next_free",
    "policy_refusal",
]

# Records keep the public module's name (see _ports_probe).
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
    value = os.environ.get("ENVIRONMENT", "") if environment is None else environment
    return value.strip().lower() == "production"


def check_policy(policy: str) -> None:
    """Raise :class:`ConfigError` unless ``policy`` is a known port-conflict policy."""
    if policy not in PORT_CONFLICT_POLICIES:
        accepted = ", ".join(map(repr, PORT_CONFLICT_POLICIES))
        raise ConfigError("port_conflict", f"expected one of {accepted}, got {policy!r}")


def policy_refusal(policy: str, environment: str | None) -> str | None:
    """Why ``policy`` in ``environment`` forbids ending a holder, or ``None``."""
    if policy == "fail":
        return 'port_conflict="fail" never frees a port'
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
    pid = get_process_using_port(port, host)
    if pid is None and own_socket_on(port):
        pid = os.getpid()
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


def next_free(port: int, host: str, transport: str | None, exclude: Collection[int]) -> int:
    """The first free port above ``port`` not in ``exclude`` (logged), or raise."""
    last = min(port + NEXT_PORT_SEARCH, 65535)
    for candidate in range(port + 1, last + 1):
        if candidate not in exclude and not is_port_in_use(candidate, host):
            logger.warning(
                '%s busy; using port %d instead (port_conflict="next")',
                _label(port, transport),
                candidate,
            )
            return candidate
    pid = get_process_using_port(port, host)
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
    check_policy(policy)
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
