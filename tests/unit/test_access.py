"""The access rules, decided with plain values: the Host grammar (issue 22
L7: a name or IPv4 address, or a bracketed IPv6 address, then at most a port
1-65535); which Host and Origin are this machine's on a wildcard bind (M5:
DNS rebinding); whose connections a loopback bind serves (M2: same user by
default, against real sockets)."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import pytest

from stream_hub import StreamConfig
from stream_hub.transports.access import AccessPolicy, host_of

REST = 8890


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost", "localhost"),
        ("LOCALHOST:8890", "localhost"),
        ("127.0.0.1:65535", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:8890", "::1"),
        ("::1", "::1"),
        ("my_service:8890", "my_service"),
        (" hub.example ", "hub.example"),
    ],
)
def test_well_formed_hosts_give_their_name(header: str, host: str) -> None:
    assert host_of(header) == host


@pytest.mark.parametrize(
    "header",
    [
        "[::1]evil",
        "[::1]:8890evil",
        "[evil]",
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "localhost:",
        "localhost:8890:1",
        "localhost:８８",
        "evil host",
        "-evil",
        "",
        None,
    ],
)
def test_malformed_hosts_are_none(header: str | None) -> None:
    assert host_of(header) is None


def policy(**fields: Any) -> AccessPolicy:
    config = StreamConfig(**{"sse_port": 0, "ws_port": 0, "rest_port": 0, "allowed_hosts": None, **fields})
    return AccessPolicy(config, lambda: REST)


# -- a wildcard bind and DNS rebinding (M5) ---------------------------------------------------

MACHINE = socket.gethostname().lower()


@pytest.mark.parametrize(
    ("name", "own"),
    [
        ("evil.example", False),
        (f"{MACHINE}.evil.example", False),
        ("127.0.0.1", True),
        ("192.168.1.5", True),  # an address: a page loaded from it, no name to re-point
        ("[fe80::1]", True),
        ("localhost", True),
        ("app.localhost", True),  # browsers resolve *.localhost themselves
        (MACHINE, True),
    ],
)
def test_on_a_wildcard_bind_only_this_machines_names_are_the_dashboards_origin(name: str, own: bool) -> None:
    wide = policy(host="0.0.0.0")
    assert wide.is_dashboard(f"http://{name}:{REST}", f"{name}:{REST}") is own
    assert (wide.host_refusal(f"{name}:{REST}", browser=True) is None) is own
    # Not a browser: a wildcard bind answers any Host (tokens guard it).
    assert wide.host_refusal(f"{name}:{REST}", browser=False) is None


def test_a_browsers_refusal_names_the_setting_that_admits_a_name() -> None:
    refusal = policy(host="0.0.0.0").host_refusal(f"evil.example:{REST}", browser=True)
    assert refusal is not None and "allowed_hosts" in refusal and "evil.example" in refusal
    named = policy(host="0.0.0.0", allowed_hosts=("metrics.lab",))
    assert named.host_refusal("metrics.lab", browser=True) is None
    assert named.is_dashboard(f"http://metrics.lab:{REST}", f"metrics.lab:{REST}")
    assert named.host_refusal("evil.example", browser=False) is not None  # narrowed: for everyone


def test_a_loopback_bind_keeps_its_names() -> None:
    local = policy()
    assert local.host_refusal("evil.example", browser=False) is not None
    for name in ("127.0.0.1", "localhost", "[::1]"):
        assert local.host_refusal(f"{name}:{REST}", browser=True) is None, name
        assert local.is_dashboard(f"http://{name}:{REST}", f"{name}:{REST}"), name
    assert not local.is_dashboard(f"http://evil.example:{REST}", f"evil.example:{REST}")


# -- same user by default (M2) ----------------------------------------------------------------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the lookup needs Linux")


@linux_only
def test_a_loopback_bind_serves_its_own_users_connections() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname(), timeout=5):
            accepted, _ = listener.accept()
            with accepted:
                assert policy().peer_refusal(accepted.getsockname(), accepted.getpeername()) is None


@linux_only
def test_a_loopback_bind_refuses_a_peer_it_cannot_find() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        free = listener.getsockname()[1]
    refusal = policy().peer_refusal(("127.0.0.1", free), ("127.0.0.1", free))
    assert refusal is not None and "allow_other_users" in refusal and "\n" not in refusal
    assert policy().peer_refusal(("127.0.0.1", 80), ("testclient", 50000)) is not None


def test_other_users_are_served_when_allowed_or_off_loopback() -> None:
    nowhere = (("127.0.0.1", 1), ("127.0.0.1", 2))
    assert policy(allow_other_users=True).peer_refusal(*nowhere) is None
    assert policy(host="0.0.0.0").peer_refusal(*nowhere) is None


@linux_only
def test_the_refusal_of_another_user_names_its_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_hub.transports import access

    monkeypatch.setattr(access, "peer_uid", lambda local, remote: os.geteuid() + 1)
    refusal = policy().peer_refusal(("127.0.0.1", 1), ("127.0.0.1", 2))
    assert refusal is not None and f"uid {os.geteuid() + 1}" in refusal and "allow_other_users" in refusal


@linux_only
async def test_a_request_without_its_connections_verdict_is_checked_itself() -> None:
    """The verdict rides in scope["state"] (set once per connection); a request
    served without it is looked up on its own, and a peer not found is refused."""
    from stream_hub.transports.access import AccessCheck

    served: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        served.append(scope)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    check = AccessCheck(app, policy())
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"host", b"127.0.0.1")]}
    await check({**scope, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}, receive, send)
    assert sent[0]["status"] == 403 and not served
    assert (b"connection", b"close") in sent[0]["headers"] and b"allow_other_users" in sent[1]["body"]
    sent.clear()
    await check({**scope, "state": {"stream_hub.peer_refusal": None}}, receive, send)
    assert served and not sent
