"""The uid of the process at the other end of a loopback TCP connection
(Linux: a netlink ``sock_diag`` lookup by the connection's 4-tuple),
against real sockets. The check built on it is in ``test_access.py`` and,
with a second user, ``tests/integration/test_same_user.py``."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pytest

from stream_hub.transports.peer_uid import can_tell_peer_uid, peer_uid

from ..conftest import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux's")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


Connection = tuple[socket.socket, socket.socket, socket.socket]


@pytest.fixture(params=["127.0.0.1", "::1"])
def connection(request: pytest.FixtureRequest) -> Iterator[Connection]:
    """A listener, a client connected to it, and the accepted (server) side."""
    host = request.param
    if host == "::1" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family)
    listener.bind((host, 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    accepted, _ = listener.accept()
    try:
        yield listener, client, accepted
    finally:
        for sock in (accepted, client, listener):
            sock.close()


def test_the_kernel_can_tell() -> None:
    assert can_tell_peer_uid()


def test_the_peer_of_an_accepted_connection_is_found_with_its_owner(connection: Connection) -> None:
    _, _, accepted = connection
    assert peer_uid(accepted.getsockname(), accepted.getpeername()) == os.geteuid()


def test_a_connection_that_does_not_exist_has_no_peer(connection: Connection) -> None:
    _, _, accepted = connection
    local, remote = accepted.getsockname(), accepted.getpeername()
    # The same addresses with the client's port off by one: no such socket.
    other_port = remote[1] + 1 if remote[1] < 65535 else remote[1] - 1
    assert peer_uid(local, (remote[0], other_port, *remote[2:])) is None
    # The direction matters: the client's socket is the one whose own address is `remote`.
    assert peer_uid(remote, (local[0], 1, *local[2:])) is None


def test_a_listening_socket_is_no_peer(connection: Connection) -> None:
    """The kernel's exact lookup falls back to a listener on the address it is
    asked for; a listener is not the other end of a connection."""
    listener, _, accepted = connection
    assert peer_uid(accepted.getsockname(), listener.getsockname()) is None


def test_a_peer_that_closed_is_not_found(connection: Connection) -> None:
    """A closed client's socket soon becomes a TIME_WAIT stub, which the kernel
    reports as uid 0 (root's): it must not pass for anyone's."""
    _, client, accepted = connection
    local, remote = accepted.getsockname(), accepted.getpeername()
    client.close()
    wait_for(lambda: peer_uid(local, remote) is None, what="the closed peer to be gone")


def test_addresses_that_are_not_ip_addresses_have_no_peer() -> None:
    assert peer_uid(("127.0.0.1", 80), ("testclient", 50000)) is None
    assert peer_uid(("127.0.0.1", 80), ("::1", 50000)) is None  # two families: no connection


def test_a_dual_stack_client_of_an_ipv4_port_is_found() -> None:
    """An IPv6 socket connected to an IPv4 address (Java's default) is an IPv4
    connection with an IPv6 socket at its end."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.socket(socket.AF_INET6) as client:
            client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            client.connect(("::ffff:127.0.0.1", listener.getsockname()[1]))
            accepted, _ = listener.accept()
            with accepted:
                assert peer_uid(accepted.getsockname(), accepted.getpeername()) == os.geteuid()
