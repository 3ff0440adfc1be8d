"""Security defaults: loopback bind, a warning when exposed without tokens,
read/publish/admin tokens on every face, the WebSocket Origin allow-list and
CORS (closed by default)."""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from stream_hub import StreamConfig, TrainingStreamServer, get_stream_server, get_stream_server_manager
from stream_hub.transports import params as common

from ..clients import SSEStream, ping, ws_open
from ..conftest import free_config, need, wait_for

READ, PUBLISH, ADMIN = "read-s3cret-0123456789", "publish-s3cret-0123456789", "admin-s3cret-0123456789"


@pytest.fixture
def guarded(make_server: Callable[..., TrainingStreamServer]) -> TrainingStreamServer:
    server = make_server(read_token=READ, publish_token=PUBLISH)
    server.log({"loss": 0.5}, step=1, run="r")
    return server


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def listening_addresses(ports: dict[str, int]) -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.Process().net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in ports.values()
    }


# -- where it listens ---------------------------------------------------------------------------


def test_default_bind_is_loopback(
    monkeypatch: pytest.MonkeyPatch, make_server: Callable[..., TrainingStreamServer]
) -> None:
    monkeypatch.delenv("STREAM_HUB_HOST", raising=False)
    assert StreamConfig().host == "127.0.0.1"
    server = make_server()
    assert server.config.host == "127.0.0.1"
    assert listening_addresses(server.ports) == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("tokens", "missing"),
    [
        ({}, ["read_token", "publish_token"]),
        ({"read_token": READ}, ["publish_token"]),
        ({"publish_token": PUBLISH}, ["read_token"]),
    ],
)
def test_public_bind_without_tokens_warns(
    make_server: Callable[..., TrainingStreamServer],
    caplog: pytest.LogCaptureFixture,
    tokens: dict[str, str],
    missing: list[str],
) -> None:
    caplog.set_level(logging.WARNING, logger="stream_hub.serving")
    server = make_server(host="0.0.0.0", **tokens)
    assert listening_addresses(server.ports) == {"0.0.0.0"}
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "stream_hub.serving" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "0.0.0.0" in warnings[0]
    for name in ("read_token", "publish_token"):
        assert (name in warnings[0]) == (name in missing), warnings[0]


@pytest.mark.parametrize(
    "changes",
    [{}, {"host": "0.0.0.0", "read_token": READ, "publish_token": PUBLISH}],
    ids=["loopback", "public-with-tokens"],
)
def test_no_warning_on_loopback_or_with_both_tokens(
    make_server: Callable[..., TrainingStreamServer],
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, str],
) -> None:
    caplog.set_level(logging.WARNING, logger="stream_hub.serving")
    make_server(**changes)
    assert not [r for r in caplog.records if r.name == "stream_hub.serving" and r.levelno >= logging.WARNING]


# -- read_token ---------------------------------------------------------------------------------


def sse_status(
    server: TrainingStreamServer, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
) -> int:
    with httpx.stream(
        "GET", f"{server.urls['sse']}/events", headers=headers, params=params, timeout=5
    ) as response:
        return response.status_code


@pytest.mark.parametrize(
    ("headers", "params", "expected"),
    [
        (None, None, 401),
        (bearer("wrong"), None, 401),
        ({"Authorization": f"Basic {READ}"}, None, 401),
        ({"Authorization": f"Bearer {READ}x"}, None, 401),
        (None, {"token": "wrong"}, 401),
        (bearer(PUBLISH), None, 401),
        (bearer(READ), None, 200),
        (None, {"token": READ}, 200),
    ],
)
def test_read_token_on_sse(
    guarded: TrainingStreamServer,
    headers: dict[str, str] | None,
    params: dict[str, str] | None,
    expected: int,
) -> None:
    assert sse_status(guarded, headers, params) == expected


