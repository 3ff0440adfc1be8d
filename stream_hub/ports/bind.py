"""Binding the server's ports: the one way a listening socket is made, and
the way a stopped server proves its ports are free again (the same bind)."""

from __future__ import annotations

import errno
import logging
import socket
import sys

from ..errors import PortInUseError, StreamHubError
from .probe import describe_process, get_process_using_port, reuse_option

__all__ = ["bind_port", "verify_released"]

logger = logging.getLogger(__name__)

# How a refused bind reads: EADDRINUSE; EACCES (a privileged port); on Windows
# WSAEADDRINUSE, and WSAEACCES for an exclusive bind over another socket or a
# port in an excluded range (Hyper-V, WSL).
_IN_USE_ERRNOS = (
    errno.EADDRINUSE,
    errno.EACCES,
    getattr(errno, "WSAEADDRINUSE", -1),
    getattr(errno, "WSAEACCES", -1),
)


def bind_port(host: str, port: int, name: str, listen: bool = True) -> socket.socket:
    """A bound (and listening) TCP socket, or :class:`PortInUseError`.

    The socket gets the platform's address-reuse option (see
    :func:`~stream_hub.ports.probe.reuse_option`), so binding a port again
    after stop (``listen=False``) succeeds exactly when the port is free for
    the next server: on POSIX with TIME_WAIT leftovers ignored, on Windows
    never over another socket.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StreamHubError(f"cannot resolve host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        level, option = reuse_option(sys.platform)
        sock.setsockopt(level, option, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(2048)
            sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in _IN_USE_ERRNOS:
            pid = get_process_using_port(port)
            raise PortInUseError(
                port,
                pid,
                describe_process(pid) if pid else None,
                host=host,
                transport=name,
                reason=None if exc.errno == errno.EADDRINUSE else str(exc),
            ) from exc
        raise
    return sock


def verify_released(host: str, ports: dict[str, int], successor: int | None = None) -> None:
    """Bind each port again, as the next server will, or raise.

    ``successor``: the PID of a process this one handed its hub to; a port it
    has bound already counts as released (the holder must be identified as
    that process: an unknown holder does not).

    Raises:
        StreamHubError: a port is still bound (it names the port and the holder).
    """
    for name, port in ports.items():
        try:
            bind_port(host, port, name, listen=False).close()
        except PortInUseError as exc:
            if successor is not None and exc.pid == successor:
                logger.debug("%s port %d already bound by the successor (pid %d)", name, port, successor)
                continue
            raise StreamHubError(f"{name} port {port} is still bound after stop: {exc}") from exc
