"""Is a port free, who holds it, free it or refuse.

The server start path resolves all of its ports here *before binding any*, so a
blocked WebSocket port never leaves the SSE port bound. What happens to a busy
port depends on the policy (``StreamConfig.port_conflict``):

========  ==============================================================
``auto``  development: end the holder; production: refuse (the default)
``fail``  always refuse
``free``  always end the holder (the guards below still hold)
``next``  take the next free port upward (bounded search)
========  ==============================================================

Production means ``ENVIRONMENT=production`` (any case); anything else, or no
variable, is development. Whatever the policy, stream_hub never signals this
process, one of its ancestors, PID 1, another user's process, or a process that
is not listening on the port in question. Every refusal raises
:class:`~stream_hub.errors.PortInUseError`, whose message says what to do.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import psutil

from .config import PORT_CONFLICT_POLICIES
from .errors import ConfigError, KillRefusedError, PortInUseError

if TYPE_CHECKING:
    from .config import StreamConfig

__all__ = [
    "NEXT_PORT_SEARCH",
    "PortManager",
    "PortStatus",
    "describe_process",
    "ensure_port_available",
    "format_ports_report",
    "get_process_using_port",
    "is_port_in_use",
    "is_production",
    "kill_process",
    "kill_refusal_reason",
    "ports_report",
]

logger = logging.getLogger(__name__)

#: How many ports above a busy one the ``"next"`` policy tries.
NEXT_PORT_SEARCH = 100
# A server may hand its listening socket to forked workers; after the first
# holder ends, the next one shows up. Bounded so a respawning supervisor cannot
# keep us killing forever.
_MAX_HOLDERS = 4
# After the holder has exited the kernel normally releases the port at once;
# this is only a safety margin for slow platforms.
_RELEASE_WAIT = 2.0
_CONNECT_PROBE_TIMEOUT = 0.5
_LSOF_TIMEOUT = 5.0
_CMDLINE_LIMIT = 300
_TRANSPORT_NAMES = ("sse", "ws", "rest")


# -- is the port free? ---------------------------------------------------------


def is_port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` is taken for a TCP server.

    True when binding it the way our server does (``SO_REUSEADDR`` on POSIX,
    ``IPV6_V6ONLY`` for IPv6) would fail with "address in use", or when
    something accepts connections there (on macOS/BSD a wildcard listener does
    not stop a bind to a specific address). ``host`` may be an IPv4 or IPv6
    literal (``"::1"``, ``"[::1]"``), a name such as ``"localhost"`` (every
    address it resolves to is checked) or a wildcard (``"0.0.0.0"``, ``"::"``).
    Port 0 ("any free port") is never in use. A host that cannot be resolved or
    an address this machine does not have is reported as not in use: the bind
    itself will then give the real error.

    Raises:
        ValueError: ``port`` is not an integer from 0 to 65535.
    """
    _check_port(port)
    if port == 0:
        return False
    for family, sockaddr in _bind_addresses(host, port):
        verdict = _bind_verdict(family, sockaddr)
        if verdict is True:
            return True
        if verdict is False and _accepts_connections(family, sockaddr):
            return True
    return False


def _check_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")