def test_sse_with_read_token_streams(guarded: TrainingStreamServer) -> None:
    stream = SSEStream(f"{guarded.urls['sse']}/events", params={"token": READ, "last_event_id": "0"})
    try:
        assert stream.read_until_seq(guarded.hub.head)[-1].seq == guarded.hub.head
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("query", "headers", "expected"),
    [
        ("", None, 401),
        ("", bearer("wrong"), 401),
        ("?token=wrong", None, 401),
        ("", bearer(READ), 101),
        (f"?token={READ}", None, 101),
    ],
)
def test_read_token_on_websocket(
    guarded: TrainingStreamServer, query: str, headers: dict[str, str] | None, expected: int
) -> None:
    if expected == 101:
        with ws_open(guarded, query, additional_headers=headers) as conn:
            assert ping(conn)["type"] == "pong"
        return
    with pytest.raises(InvalidStatus) as refused:
        ws_open(guarded, query, additional_headers=headers).__enter__()
    assert refused.value.response.status_code == expected


READS = ["/api/status", "/api/runs", "/api/metrics/latest", "/api/history", "/metrics", "/api/runs/r/series"]


@pytest.mark.parametrize("path", READS)
def test_read_token_on_rest_reads(guarded: TrainingStreamServer, path: str) -> None:
    url = guarded.urls["rest"] + path
    for headers in (None, bearer("wrong"), bearer(PUBLISH), {"Authorization": READ}):
        refused = httpx.get(url, headers=headers, timeout=5)
        assert refused.status_code == 401, (headers, refused.text)
        assert READ not in refused.text
    assert httpx.get(url, headers=bearer(READ), timeout=5).status_code == 200


def test_health_is_open(guarded: TrainingStreamServer) -> None:
    for face in ("rest", "sse"):
        assert httpx.get(f"{guarded.urls[face]}/health", timeout=5).status_code == 200


def test_tokens_never_appear_in_answers(guarded: TrainingStreamServer) -> None:
    rest = guarded.urls["rest"]
    bodies = [httpx.get(rest + path, headers=bearer(READ), timeout=5).text for path in READS]
    bodies.append(httpx.get(rest + "/openapi.json", timeout=5).text)
    bodies.append(
        httpx.post(rest + "/api/publish", json={"metrics": {"x": 1}}, headers=bearer("nope"), timeout=5).text
    )
    for body in bodies:
        for token in (READ, PUBLISH):
            assert token not in body


# -- publish_token ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "params", "expected"),
    [
        (None, None, 401),
        (bearer("wrong"), None, 401),
        (bearer(READ), None, 401),
        (None, {"token": PUBLISH}, 401),  # the query token is for EventSource reads only
        (bearer(PUBLISH), None, 200),
    ],
)
def test_publish_token(
    guarded: TrainingStreamServer,
    headers: dict[str, str] | None,
    params: dict[str, str] | None,
    expected: int,
) -> None:
    before = guarded.hub.last_seq
    response = httpx.post(
        f"{guarded.urls['rest']}/api/publish",
        params=params,
        headers=headers,
        json={"type": "metric", "run": "remote", "metrics": {"x": 1}},
        timeout=5,
    )
    assert response.status_code == expected, response.text
    assert guarded.hub.last_seq == (before + 1 if expected == 200 else before)


def test_publish_is_open_without_a_publish_token(make_server: Callable[..., TrainingStreamServer]) -> None:
    server = make_server(read_token=READ)
    response = httpx.post(f"{server.urls['rest']}/api/publish", json={"metrics": {"x": 1}}, timeout=5)
    assert response.status_code == 200


