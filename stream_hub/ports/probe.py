"""Is a port free, and who holds it: probes that never signal anything.

Part of :mod:`stream_hub.ports`, which re-exports the public names.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

__all__ = [
    "check_port",
    "connections",
    "describe_process",
    "find_holder",
    "get_process_using_port",
    "is_port_in_use",
    "looks_like_stream_hub",
    "own_socket_on",
    "reuse_option",
    "wait_port_free",
]

# Records keep the public module's name, so a user's logging configuration for
# "stream_hub.ports" covers every step of port handling.
logger = logging.getLogger("stream_hub.ports")

_CONNECT_PROBE_TIMEOUT = 0.5
_LSOF_TIMEOUT = 5.0
_CMDLINE_LIMIT = 300


# -- is the port free? ---------------------------------------------------------

# winsock2.h: `#define SO_EXCLUSIVEADDRUSE ((int)(~SO_REUSEADDR))` with
# SO_REUSEADDR = 0x0004 there, so -5 (0xfffffffb as an unsigned option name).
# CPython defines socket.SO_EXCLUSIVEADDRUSE on Windows only.
SO_EXCLUSIVEADDRUSE: int = getattr(socket, "SO_EXCLUSIVEADDRUSE", ~0x0004)


def reuse_option(platform: str) -> tuple[int, int]:
    """The ``(level, option)`` set to 1 before binding a server port on ``platform``
    (a ``sys.platform`` value); the server's sockets and the probes here use it alike.

    POSIX: ``SO_REUSEADDR``, as asyncio's ``create_server`` sets it. A port whose
    last connections linger in TIME_WAIT binds again at once, and a port with a
    live listener still refuses the bind, so a bind proves the port free.

    Windows: ``SO_EXCLUSIVEADDRUSE``. There ``SO_REUSEADDR`` lets a bind succeed
    over a live listener (a bind would prove nothing, and another program could
    bind over ours); the exclusive option makes such a bind fail. The two must
    not be combined (the bind fails with WSAEINVAL). Microsoft documents that an
    exclusive bind may also fail while connections accepted by a closed
    exclusive listener are still active.
    """
    if platform == "win32":
        return socket.SOL_SOCKET, SO_EXCLUSIVEADDRUSE
    return socket.SOL_SOCKET, socket.SO_REUSEADDR


def is_port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` is taken for a TCP server.

    True when binding it the way our server does (:func:`reuse_option`:
    ``SO_REUSEADDR`` on POSIX, ``SO_EXCLUSIVEADDRUSE`` on Windows; ``IPV6_V6ONLY``
    for IPv6) would fail with "address in use", or when something accepts
    connections there (on macOS/BSD and Windows a wildcard listener does not
    stop a bind to a specific address). ``host`` may be an IPv4 or IPv6
    literal (``"::1"``, ``"[::1]"``), a name such as ``"localhost"`` (every
    address it resolves to is checked) or a wildcard (``"0.0.0.0"``, ``"::"``).
    Port 0 ("any free port") is never in use. A host that cannot be resolved or
    an address this machine does not have is reported as not in use: the bind
    itself will then give the real error.

    Raises:
        ValueError: ``port`` is not an integer from 0 to 65535.
    """
    check_port(port)
    if port == 0:
        return False
    for family, sockaddr in _bind_addresses(host, port):
        verdict = _bind_verdict(family, sockaddr)
        if verdict is True:
            return True
        if verdict is False and _accepts_connections(family, sockaddr):
            return True
    return False


def check_port(port: int) -> None:
    """Raise ``ValueError`` unless ``port`` is an integer from 0 to 65535."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")


def wait_port_free(port: int, host: str, within: float) -> bool:
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


def _strip_brackets(host: str) -> str:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def _bind_addresses(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    name = _strip_brackets(host) or None
    try:
        infos = socket.getaddrinfo(name, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
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
        level, option = reuse_option(sys.platform)
        sock.setsockopt(level, option, 1)
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
    or a holder this user cannot see, gives ``None``. Finding nobody takes two
    scans, so callers ask only about ports they found in use.
    """
    # psutil maps sockets to processes by scanning every process's descriptors
    # after reading the socket tables: a scan that misses ours (a busy machine,
    # processes coming and going) is tried once more before giving up.
    for _ in range(2):
        try:
            pids, unseen = _psutil_listeners(port, host)
        except Exception as exc:  # AccessDenied on macOS, or anything platform-specific
            logger.debug("psutil.net_connections failed (%s); trying lsof", exc)
            return _lsof_listener(port)
        if pids:
            return pids[0]
        pid = _lsof_listener(port) if unseen else None
        if pid is not None:
            return pid
    return None


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
            capture_output=True,
            text=True,
            timeout=_LSOF_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("lsof failed: %s", exc)
        return None
    for word in result.stdout.split():
        if word.isdigit():
            return int(word)
    return None


def find_holder(port: int, host: str) -> int | None:
    """The PID listening on ``host:port``: another process, or this one if
    the socket is ours; ``None`` if nobody visible holds it."""
    pid = get_process_using_port(port, host)
    if pid is None and own_socket_on(port):
        pid = os.getpid()
    return pid


def own_socket_on(port: int) -> bool:
    """Whether this process has any TCP socket on ``port`` (even not listening)."""
    try:
        conns = connections(psutil.Process())
    except psutil.Error:
        conns = []
    return any(conn.laddr and conn.laddr.port == port for conn in conns) or _own_bound_socket(port)


def _own_bound_socket(port: int) -> bool:
    """Whether one of this process's descriptors is a socket bound to ``port``.

    A TCP socket bound but neither listening nor connected is in no table
    the kernel lists (``/proc/net/tcp``, sock_diag: what psutil and lsof
    read), so the holder of such a port would be "unknown" even when it is
    this very process (a socket bound and never listened on, a server left
    half-started). Its own descriptors it can ask: ``getsockname`` on a
    duplicate of each socket. Only on a busy port, never per event."""
    directory = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    for name in names:
        if not name.isdigit():
            continue
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                address = sock.getsockname()
        except OSError:
            continue
        if isinstance(address, tuple) and len(address) >= 2 and address[1] == port:
            return True
    return False


def connections(proc: psutil.Process) -> list[Any]:
    """The TCP sockets of ``proc`` (raises ``psutil.Error`` like psutil does)."""
    # psutil < 6 spells it connections().
    method = getattr(proc, "net_connections", None) or proc.connections
    return list(method(kind="tcp"))


# -- what is it? ---------------------------------------------------------------


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
        return "this process" if pid == os.getpid() else None
    described = f"{name}: {_join_cmdline(cmdline)}" if cmdline else name
    return f"this process, {described}" if pid == os.getpid() else described


def looks_like_stream_hub(pid: int) -> bool:
    """Whether the command line of ``pid`` mentions ``stream_hub``/``stream-hub``."""
    try:
        _name, cmdline = _cmdline_of(psutil.Process(pid))
    except (psutil.Error, OSError, ValueError):
        return False
    text = " ".join(cmdline).lower()
    return "stream_hub" in text or "stream-hub" in text
