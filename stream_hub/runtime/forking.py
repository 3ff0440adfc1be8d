"""What a forked child does with the sockets of its parent's server.

``os.fork()`` (multiprocessing's ``fork`` start method, DataLoader workers)
copies every descriptor: the child would hold the server's three listening
sockets and every client connection. While it lives, the parent cannot
verify its ports free after a stop, a client never sees the end of its
stream, and a port-conflict policy could end the child as the port's holder.
So right after fork the child lets go of every TCP socket whose local port is
one of the server's ports — listeners and accepted connections alike — and
of the Unix sockets of its channel for joined processes (whose connections
would otherwise never see the hub go away), and nothing else (the training
job's own sockets, e.g. a process group's, stay).

Letting go means pointing the descriptor at ``/dev/null`` (``dup2``), not
closing it: the Python objects that still hold the number (the parent's
loop, transports and sockets, copied into the child) may close it later,
and a closed number could by then belong to a file the child opened.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection

__all__ = ["close_inherited_sockets"]

logger = logging.getLogger(__name__)

_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def _open_descriptors() -> list[int]:
    for directory in _FD_DIRS:
        try:
            return [int(name) for name in os.listdir(directory) if name.isdigit()]
        except OSError:
            continue
    return []


def _local_address(fd: int) -> int | str | None:
    """The local TCP port or Unix socket path of descriptor ``fd`` (None: neither)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None  # not a socket (or already gone)
    try:
        if sock.type != socket.SOCK_STREAM:
            return None
        address = sock.getsockname()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(address[1])
        if sock.family == getattr(socket, "AF_UNIX", None) and isinstance(address, str) and address:
            return address
        return None
    except OSError:
        return None
    finally:
        sock.detach()  # the descriptor is not ours to close here


def close_inherited_sockets(ports: Collection[int], unix_paths: Collection[str] = ()) -> int:
    """In a forked child: let go of every TCP socket on one of ``ports`` and
    every Unix socket bound to one of ``unix_paths`` (the hub's channel: its
    listener and the joiners' connections).

    Returns how many descriptors were released. Never raises.
    """
    wanted: set[int | str] = {port for port in ports if port}
    wanted.update(path for path in unix_paths if path)
    if not wanted:
        return 0
    released = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return 0
    try:
        for fd in _open_descriptors():
            if fd == null or _local_address(fd) not in wanted:
                continue
            try:
                os.dup2(null, fd)
                released += 1
            except OSError as exc:
                logger.debug("could not release inherited descriptor %d: %s", fd, exc)
    finally:
        os.close(null)
    return released