def test_tokens_are_compared_in_constant_time(
    guarded: TrainingStreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(common.hmac, "compare_digest", spy)
    assert (
        httpx.get(f"{guarded.urls['rest']}/api/status", headers=bearer("guess"), timeout=5).status_code == 401
    )
    assert sse_status(guarded, params={"token": "guess"}) == 401
    assert calls == [(b"guess", READ.encode())] * 2
    assert common.token_matches("x" * 5, "x" * 50) is False  # lengths differ: still no early exit
    assert common.token_matches(None, READ) is False
    assert common.token_matches("anything", None) is True


# -- admin ----------------------------------------------------------------------------------------


def test_admin_restart_is_refused_without_a_configured_token() -> None:
    server = get_stream_server(config=free_config())
    response = httpx.post(f"{server.urls['rest']}/api/admin/restart", headers=bearer("anything"), timeout=5)
    assert response.status_code == 403
    assert "admin_token" in response.json()["error"]
    assert server.restarts == 0


def test_admin_restart_needs_the_right_token() -> None:
    server = get_stream_server(config=free_config(admin_token=ADMIN))
    url = f"{server.urls['rest']}/api/admin/restart"
    for headers in (None, bearer("wrong"), {"Authorization": ADMIN}, {"Authorization": f"Basic {ADMIN}"}):
        response = httpx.post(url, headers=headers, timeout=5)
        assert response.status_code == 401, headers
        assert ADMIN not in response.text
    assert httpx.post(url, params={"token": ADMIN}, timeout=5).status_code == 401
    assert server.restarts == 0
    assert httpx.post(url, headers=bearer(ADMIN), timeout=5).status_code == 202
    wait_for(lambda: server.restarts == 1 and server.running, timeout=10, what="the restart")
    assert get_stream_server_manager().ref_count == 1


# -- WebSocket Origin allow-list --------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example", True),
        (None, True),  # not a browser
        ("https://evil.example", False),
        ("https://app.example.evil.example", False),
        ("null", False),
    ],
)
def test_ws_origin_allow_list(
    make_server: Callable[..., TrainingStreamServer], origin: str | None, allowed: bool
) -> None:
    server = make_server(ws_origins=("https://app.example",))
    if allowed:
        with ws_open(server, origin=origin) as conn:
            assert ping(conn)["type"] == "pong"
        return
    with pytest.raises(InvalidStatus) as refused:
        ws_open(server, origin=origin).__enter__()
    assert refused.value.response.status_code == 403


def test_ws_origin_allow_list_admits_the_dashboard(make_server: Callable[..., TrainingStreamServer]) -> None:
    server = make_server(ws_origins=("https://app.example",))
    with ws_open(server, origin=f"http://127.0.0.1:{server.ports['rest']}") as conn:
        assert ping(conn)["type"] == "pong"


# -- CORS on REST --------------------------------------------------------------------------------


def preflight(server: TrainingStreamServer, origin: str) -> httpx.Response:
    return httpx.options(
        f"{server.urls['rest']}/api/status",
        timeout=5,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )


