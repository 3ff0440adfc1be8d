"""The Host grammar the access rules read (issue 22 L7): a name or IPv4
address, or a bracketed IPv6 address, then at most a port 1-65535."""

from __future__ import annotations

import pytest

from stream_hub.transports.access import host_of


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
