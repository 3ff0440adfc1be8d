"""The limits that keep the server up: client counts, message and body sizes,
clients that never finish a handshake, and subscribers that never read.
(100 MB through never-reading clients and running out of file descriptors are
in ``tests/stress/test_limits.py``.)"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stream_hub import TrainingStreamServer

from ..clients import SSEStream, ping, stalled_sse, stalled_ws, ws_open
from ..conftest import wait_for

# -- max_clients -----------------------------------------------------------------------------


def test_sse_max_clients_is_503_with_a_message_and_frees_up(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    server = make_server(max_clients=2)
    url = f"{server.urls['sse']}/events"
    first, second = SSEStream(url), SSEStream(url)
    try:
        wait_for(lambda: server.status()["clients"]["sse"] == 2, what="two SSE clients")
        refused = httpx.get(url, timeout=5)
        assert refused.status_code == 503
        assert "max_clients=2" in refused.json()["error"]
        # The other transports have their own count.
        with ws_open(server) as conn:
            assert ping(conn)["type"] == "pong"
        first.close()
        wait_for(lambda: server.status()["clients"]["sse"] == 1, what="a slot freed")
        third = SSEStream(url)
        try:
            assert third.response.status_code == 200
            seq = server.log({"x": 1})
            assert third.read_until_seq(seq)[-1].seq == seq
        finally:
            third.close()
    finally:
        first.close()
        second.close()


def test_ws_max_clients_rejects_the_handshake_with_503_and_frees_up(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    server = make_server(max_clients=2)
    with ws_open(server) as a, ws_open(server) as b:
        ping(a), ping(b)
        assert server.status()["clients"]["ws"] == 2
        with pytest.raises(InvalidStatus) as refused:
            ws_open(server).__enter__()
        assert refused.value.response.status_code == 503
        assert b"max_clients=2" in refused.value.response.body
        # SSE has its own count.
        stream = SSEStream(f"{server.urls['sse']}/events")
        try:
            assert stream.response.status_code == 200
        finally:
            stream.close()
        a.close()
        wait_for(lambda: server.status()["clients"]["ws"] == 1, what="a slot freed")
        with ws_open(server) as c:
            assert ping(c)["type"] == "pong"


# -- message and body sizes --------------------------------------------------------------------


def test_ws_message_at_the_limit_is_handled_one_byte_over_closes_1009(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    server = make_server(max_message_size=2048)
    with ws_open(server) as conn:
        head = '{"op": "ping", "pad": "'
        exact = head + "x" * (2048 - len(head) - 2) + '"}'
        assert len(exact.encode()) == 2048
        conn.send(exact)
        assert json.loads(conn.recv(timeout=5))["type"] == "pong"
        conn.send(exact[:-2] + 'x"}')
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with ws_open(server) as again:  # the server serves on
        assert ping(again)["type"] == "pong"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_publish_body_over_max_body_size_is_413(
    make_server: Callable[..., TrainingStreamServer], declared: bool
) -> None:
    server = make_server(max_body_size=4096)
    url = f"{server.urls['rest']}/api/publish"
    event = {"type": "note", "data": ""}
    fits = json.dumps({**event, "data": "x" * (4096 - len(json.dumps(event)))}).encode()
    assert len(fits) == 4096
    too_big = fits[:-2] + b'x"}'

    def body(data: bytes) -> Any:
        if declared:
            return data
        return iter([data[i : i + 1000] for i in range(0, len(data), 1000)])  # no Content-Length

    json_type = {"Content-Type": "application/json"}
    ok = httpx.post(url, content=body(fits), timeout=5, headers=json_type)
    assert ok.status_code == 200, ok.text
    refused = httpx.post(url, content=body(too_big), timeout=5, headers=json_type)
    assert refused.status_code == 413
    assert "max_body_size" in refused.json()["error"]
    huge = httpx.post(url, content=body(b"x" * 5_000_000), timeout=10, headers=json_type)
    assert huge.status_code == 413
    assert server.status()["running"]


# -- handshakes that never finish ------------------------------------------------------------


def closed_after(port: int, send: bytes = b"", limit: float = 10.0) -> float:
    """Connect, send ``send`` (maybe nothing), and time how long until the server closes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        if send:
            sock.sendall(send)
        while True:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                break
            if not data:
                break
    return time.monotonic() - started


