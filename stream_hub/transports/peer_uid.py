"""Whose process is at the other end of a TCP connection on this machine.

Linux tells through netlink ``sock_diag`` (``NETLINK_SOCK_DIAG``): one
``inet_diag_req_v2`` naming the connection's exact 4-tuple is answered with
the ``inet_diag_msg`` of the socket that has it, whose ``idiag_uid`` is the
uid that owns that socket. Asked for the peer's side of a connection this
server accepted — the socket whose own address is the client's — it gives the
uid of the client's process. One lookup (a netlink socket opened, one request,
one answer, closed) takes about ten microseconds
(``python -m benchmarks.peer_uid``); the kernel answers while the request is
sent, so nothing here waits.

Other platforms cannot be asked this way (:func:`can_tell_peer_uid` is False
there). Pure standard library: ``socket.AF_NETLINK`` and ``struct``.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import sys
from struct import Struct
from typing import Any

__all__ = ["can_tell_peer_uid", "peer_uid"]

_NETLINK_SOCK_DIAG = 4  # linux/netlink.h
_SOCK_DIAG_BY_FAMILY = 20  # linux/sock_diag.h
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_NO_COOKIE = 0xFFFFFFFF  # INET_DIAG_NOCOOKIE: look the socket up by its addresses alone
_ALL_STATES = 0xFFFFFFFF

# nlmsghdr, then inet_diag_req_v2: family, protocol, ext, pad, states, and the
# inet_diag_sockid: ports (network order), source and destination addresses
# (16 bytes each; an IPv4 address in the first 4), interface, cookie.
_REQUEST = Struct("=IHHIIBBBxIHH16s16sIII")
# nlmsghdr, then inet_diag_msg: family, state, timer, retrans, the sockid,
# expires, rqueue, wqueue, uid, inode.
_REPLY = Struct("=IHHIIBBBBHH16s16sIIIIIIII")
_ERROR = Struct("=IHHIIi")

# The states of a socket that is one end of a connection and has an owner.
# A half-open request is reported with uid 0, and a listener is what the
# kernel falls back to when no connection has the 4-tuple: neither is a peer.
_CONNECTED_STATES = frozenset(
    {
        1,  # ESTABLISHED
        4,  # FIN_WAIT1
        5,  # FIN_WAIT2
        8,  # CLOSE_WAIT
        9,  # LAST_ACK
        11,  # CLOSING
    }
)
_LISTEN = 10
# A closed peer soon becomes a TIME_WAIT stub, reported with uid 0 (root's)
# and the state it was in (FIN_WAIT2 too): the kernel marks it with timer 3.
_TIME_WAIT_TIMER = 3

_IPV4_MAPPED = bytes(10) + b"\xff\xff"

# Errors that mean this kernel (or a sandbox around it) cannot be asked at all.
_CANNOT_ASK = frozenset(
    {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ENOENT, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES}
)


def peer_uid(local: tuple[Any, ...], remote: tuple[Any, ...]) -> int | None:
    """The uid owning the other end of the TCP connection between ``local``
    (this process's address) and ``remote`` (the peer's), as ``getsockname()``
    and ``getpeername()`` give them: ``(host, port, ...)``.

    Returns None when no connected socket on this machine has that 4-tuple:
    the peer is elsewhere, has closed, or the addresses are not IP addresses
    of one family.

    Raises:
        OSError: the kernel could not be asked, or answered with an error
            other than "no such socket".
    """
    try:
        family, peer_address = _packed(str(remote[0]))
        local_family, own_address = _packed(str(local[0]))
        peer_port, own_port = int(remote[1]), int(local[1])
    except (OSError, ValueError, IndexError):
        return None
    if family != local_family:
        return None
    found = _lookup(family, peer_address, peer_port, own_address, own_port)
    if found is None:
        return None
    state, timer, uid = found
    if state not in _CONNECTED_STATES or timer == _TIME_WAIT_TIMER:
        return None
    return uid


@functools.cache
def can_tell_peer_uid() -> bool:
    """Whether this platform tells the uid of a connection's peer (Linux with
    ``sock_diag`` for TCP). Decided once per process: a listening socket of
    its own is looked up; an error that says the kernel cannot be asked
    (no netlink, no ``tcp_diag``, a sandbox that forbids it) makes it False."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "AF_NETLINK"):
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            probe.listen(1)
            port = probe.getsockname()[1]
            loopback, anywhere = _packed("127.0.0.1")[1], bytes(16)
            found = _lookup(socket.AF_INET, loopback, port, anywhere, 0)
    except OSError as exc:
        # Out of descriptors or memory is a moment, not the platform: assume
        # it can tell (each lookup then decides, and refuses when it fails).
        return exc.errno not in _CANNOT_ASK
    return found is not None and found[0] == _LISTEN and found[2] == os.geteuid()


def _packed(host: str) -> tuple[int, bytes]:
    """The family and the 16-byte ``idiag_src``/``idiag_dst`` of an address."""
    if ":" in host:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        if packed.startswith(_IPV4_MAPPED):  # an IPv4 peer of a dual-stack socket
            return socket.AF_INET, packed[12:] + bytes(12)
        return socket.AF_INET6, packed
    return socket.AF_INET, socket.inet_pton(socket.AF_INET, host) + bytes(12)


def _lookup(family: int, src: bytes, sport: int, dst: bytes, dport: int) -> tuple[int, int, int] | None:
    """The state, timer and uid of the TCP socket whose own address is
    ``src:sport`` and whose peer is ``dst:dport`` (the kernel's exact lookup),
    or None."""
    request = _REQUEST.pack(
        _REQUEST.size,
        _SOCK_DIAG_BY_FAMILY,
        _NLM_F_REQUEST,
        1,
        0,
        family,
        socket.IPPROTO_TCP,
        0,
        _ALL_STATES,
        socket.htons(sport),
        socket.htons(dport),
        src,
        dst,
        0,
        _NO_COOKIE,
        _NO_COOKIE,
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG) as nl:
        nl.sendto(request, (0, 0))
        # The kernel answers an exact lookup within sendto(): never wait.
        answer = nl.recv(8192, socket.MSG_DONTWAIT)
    if len(answer) >= _ERROR.size and _ERROR.unpack_from(answer)[1] == _NLMSG_ERROR:
        code = -_ERROR.unpack_from(answer)[5]
        if code == errno.ENOENT:
            return None
        raise OSError(code, f"sock_diag: {os.strerror(code)}")
    if len(answer) < _REPLY.size:
        raise OSError(errno.EPROTO, "sock_diag: a short answer")
    fields = _REPLY.unpack_from(answer)
    if fields[1] != _SOCK_DIAG_BY_FAMILY:
        raise OSError(errno.EPROTO, "sock_diag: an answer to another question")
    state, timer, uid = fields[6], fields[7], fields[19]
    ports, addresses = (fields[9], fields[10]), (_short(fields[11], fields[5]), _short(fields[12], fields[5]))
    if ports != (socket.htons(sport), socket.htons(dport)):
        return None
    # A listener answers with its own (wildcard) address; a connection must be the one asked for.
    if state != _LISTEN and addresses != (_short(src, family), _short(dst, family)):
        return None
    return state, timer, uid


def _short(address: bytes, family: int) -> bytes:
    """An answered or asked address, comparable whatever the socket's family:
    an IPv4 address in 4 bytes (also the IPv4-mapped one of a dual-stack
    socket, which an IPv4 lookup finds too), an IPv6 one in 16."""
    if family == socket.AF_INET:
        return address[:4]
    return address[12:] if address.startswith(_IPV4_MAPPED) else address
