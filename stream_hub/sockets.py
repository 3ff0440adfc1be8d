"""Binding the server's ports: the one way a listening socket is made, and
the way a stopped server proves its ports are free again (the same bind)."""

from __future__ import annotations

import errno
import socket

from . import ports as port_tools
from .errors import PortInUseError, StreamHubError

__all__ = ["bind_port"]


def bind_port(host: str, port: int, name: str, listen: bool = True) -> socket.socket:
    """A bound (and listening) TCP socket with SO_REUSEADDR, or PortInUseError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StreamHubError(f"cannot resolve host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(2048)
            sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, getattr(errno, "WSAEADDRINUSE", -1)):
            pid = port_tools.get_process_using_port(port)
            raise PortInUseError(
                port,
                pid,
                port_tools.describe_process(pid) if pid else None,
                host=host,
                transport=name,
                reason=None if exc.errno == errno.EADDRINUSE else str(exc),
            ) from exc
        raise
    return sock