@pytest.mark.parametrize("face", ["sse", "rest", "ws"])
@pytest.mark.parametrize(
    "send", [b"", b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n"], ids=["silent", "partial-request"]
)
def test_connection_that_never_completes_its_handshake_is_closed(
    make_server: Callable[..., TrainingStreamServer], face: str, send: bytes
) -> None:
    server = make_server(handshake_timeout=0.5)
    elapsed = closed_after(server.ports[face], send)
    assert 0.4 <= elapsed < 3.0, f"{face}: closed after {elapsed:.2f} s (handshake_timeout 0.5 s)"


def test_completed_http_request_is_not_cut_by_the_handshake_timeout(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    server = make_server(handshake_timeout=0.5)
    stream = SSEStream(f"{server.urls['sse']}/events", read_timeout=5)
    try:
        first = server.log({"x": 1})
        assert stream.read_until_seq(first)[-1].seq == first
        # Still open well after the timeout (a heartbeat keeps it busy meanwhile).
        wait_for(lambda: server.status()["uptime_s"] > 1.5, timeout=5, what="time to pass")
        second = server.log({"x": 2})
        assert stream.read_until_seq(second)[-1].seq == second
    finally:
        stream.close()


def test_many_silent_connections_are_all_closed(make_server: Callable[..., TrainingStreamServer]) -> None:
    """Silent clients on every port are all closed, and their descriptors come
    back (no slow exhaustion)."""
    server = make_server(handshake_timeout=0.5)
    proc = psutil.Process()
    fds_before = proc.num_fds()
    started = time.monotonic()
    socks = [
        socket.create_connection(("127.0.0.1", server.ports[face]), timeout=5)
        for face in ("sse", "rest", "ws")
        for _ in range(20)
    ]
    try:
        open_ = list(socks)
        deadline = started + 5
        while open_ and time.monotonic() < deadline:
            readable, _, _ = select.select(open_, [], [], 0.1)
            for sock in readable:
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert not data, data
                open_.remove(sock)
        assert not open_, f"{len(open_)} of {len(socks)} silent connections still open after 5 s"
        assert time.monotonic() - started >= 0.4
    finally:
        for sock in socks:
            sock.close()
    wait_for(
        lambda: proc.num_fds() <= fds_before,
        timeout=5,
        what=f"descriptors back to {fds_before} (now {proc.num_fds()})",
    )


# -- subscribers that never read --------------------------------------------------------------


# -- requests trickled a byte at a time (slowloris) ----------------------------------------------


def _trickle_until_closed(sock: socket.socket, data: bytes, limit: float) -> float:
    """Send ``data`` one byte every 0.1 s; return when the server closes the
    connection (the time since the first byte), or fail after ``limit`` s."""
    started = time.monotonic()
    sock.setblocking(False)
    for byte in data:
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return time.monotonic() - started
            if not chunk:
                return time.monotonic() - started
        if time.monotonic() - started > limit:
            break
    raise AssertionError(f"still open {time.monotonic() - started:.1f} s into a trickled request")


def _keep_alive_request(port: int) -> socket.socket:
    """A connection whose first request was answered in full (kept alive)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while b'"ok"' not in answer:
        answer += sock.recv(4096)
    return sock


@pytest.mark.parametrize("face", ["sse", "rest"])
def test_a_trickled_second_request_is_closed_at_the_deadline(
    make_server: Callable[..., TrainingStreamServer], face: str
) -> None:
    server = make_server(handshake_timeout=1.0)
    sock = _keep_alive_request(server.ports[face])
    try:
        second = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
        elapsed = _trickle_until_closed(sock, second, limit=8.0)
        assert elapsed < 5.0, f"{face}: closed {elapsed:.1f} s into the request (deadline 1 s)"
    finally:
        sock.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_trickled_request_body_is_closed_at_the_deadline(
    make_server: Callable[..., TrainingStreamServer], chunked: bool
) -> None:
    server = make_server(handshake_timeout=1.0)
    body = json.dumps({"run": "slow", "metrics": {"x": 1}, "pad": "p" * 200}).encode()
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    head = (
        b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + framing
        + b"\r\n\r\n"
    )
    if chunked:
        body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", server.ports["rest"]), timeout=5)
    try:
        sock.sendall(head)
        elapsed = _trickle_until_closed(sock, body, limit=8.0)
        assert elapsed < 5.0, f"closed {elapsed:.1f} s into the body (deadline 1 s)"
    finally:
        sock.close()
    assert server.hub.runs.runs.get("slow") is None  # nothing half-received was published


# -- subscribers that stop reading are evicted ------------------------------------------------------


def _was_closed(sock: socket.socket) -> bool:
    """Drain what the server sent; True once it has closed the connection."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_clients_that_stop_reading_are_evicted_and_counted(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    """Stalled SSE and WebSocket clients resuming from far back are closed after
    send_timeout (the WebSocket one despite a ping that can never be sent),
    counted, and a healthy client meanwhile gets every event."""
    server = make_server(history_size=20_000, send_timeout=1.0, heartbeat_interval=2.0)
    blob = "b" * 1000
    last = [server.publish("blob", {"b": blob}) for _ in range(5000)][-1]  # ~5 MB to resume through
    wait_for(lambda: server.hub.head >= last, what="commit")
    healthy = SSEStream(f"{server.urls['sse']}/events", read_timeout=10)
    stalled = [stalled_sse(server, last_event_id=0) for _ in range(5)]
    stalled += [stalled_ws(server, "?since=0") for _ in range(5)]
    try:
        wait_for(lambda: server.status()["clients"]["evicted"] == 10, timeout=15, what="10 evictions")
        # The evicted connections were really closed, from the server's side.
        wait_for(lambda: all(_was_closed(s) for s in stalled), timeout=5, what="stalled sockets closed")
        seqs = [server.log({"i": i}) for i in range(100)]
        assert [e.seq for e in healthy.read_until_seq(seqs[-1])][-100:] == seqs
        assert server.status()["clients"] == {"sse": 1, "ws": 0, "evicted": 10}
        metrics = httpx.get(f"{server.urls['rest']}/metrics", timeout=5).text
        assert "stream_hub_clients_evicted_total 10.0" in metrics
    finally:
        healthy.close()
        for sock in stalled:
            sock.close()


def test_a_client_past_its_byte_budget_is_evicted_at_once(
    make_server: Callable[..., TrainingStreamServer],
) -> None:
    server = make_server(client_buffer_bytes=64 * 1024, send_timeout=60.0)
    sock = stalled_sse(server, last_event_id=0)
    try:
        wait_for(lambda: server.status()["clients"]["sse"] == 1, what="connected")
        blob = "z" * 30_000
        for _ in range(200):  # 6 MB: far past what the kernel buffers and 64 KiB can hold
            server.publish("blob", {"b": blob})
            if server.status()["clients"]["evicted"]:
                break
        wait_for(lambda: server.status()["clients"]["evicted"] == 1, timeout=10, what="eviction")
    finally:
        sock.close()