def _strip_brackets(host: str) -> str:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def _bind_addresses(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    name = _strip_brackets(host) or None
    try:
        infos = socket.getaddrinfo(
            name, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except (OSError, UnicodeError):
        logger.debug("cannot resolve host %r", host)
        return []
    seen: list[tuple[int, tuple[Any, ...]]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in seen:
            seen.append((family, tuple(sockaddr)))
    return seen


def _is_addr_in_use(exc: OSError) -> bool:
    if exc.errno == errno.EADDRINUSE:
        return True
    # Windows reports ports in an excluded range (Hyper-V, WSL) as WSAEACCES.
    return getattr(exc, "winerror", None) in (10048, 10013)


def _bind_verdict(family: int, sockaddr: tuple[Any, ...]) -> bool | None:
    """True: address in use; False: bindable; None: fails for another reason."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name != "nt":
            # Like asyncio's create_server: ignore TIME_WAIT leftovers. On
            # Windows SO_REUSEADDR would let us bind over a live listener.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            return True if _is_addr_in_use(exc) else None
    return False


def _accepts_connections(family: int, sockaddr: tuple[Any, ...]) -> bool:
    target = sockaddr
    try:
        if _parse_ip(str(sockaddr[0])).is_unspecified:
            loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
            target = (loopback, *sockaddr[1:])
    except ValueError:
        pass
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(_CONNECT_PROBE_TIMEOUT)
        try:
            return sock.connect_ex(target) == 0
        except OSError:
            return False


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address with any ``%scope`` removed and IPv4-mapped IPv6 unwrapped."""
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# -- who holds it? -------------------------------------------------------------


def get_process_using_port(port: int, host: str | None = None) -> int | None:
    """The PID of the process listening on TCP ``port``, or ``None``.

    Uses ``psutil.net_connections``; only sockets in ``LISTEN`` state count.
    With ``host``, only listeners on an address of that host or on a wildcard
    address are considered. Where psutil may not see other processes' sockets
    (macOS without root) it falls back to ``lsof``. Never raises: any failure,
    or a holder this user cannot see, gives ``None``.
    """
    try:
        pids, unseen = _psutil_listeners(port, host)
    except Exception as exc:  # AccessDenied on macOS, or anything platform-specific
        logger.debug("psutil.net_connections failed (%s); trying lsof", exc)
        return _lsof_listener(port)
    if pids:
        return pids[0]
    return _lsof_listener(port) if unseen else None


def _psutil_listeners(port: int, host: str | None) -> tuple[list[int], bool]:
    matches = _address_matcher(host)
    pids: list[int] = []
    unseen = False
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if not matches(conn.laddr.ip):
            continue
        if conn.pid is None:
            unseen = True
        elif conn.pid not in pids:
            pids.append(conn.pid)
    return pids, unseen


def _address_matcher(host: str | None) -> Callable[[str], bool]:
    if host is None:
        return lambda ip: True
    wanted: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for _family, sockaddr in _bind_addresses(host, 0):
        try:
            wanted.add(_parse_ip(str(sockaddr[0])))
        except ValueError:
            continue
    if not wanted or any(ip.is_unspecified for ip in wanted):
        return lambda ip: True

    def matches(text: str) -> bool:
        try:
            ip = _parse_ip(text)
        except ValueError:
            return True
        return ip.is_unspecified or ip in wanted

    return matches


def _lsof_listener(port: int) -> int | None:
    exe = shutil.which("lsof")
    if exe is None:
        return None
    try:
        result = subprocess.run(
            [exe, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-t"],
            capture_output=True, text=True, timeout=_LSOF_TIMEOUT, check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("lsof failed: %s", exc)
        return None
    for word in result.stdout.split():
        if word.isdigit():
            return int(word)
    return None


def _own_socket_on(port: int) -> bool:
    """Whether this process has any TCP socket on ``port`` (even not listening)."""
    try:
        conns = _connections(psutil.Process())
    except psutil.Error:
        return False
    return any(conn.laddr and conn.laddr.port == port for conn in conns)


def _connections(proc: psutil.Process) -> list[Any]:
    # psutil < 6 spells it connections().
    method = getattr(proc, "net_connections", None) or proc.connections
    return list(method(kind="tcp"))


def _cmdline_of(proc: psutil.Process) -> tuple[str, list[str]]:
    with proc.oneshot():
        name = proc.name()
        try:
            cmdline = proc.cmdline()
        except psutil.AccessDenied:
            cmdline = []
    return name, cmdline


def _join_cmdline(cmdline: list[str]) -> str:
    text = subprocess.list2cmdline(cmdline) if os.name == "nt" else shlex.join(cmdline)
    text = " ".join(text.split())  # one log line even for `python -c` scripts
    return text if len(text) <= _CMDLINE_LIMIT else text[: _CMDLINE_LIMIT - 3] + "..."


def describe_process(pid: int) -> str | None:
    """``"name: command line"`` of process ``pid``, or ``None`` if it cannot be seen.

    Long command lines are shortened. Never raises.
    """
    try:
        name, cmdline = _cmdline_of(psutil.Process(pid))
    except (psutil.Error, OSError, ValueError):
        return None
    return f"{name}: {_join_cmdline(cmdline)}" if cmdline else name


def _looks_like_stream_hub(pid: int) -> bool:
    try:
        _name, cmdline = _cmdline_of(psutil.Process(pid))
    except (psutil.Error, OSError, ValueError):
        return False
    text = " ".join(cmdline).lower()
    return "stream_hub" in text or "stream-hub" in text


# -- guards and killing --------------------------------------------------------


def kill_refusal_reason(pid: int) -> str | None:
    """Why stream_hub must not signal ``pid``, or ``None`` if it may.

    Refused: this process, PID 0/1, any ancestor of this process, and processes
    of another user (or that this user may not inspect). A PID that does not
    exist is not refused (there is nothing to kill).
    """
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    except (psutil.Error, ValueError) as exc:
        return f"pid {pid} cannot be inspected ({exc})"
    return _refusal(proc)


def _refusal(proc: psutil.Process) -> str | None:
    pid = proc.pid
    if pid == os.getpid():
        return (
            f"it is this very process (pid {pid}): a socket opened here, for example a "
            "stream_hub server that is still running; close it or stop that server first"
        )
    if pid <= 1:
        return f"pid {pid} is the system's init process"
    try:
        ancestors = {parent.pid for parent in psutil.Process().parents()}
    except psutil.Error:
        ancestors = {os.getppid()}
    if pid in ancestors or pid == os.getppid():
        return f"pid {pid} is an ancestor of this process (pid {os.getpid()})"
    return _other_owner(proc)


def _other_owner(proc: psutil.Process) -> str | None:
    try:
        if hasattr(os, "getuid"):
            me = os.getuid()
            uids = proc.uids()
            if uids.real != me or uids.effective != me:
                return f"pid {proc.pid} belongs to another user (uid {uids.real})"
        elif proc.username() != psutil.Process().username():
            return f"pid {proc.pid} belongs to another user ({proc.username()})"
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return f"pid {proc.pid} cannot be inspected by this user (another user's process?)"
    return None


def _listens_on(proc: psutil.Process, port: int) -> bool:
    try:
        return any(
            conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
            for conn in _connections(proc)
        )
    except psutil.Error:
        return False


def kill_process(pid: int, timeout: float = 5.0) -> bool:
    """End process ``pid``: SIGTERM, wait up to ``timeout`` s, then SIGKILL and wait again.

    Waits with psutil (no fixed sleeps). On Windows both signals are
    ``TerminateProcess``. Returns whether the process has ended
    (a PID that does not exist has). Returns ``False`` if it survived both
    signals or this user may not signal it.

    Raises:
        KillRefusedError: ``pid`` is this process, PID 0/1, an ancestor of this
            process or another user's process (see :func:`kill_refusal_reason`).
    """
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error as exc:
        raise KillRefusedError(pid, f"it cannot be inspected ({exc})") from exc
    reason = _refusal(proc)
    if reason is not None:
        raise KillRefusedError(pid, reason)
    return _terminate(proc, timeout)


def _terminate(proc: psutil.Process, timeout: float, label: str = "") -> bool:
    pid = proc.pid
    prefix = f"{label}: " if label else ""
    logger.warning("%ssending SIGTERM to pid %d", prefix, pid)
    try:
        proc.terminate()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error as exc:
        logger.error("cannot signal pid %d: %s", pid, exc)
        return False
    if _wait_gone(proc, timeout):
        logger.info("%spid %d exited after SIGTERM", prefix, pid)
        return True
    logger.warning(
        "%spid %d still running %.1f s after SIGTERM; sending SIGKILL", prefix, pid, timeout
    )
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error as exc:
        logger.error("cannot signal pid %d: %s", pid, exc)
        return False
    if _wait_gone(proc, timeout):
        logger.warning("%skilled pid %d with SIGKILL", prefix, pid)
        return True
    logger.error("pid %d survived SIGKILL for %.1f s", pid, timeout)
    return False


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        # A dead process that is not our child stays a zombie until its parent
        # reaps it; its sockets are already closed.
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True


def _wait_port_free(port: int, host: str, within: float) -> bool:
    """Re-check bindability with a short back-off until ``within`` s have passed."""
    deadline = time.monotonic() + within
    pause = threading.Event()  # never set: wait() is a bounded, interruptible pause
    delay = 0.005
    while True:
        if not is_port_in_use(port, host):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        pause.wait(min(delay, remaining))
        delay = min(delay * 2, 0.1)


# -- policy --------------------------------------------------------------------


def is_production(environment: str | None = None) -> bool:
    """Whether ``environment`` (default: ``$ENVIRONMENT``) is ``production``, any case."""
    value = os.environ.get("ENVIRONMENT", "") if environment is None else environment
    return value.strip().lower() == "production"


def _check_policy(policy: str) -> None:
    if policy not in PORT_CONFLICT_POLICIES:
        accepted = ", ".join(map(repr, PORT_CONFLICT_POLICIES))
        raise ConfigError("port_conflict", f"expected one of {accepted}, got {policy!r}")


def _policy_refusal(policy: str, environment: str | None) -> str | None:
    if policy == "fail":
        return 'port_conflict="fail" never frees a port'
    if policy == "auto" and is_production(environment):
        return (
            "ENVIRONMENT=production, where stream_hub never kills processes "
            '(port_conflict="auto")'
        )
    return None


def _label(port: int, transport: str | None) -> str:
    return f"{transport} port {port}" if transport else f"port {port}"


@dataclasses.dataclass
class _Conflict:
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
            self.port, self.pid, self.process,
            host=self.host, reason=reason, transport=self.transport,
        )


def _inspect(port: int, host: str, transport: str | None) -> _Conflict:
    """Find who holds a busy port and whether the guards let us end it (logs both)."""
    label = _label(port, transport)
    logger.warning("%s on %s busy", label, host)
    pid = get_process_using_port(port, host)
    if pid is None and _own_socket_on(port):
        pid = os.getpid()
    if pid is None:
        logger.warning("%s: no listening process visible to this user", label)
        return _Conflict(
            port, host, transport, None, None, None,
            "no listening process could be identified: it may belong to another user, "
            "or be a socket that is bound but not listening (possibly in this very process)",
        )
    process = describe_process(pid)
    logger.info("%s held by pid %d (%s)", label, pid, process or "unknown")
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:  # it just exited; the caller re-checks the port
        return _Conflict(port, host, transport, pid, process, None, None)
    except psutil.Error as exc:
        return _Conflict(port, host, transport, pid, process, None, f"cannot inspect it ({exc})")
    refusal = _refusal(proc)
    if refusal is None and not _listens_on(proc, port):
        refusal = f"pid {pid} is not (visibly) listening on port {port}"
    return _Conflict(port, host, transport, pid, process, proc, refusal)


def _free(conflict: _Conflict, timeout: float) -> None:
    """End the holder(s) of a busy port and wait until it is bindable, or raise."""
    label = _label(conflict.port, conflict.transport)
    for _ in range(_MAX_HOLDERS):
        if conflict.refusal is not None:
            raise conflict.error(conflict.refusal)
        if conflict.proc is not None and not _terminate(conflict.proc, timeout, label):
            raise conflict.error(f"pid {conflict.pid} did not exit after SIGTERM and SIGKILL")
        if _wait_port_free(conflict.port, conflict.host, _RELEASE_WAIT):
            logger.info("%s is free", label)
            return
        # Still held: typically a forked worker that shares the listening socket.
        conflict = _inspect(conflict.port, conflict.host, conflict.transport)
    raise conflict.error(f"still held after ending {_MAX_HOLDERS} processes")


def _next_free(
    port: int, host: str, transport: str | None, exclude: Collection[int]
) -> int:
    last = min(port + NEXT_PORT_SEARCH, 65535)
    for candidate in range(port + 1, last + 1):
        if candidate not in exclude and not is_port_in_use(candidate, host):
            logger.warning(
                "%s busy; using port %d instead (port_conflict=\"next\")",
                _label(port, transport), candidate,
            )
            return candidate
    pid = get_process_using_port(port, host)
    raise PortInUseError(
        port, pid, describe_process(pid) if pid is not None else None,
        host=host, transport=transport, reason=f"no free port in {port + 1}-{last} either",
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
    _check_policy(policy)
    _check_port(port)
    if port == 0:
        return 0
    if port in exclude:
        if policy != "next":
            field = f"{transport}_port" if transport in _TRANSPORT_NAMES else "port"
            raise ConfigError(field, f"port {port} is already used by another transport")
        return _next_free(port, host, transport, exclude)
    if not is_port_in_use(port, host):
        return port
    if policy == "next":
        _inspect(port, host, transport)  # logs who holds it
        return _next_free(port, host, transport, exclude)
    conflict = _inspect(port, host, transport)
    refusal = _policy_refusal(policy, environment) or conflict.refusal
    if refusal is not None:
        raise conflict.error(refusal)
    _free(conflict, timeout)
    return port


# -- grouped -------------------------------------------------------------------


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
        _check_policy(policy)
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
        pid = get_process_using_port(port, self.host)
        if pid is None and _own_socket_on(port):
            pid = os.getpid()
        if pid is None:
            return PortStatus(port, True)
        return PortStatus(port, True, pid, describe_process(pid), _looks_like_stream_hub(pid))

    def ensure(
        self, port: int, *, transport: str | None = None, exclude: Collection[int] = ()
    ) -> int:
        """:func:`ensure_port_available` with this manager's settings."""
        return ensure_port_available(
            port, self.host, self.policy, self.environment,
            transport=transport, exclude=exclude, timeout=self.timeout,
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
        conflicts = [_inspect(ports[name], self.host, name) for name in busy]
        for conflict in conflicts:
            refusal = _policy_refusal(self.policy, self.environment) or conflict.refusal
            if refusal is not None:
                raise conflict.error(refusal)
        for conflict in conflicts:
            _free(conflict, self.timeout)
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
        _check_port(port)
        if port and port in owner:
            raise ConfigError(
                f"{name}_port",
                f"port {port} is also {owner[port]}_port; each transport needs its own port",
            )
        owner[port] = name


# -- report (for `stream-hub ports`) -------------------------------------------


def ports_report(config: StreamConfig) -> list[dict[str, Any]]:
    """One row per transport of ``config``, for ``stream-hub ports [--json]``.

    Keys: ``name``, ``host``, ``port``, ``free``, ``pid``, ``process`` (name and
    command line) and ``looks_like_stream_hub``. Never signals anything.
    """
    manager = PortManager(config.host)
    rows: list[dict[str, Any]] = []
    for name, port in _config_ports(config):
        status = manager.check(port)
        rows.append({
            "name": name,
            "host": config.host,
            "port": port,
            "free": not status.in_use,
            "pid": status.pid,
            "process": status.process,
            "looks_like_stream_hub": status.is_stream_hub,
        })
    return rows


def _config_ports(config: StreamConfig) -> Iterable[tuple[str, int]]:
    return (("sse", config.sse_port), ("ws", config.ws_port), ("rest", config.rest_port))


def format_ports_report(rows: Iterable[Mapping[str, Any]]) -> str:
    """:func:`ports_report` rows as an aligned text table (no trailing newline)."""
    table = [("TRANSPORT", "ADDRESS", "STATE", "PID", "STREAM_HUB", "PROCESS")]
    for row in rows:
        port = int(row["port"])
        if port == 0:
            state = "any free port"
        else:
            state = "free" if row["free"] else "in use"
        pid = row.get("pid")
        table.append((
            str(row["name"]),
            f"{_url_host(str(row.get('host', '')))}:{port}",
            state,
            "-" if pid is None else str(pid),
            ("yes" if row.get("looks_like_stream_hub") else "no") if pid is not None else "-",
            str(row.get("process") or ("-" if row["free"] else "unknown")),
        ))
    # Pad every column but the last, so long command lines do not widen the table.
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    lines = []
    for line in table:
        padded = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)]
        lines.append("  ".join([*padded, line[-1]]))
    return "\n".join(lines)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

