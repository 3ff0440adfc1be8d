"""The dashboard page's Content-Security-Policy, decided from the request's
Host, the hub's ports and ``cors_origins`` (stream_hub/transports/headers.py,
issue 22 L8). Pure: strings in, a policy out."""

from __future__ import annotations

import pytest

from stream_hub.transports.headers import page_policy

PORTS = {"sse": 8888, "ws": 8889, "rest": 8890}


def directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (d.split() for d in policy.split(";"))}


@pytest.mark.parametrize(
    ("host", "name"),
    [("127.0.0.1:8890", "127.0.0.1"), ("LocalHost:8890", "localhost"), ("gpu-node", "gpu-node")],
)
def test_the_page_connects_to_the_hubs_ports_on_the_name_it_was_asked_for(host: str, name: str) -> None:
    policy = directives(page_policy(host, PORTS))
    assert policy["connect-src"] == ["'self'", f"http://{name}:8888", f"ws://{name}:8889"]
    assert policy["script-src"] == ["'self'"] and policy["default-src"] == ["'none'"]


def test_pages_of_this_host_may_frame_it_on_any_port() -> None:
    ancestors = directives(page_policy("gpu-node:8890", PORTS))["frame-ancestors"]
    assert ancestors == [
        "'self'",
        "http://localhost:*",
        "http://127.0.0.1:*",
        "vscode-webview:",
        "vscode-file:",
        "http://gpu-node:*",
    ]


@pytest.mark.parametrize("host", ["[::1]:8890", "evil;script-src *", "a b", "", None, "x:1:2"])
def test_a_host_a_policy_cannot_name_is_never_written_into_it(host: str | None) -> None:
    policy = page_policy(host, PORTS)
    assert directives(policy)["connect-src"] == ["'self'", "http://*:8888", "ws://*:8889"]
    assert "evil" not in policy and len(policy.split(";")) == 9


def test_cors_origins_may_frame_it_and_nothing_else_gets_in() -> None:
    framers = ["https://lab.example.org", "https://x.example; script-src *", "http://a.example:8000"]
    policy = page_policy("127.0.0.1", PORTS, framers)
    ancestors = directives(policy)["frame-ancestors"]
    assert ancestors[-2:] == ["https://lab.example.org", "http://a.example:8000"]
    assert "x.example" not in policy
    assert directives(page_policy("127.0.0.1", PORTS, ["*"]))["frame-ancestors"] == ["*"]