def test_cors_is_closed_by_default(make_server: Callable[..., TrainingStreamServer]) -> None:
    server = make_server()
    response = httpx.get(
        f"{server.urls['rest']}/api/status", headers={"Origin": "https://evil.example"}, timeout=5
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    answer = preflight(server, "https://evil.example")
    assert "access-control-allow-origin" not in answer.headers
    assert answer.status_code >= 400


def test_cors_is_open_for_configured_origins(make_server: Callable[..., TrainingStreamServer]) -> None:
    server = make_server(cors_origins=("https://app.example",))
    url = f"{server.urls['rest']}/api/status"
    ok = httpx.get(url, headers={"Origin": "https://app.example"}, timeout=5)
    assert ok.headers.get("access-control-allow-origin") == "https://app.example"
    answer = preflight(server, "https://app.example")
    assert answer.status_code == 200
    assert answer.headers.get("access-control-allow-origin") == "https://app.example"
    assert "GET" in answer.headers.get("access-control-allow-methods", "")
    assert "authorization" in answer.headers.get("access-control-allow-headers", "").lower()
    other = httpx.get(url, headers={"Origin": "https://evil.example"}, timeout=5)
    assert "access-control-allow-origin" not in other.headers
    refused = preflight(server, "https://evil.example")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_sse_cors_only_for_the_dashboard_and_configured_origins(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    server = make_server()
    url = f"{server.urls['sse']}/events"
    for origin, expected in (
        (f"http://127.0.0.1:{server.ports['rest']}", True),
        ("https://evil.example", False),
        (f"http://evil.example:{server.ports['rest']}", False),
    ):
        with httpx.stream("GET", url, headers={"Origin": origin}, timeout=5) as response:
            assert ("access-control-allow-origin" in response.headers) == expected, origin


def test_nothing_listens_beyond_the_three_ports(make_server: Callable[..., TrainingStreamServer]) -> None:
    before = {c.laddr.port for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    server = make_server()
    after = {c.laddr.port for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert after - before == set(server.ports.values())


# -- a hostile web page: DNS rebinding, cross-site WebSockets and posts --------------------------

EVIL = "http://evil.example"


@pytest.mark.parametrize("face", ["sse", "rest"])
def test_loopback_bind_refuses_a_foreign_host_header(
    make_server: Callable[..., TrainingStreamServer], face: str
) -> None:
    """DNS rebinding: a page at evil.example resolved to 127.0.0.1 still says Host: evil.example."""
    server = make_server()
    path = "/api/history" if face == "rest" else "/health"
    url = f"{server.urls[face]}{path}"
    refused = httpx.get(url, headers={"Host": "evil.example"}, timeout=5)
    assert refused.status_code == 403 and "allowed_hosts" in refused.json()["error"]
    for host in ("127.0.0.1", "localhost", f"localhost:{server.ports[face]}", "[::1]", "LOCALHOST"):
        assert httpx.get(url, headers={"Host": host}, timeout=5).status_code == 200, host
    # A Host that only starts like a loopback name is not one.
    for host in ("[::1]evil", "127.0.0.1:99999", "localhost:0", "localhost:", "[::1]:x", "127.0.0.1 evil"):
        assert httpx.get(url, headers={"Host": host}, timeout=5).status_code in (400, 403), host


def test_loopback_bind_refuses_a_foreign_host_on_the_websocket_port(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    server = make_server()
    sock = socket.create_connection(("127.0.0.1", server.ports["ws"]), timeout=5)
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://evil.example:{server.ports['ws']}/", sock=sock, open_timeout=5).__enter__()
    assert refused.value.response.status_code == 403
    sock.close()
    with pytest.raises(InvalidStatus) as doubled:
        ws_open(server, additional_headers={"Host": "evil.example"}).__enter__()
    assert doubled.value.response.status_code == 400


def test_allowed_hosts_adds_names_and_a_wildcard_bind_accepts_any_host(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    named = make_server(allowed_hosts=("metrics.lab",))
    url = f"{named.urls['rest']}/api/status"
    assert httpx.get(url, headers={"Host": "metrics.lab:8890"}, timeout=5).status_code == 200
    assert httpx.get(url, headers={"Host": "evil.example"}, timeout=5).status_code == 403
    wide = make_server(host="0.0.0.0", read_token=READ, publish_token=PUBLISH)
    url = f"{wide.urls['rest']}/api/status"
    assert httpx.get(url, headers={"Host": "evil.example", **bearer(READ)}, timeout=5).status_code == 200
    narrowed = make_server(host="0.0.0.0", read_token=READ, publish_token=PUBLISH, allowed_hosts=("lab",))
    url = f"{narrowed.urls['rest']}/api/status"
    assert httpx.get(url, headers={"Host": "evil.example", **bearer(READ)}, timeout=5).status_code == 403
    assert httpx.get(url, headers={"Host": "lab", **bearer(READ)}, timeout=5).status_code == 200


def rebound(server: TrainingStreamServer, name: str, face: str = "rest") -> dict[str, str]:
    """What a page served from ``http://<name>:<REST port>`` sends to ``face``: a
    Host naming the port it asks, its own origin (DNS rebinding: evil.example
    re-pointed at this machine makes the browser treat the hub as that page's origin)."""
    return {"Host": f"{name}:{server.ports[face]}", "Origin": f"http://{name}:{server.ports['rest']}"}


def own_names() -> list[str]:
    """Names under which a browser may reach a wildcard bind: an address, this machine's name."""
    return ["127.0.0.1", socket.gethostname()]


def ws_as(server: TrainingStreamServer, name: str, origin: str | None) -> Any:
    """A WebSocket handshake to the local port that says ``Host: <name>:<port>``."""
    sock = socket.create_connection(("127.0.0.1", server.ports["ws"]), timeout=5)
    return ws_connect(f"ws://{name}:{server.ports['ws']}/", sock=sock, origin=origin, open_timeout=5)


def test_a_rebound_page_cannot_publish_to_a_wildcard_bind(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    """Issue 22 M5: with a read token and no publish token, a rebound page counted
    as the dashboard (Origin = Host) and as a loopback peer, and published."""
    server = make_server(host="0.0.0.0", read_token=READ)
    body = b'{"run": "forged", "metrics": {"loss": 1}}'
    json_type = {"Content-Type": "application/json"}
    before = server.hub.last_seq
    refused = publish_raw(server, {**rebound(server, "evil.example"), **json_type}, body)
    assert refused.status_code == 403 and "allowed_hosts" in refused.json()["error"]
    assert server.hub.last_seq == before
    for name in own_names():
        answer = publish_raw(server, {**rebound(server, name), **json_type}, body)
        assert answer.status_code == 200, (name, answer.text)


def test_a_rebound_page_cannot_read_a_wildcard_bind(make_server: Callable[..., TrainingStreamServer]) -> None:
    """Issue 22 M5: with no tokens, a rebound page read everything, and its
    WebSocket counted as the dashboard's."""
    server = make_server(host="0.0.0.0")
    server.log({"loss": 0.5}, step=1, run="r")
    history = f"{server.urls['rest']}/api/history"
    events = f"{server.urls['sse']}/events?last_event_id=0"
    evil = rebound(server, "evil.example")
    # A page's own fetch() carries no Origin on a GET: the browser labels it same-origin.
    same_origin = {"Host": evil["Host"], "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    for headers in (evil, same_origin):
        refused = httpx.get(history, headers=headers, timeout=5)
        assert refused.status_code == 403 and "allowed_hosts" in refused.json()["error"], headers
    with httpx.stream("GET", events, headers=rebound(server, "evil.example", "sse"), timeout=5) as answer:
        assert answer.status_code == 403
    with pytest.raises(InvalidStatus) as ws_refused:
        ws_as(server, "evil.example", evil["Origin"]).__enter__()
    assert ws_refused.value.response.status_code == 403
    for name in own_names():
        assert httpx.get(history, headers=rebound(server, name), timeout=5).status_code == 200, name
        with httpx.stream("GET", events, headers=rebound(server, name, "sse"), timeout=5) as answer:
            assert answer.status_code == 200, name
        with ws_as(server, name, f"http://{name}:{server.ports['rest']}") as conn:
            assert ping(conn)["type"] == "pong", name
    # Not a browser (no Origin, no Sec-Fetch-*): a wildcard bind accepts any Host.
    assert httpx.get(history, headers={"Host": "evil.example"}, timeout=5).status_code == 200
    with ws_as(server, "evil.example", None) as conn:
        assert ping(conn)["type"] == "pong"


@pytest.mark.parametrize("origin", [EVIL, "null", f"{EVIL}:8890"])
def test_websocket_from_a_foreign_page_is_refused_by_default(
    make_server: Callable[..., TrainingStreamServer], origin: str
) -> None:
    server = make_server()
    with pytest.raises(InvalidStatus) as refused:
        ws_open(server, origin=origin).__enter__()
    assert refused.value.response.status_code == 403


def test_websocket_default_admits_non_browsers_and_the_dashboard(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    server = make_server()
    for origin in (
        None,
        f"http://127.0.0.1:{server.ports['rest']}",
        f"http://localhost:{server.ports['rest']}",
    ):
        with ws_open(server, origin=origin) as conn:
            assert ping(conn)["type"] == "pong", origin


def publish_raw(server: TrainingStreamServer, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(f"{server.urls['rest']}/api/publish", content=body, headers=headers, timeout=5)


def test_a_cross_site_form_post_cannot_publish(make_server: Callable[..., TrainingStreamServer]) -> None:
    """What a page can send without a CORS preflight: text/plain, with its Origin."""
    server = make_server()
    before = server.hub.last_seq
    body = b'{"run": "x", "metrics": {"loss": 1}}'
    form = publish_raw(server, {"Content-Type": "text/plain", "Origin": EVIL}, body)
    assert form.status_code in (403, 415)
    plain = publish_raw(server, {"Content-Type": "text/plain"}, body)
    assert plain.status_code == 415 and "application/json" in plain.json()["error"]
    foreign = publish_raw(server, {"Content-Type": "application/json", "Origin": EVIL}, body)
    assert foreign.status_code == 403
    assert server.hub.last_seq == before
    dashboard = {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{server.ports['rest']}"}
    assert publish_raw(server, dashboard, body).status_code == 200
    assert publish_raw(server, {"Content-Type": "application/json; charset=utf-8"}, body).status_code == 200


def _non_loopback_ipv4() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family.name == "AF_INET" and not address.address.startswith("127."):
                return str(address.address)
    return None


def test_publishing_from_another_machine_needs_a_publish_token(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    address = _non_loopback_ipv4()
    need(address is not None, "a non-loopback IPv4 address on this machine")
    assert address is not None
    open_server = make_server(host="0.0.0.0")
    body = b'{"run": "remote", "metrics": {"loss": 1}}'
    json_type = {"Content-Type": "application/json"}
    url = f"http://{address}:{open_server.ports['rest']}/api/publish"
    remote = httpx.post(url, content=body, headers=json_type, timeout=5)
    assert remote.status_code == 403 and "publish token" in remote.json()["error"]
    local = httpx.post(f"{open_server.urls['rest']}/api/publish", content=body, headers=json_type, timeout=5)
    assert local.status_code == 200
    tokened = make_server(host="0.0.0.0", publish_token=PUBLISH, read_token=READ)
    url = f"http://{address}:{tokened.ports['rest']}/api/publish"
    assert (
        httpx.post(url, content=body, headers={**json_type, **bearer(PUBLISH)}, timeout=5).status_code == 200
    )


@pytest.mark.parametrize("face", ["sse", "rest"])
def test_cross_site_no_cors_requests_are_refused_but_cors_and_the_framed_dashboard_pass(
    make_server: Callable[..., TrainingStreamServer], face: str
) -> None:
    """Another site's page looping <img src=".../api/history?limit=10000"> slowed training:
    the browser labels such requests cross-site, and they are refused."""
    server = make_server(cors_origins=("https://app.example",))
    path = "/api/history" if face == "rest" else "/events?last_event_id=0&limit=1"
    url = f"{server.urls[face]}{path}"
    cross = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    refused = httpx.get(url, headers=cross, timeout=5)
    assert refused.status_code == 403 and "cross-site" in refused.json()["error"]
    # A CORS request from an allowed site's script is a cross-site request too: it passes.
    if face == "rest":
        allowed = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Origin": "https://app.example"}
        assert httpx.get(url, headers=allowed, timeout=5).status_code == 200
        other = {**allowed, "Origin": "https://evil.example"}
        assert httpx.get(url, headers=other, timeout=5).status_code == 403
        # The dashboard page, framed by a notebook on another origin.
        framed = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}
        assert httpx.get(f"{server.urls['rest']}/", headers=framed, timeout=5).status_code == 200
        assert httpx.get(url, headers=framed, timeout=5).status_code == 403  # only the page itself
    # Same-site, same-origin, a typed URL (none) and non-browsers (no header) are not affected.
    for site in ("same-origin", "same-site", "none"):
        assert (
            httpx.get(
                f"{server.urls['rest']}/api/status", headers={"Sec-Fetch-Site": site}, timeout=5
            ).status_code
            == 200
        )
    assert httpx.get(f"{server.urls['rest']}/api/status", timeout=5).status_code == 200


# -- what a browser may do with an answer (issue 22 L8) -----------------------------------------


def test_fastapis_cdn_docs_are_gone_and_the_openapi_schema_stays(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    """/docs and /redoc loaded Swagger UI and ReDoc from a CDN into the hub's
    origin, unchecked: they are 404 on both HTTP ports."""
    server = make_server()
    for base in (server.urls["rest"], server.urls["sse"]):
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert httpx.get(f"{base}{path}").status_code == 404, (base, path)
    schema = httpx.get(f"{server.urls['rest']}/openapi.json")
    assert schema.status_code == 200 and "/api/runs" in schema.json()["paths"]


def test_every_http_answer_says_nosniff(make_server: Callable[..., TrainingStreamServer]) -> None:
    """REST JSON, Prometheus text, exports, errors and refusals, the SSE
    stream and the WebSocket handshake (accepted or refused) all carry
    ``X-Content-Type-Options: nosniff``."""
    server = make_server()
    server.log({"loss": 0.5}, step=1, run="r")
    rest, sse = server.urls["rest"], server.urls["sse"]
    answers = [
        httpx.get(f"{rest}/health"),
        httpx.get(f"{rest}/api/status"),
        httpx.get(f"{rest}/api/runs/r/export", params={"format": "csv"}),
        httpx.get(f"{rest}/metrics"),
        httpx.get(f"{rest}/dashboard/app.js"),
        httpx.get(f"{rest}/api/history", params={"since": "x"}),  # 4xx
        httpx.get(f"{rest}/nothing-here"),  # 404
        httpx.get(f"{rest}/health", headers={"Host": "evil.example"}),  # refused by the Host check
        httpx.post(f"{rest}/api/publish", content=b"{}", headers={"Content-Type": "text/plain"}),  # 415
        httpx.get(f"{sse}/health"),
    ]
    assert {a.status_code for a in answers} >= {200, 403, 404, 415}
    for answer in answers:
        assert answer.headers.get("x-content-type-options") == "nosniff", (answer.request.url, answer.headers)
    with SSEStream(f"{sse}/events", headers={"Last-Event-ID": "0"}) as stream:
        assert stream.next() is not None
        assert stream.response.headers.get("x-content-type-options") == "nosniff"
    with ws_connect(server.urls["ws"] + "/") as conn:
        assert conn.response.headers.get("X-Content-Type-Options") == "nosniff"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(server.urls["ws"] + "/elsewhere").close()
    assert refused.value.response.headers.get("X-Content-Type-Options") == "nosniff"


def test_the_dashboard_page_carries_its_content_security_policy(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    """Scripts, styles and connections from this hub only (its SSE and
    WebSocket ports, on the host the page was asked for), embedding by this
    machine's pages, VS Code and ``cors_origins`` only; no referrer."""
    server = make_server(cors_origins=("https://lab.example.org",))
    ports = server.ports
    page = httpx.get(server.urls["rest"] + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = {
        name: values
        for name, *values in (d.split() for d in page.headers["content-security-policy"].split(";"))
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == [
        "'self'",
        f"http://127.0.0.1:{ports['sse']}",
        f"ws://127.0.0.1:{ports['ws']}",
    ]
    assert policy["frame-ancestors"] == [
        "'self'",
        "http://localhost:*",
        "http://127.0.0.1:*",
        "vscode-webview:",
        "vscode-file:",
        "https://lab.example.org",
    ]
    assert policy["base-uri"] == ["'none'"] and policy["form-action"] == ["'none'"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    # The page connects to the name it was asked for: so does its policy.
    by_name = httpx.get(f"http://localhost:{ports['rest']}/").headers["content-security-policy"]
    assert f"connect-src 'self' http://localhost:{ports['sse']} ws://localhost:{ports['ws']}" in by_name
    assert "<script>" not in page.text and "<style" not in page.text and " style=" not in page.text
