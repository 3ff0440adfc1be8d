"""Bad input on every face: WebSocket junk and ping floods, malformed SSE
resume points and queries, publish bodies the encoder cannot write. The long
randomized runs over REST (schemathesis, arbitrary ``POST /api/publish``
bodies and ``since`` values) are in ``tests/stress/test_fuzz.py``.

The invariant everywhere: a client error is a 4xx (or an error frame) and the
server keeps serving; never a 500, never a dropped connection for a bad
message.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from stream_hub import TrainingStreamServer

from ..clients import (
    FUZZ,
    assert_still_serving,
    json_values,
    ready,
    strict_json,
    until_pong,
    valid_seq,
    ws_connect,
    ws_open,
)
from ..conftest import wait_for

# -- WebSocket junk ------------------------------------------------------------------------------

ws_fields = st.dictionaries(
    st.sampled_from(["runs", "types", "since", "epoch", "extra"]),
    json_values | st.sampled_from(["0", "5", "²", "-1", "9" * 30, "a,b", ""]) | st.just(2**70),
    max_size=3,
)
ws_messages = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.builds(
        lambda op, rest: json.dumps({"op": op, **rest}),
        st.sampled_from(["subscribe", "ping", "unsubscribe", "", "PING"]) | json_values,
        ws_fields,
    ),
)


@pytest.fixture
def junk_ws(fuzzed: TrainingStreamServer) -> Iterator[Any]:
    with ws_open(fuzzed, max_size=None) as ws:
        yield ws


def _is_ping(message: str | bytes) -> bool:
    """Does the server take this message for a ping (and answer a pong)?"""
    if isinstance(message, bytes):
        return False
    try:
        value = orjson.loads(message)  # the server's parser, not json's
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and value.get("op") == "ping"


@FUZZ
@given(message=ws_messages | st.binary(max_size=200))
def test_websocket_junk_gets_an_error_frame_and_the_connection_stays(
    junk_ws: Any, message: str | bytes
) -> None:
    junk_ws.send(message)
    frames = until_pong(junk_ws)  # raises ConnectionClosed if the server dropped us
    if _is_ping(message):  # the junk itself was a ping: its pong came first, then ours
        frames = until_pong(junk_ws, send=False)
    errors = [f for f in frames if f.get("type") == "error"]
    assert len(errors) <= 1
    for f in errors:
        assert isinstance(f["error"], str) and f["error"]
    if isinstance(message, bytes):
        assert errors, "a binary frame must get an error frame"
    # Anything else before the pong is a replayed event, with a seq.
    assert all("seq" in f for f in frames if f.get("type") != "error"), frames


@pytest.mark.parametrize("since", ["²", "١٢", " 3", "3.0", "0x10", "-0", "1e3"])
def test_websocket_since_strings(fuzzed: TrainingStreamServer, since: str) -> None:
    """``since`` as a string: ASCII digits or an error frame, never a dropped connection."""
    with ws_open(fuzzed) as ws:
        ws.send(json.dumps({"op": "subscribe", "since": since}))
        frames = until_pong(ws)
    if since.strip().isascii() and since.strip().isdigit():
        assert frames and frames[0]["seq"] == int(since) + 1
    else:
        assert [f["type"] for f in frames] == ["error"], frames


async def test_frame_over_max_message_size_closes_1009(fuzzed: TrainingStreamServer) -> None:
    limit = fuzzed.config.max_message_size
    async with ws_connect(fuzzed) as ws:
        await ws.send(json.dumps({"op": "ping", "pad": "x" * (limit - 40)}))
        assert strict_json(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
        await ws.send("x" * (limit + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert_still_serving(fuzzed)


async def test_ping_flood_is_answered_and_other_clients_keep_receiving(fuzzed: TrainingStreamServer) -> None:
    """5 000 pings in one burst: every one answered, while another client gets
    every event published meanwhile — during the flood, not queued behind it."""
    async with (
        ws_connect(fuzzed, max_queue=None) as flooder,
        ws_connect(fuzzed) as observer,
    ):
        await ready(observer)
        published: list[tuple[int, float]] = []

        def publisher() -> None:
            for i in range(50):
                published.append((fuzzed.log({"i": i}, step=i, run="during-flood"), time.monotonic()))
                time.sleep(0.01)  # pacing of the publisher

        async def flood() -> tuple[int, float]:
            ping = json.dumps({"op": "ping"})
            for _ in range(5000):
                await flooder.send(ping)
            pongs = 0
            while pongs < 5000:
                frame = strict_json(await asyncio.wait_for(flooder.recv(), 10))
                if frame.get("type") == "pong":
                    pongs += 1
            return pongs, time.monotonic()

        async def observe() -> list[tuple[int, float]]:
            got: list[tuple[int, float]] = []
            while len(got) < 50:
                frame = strict_json(await asyncio.wait_for(observer.recv(), 10))
                if frame.get("run") == "during-flood":
                    got.append((frame["seq"], time.monotonic()))
            return got

        thread = threading.Thread(target=publisher)
        thread.start()
        try:
            (pongs, flood_answered), got = await asyncio.gather(flood(), observe())
        finally:
            await asyncio.to_thread(thread.join, 30)
    assert pongs == 5000
    assert [seq for seq, _ in got] == [seq for seq, _ in published]
    # Interleaved with the flood's answers, not delivered after all of them
    # (no time bound: a loaded machine stretches both alike).
    assert got[0][1] < flood_answered, "the other client received nothing until the flood was answered"
    assert_still_serving(fuzzed)


# -- SSE: malformed resume points and query values --------------------------------------------


def raw_request(port: int, target: str, headers: dict[str, bytes] | None = None) -> tuple[int, bytes]:
    """Send one GET over a raw socket (any header bytes) and return (status, body start)."""
    lines = [f"GET {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(4096)
            if not part:
                break
            data += part
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), data[:200]
    return int(status_line.split()[1]), data.split(b"\r\n\r\n", 1)[-1]


header_values = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\0" not in b)


@FUZZ
@given(value=header_values | st.sampled_from([b"\xb2", b"12", b" 7 ", b"-1", b"1e3", b"9" * 19]))
def test_sse_last_event_id_header_is_200_or_400(fuzzed: TrainingStreamServer, value: bytes) -> None:
    status, body = raw_request(fuzzed.ports["sse"], "/events", {"Last-Event-ID": value})
    assert status in (200, 400), (value, status, body[:200])
    if status == 400 and body.startswith(b"{"):
        assert "Last-Event-ID" in strict_json(body)["error"]
    # h11 refuses some header bytes itself (400); a value it passes is judged by its digits.
    if status == 200:
        assert valid_seq(value.decode("latin-1")), value


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["last_event_id", "run", "types", "epoch", "token"]),
        st.text(max_size=30) | st.sampled_from(["²", "١٢", "5", "", "a,b", "x" * 300]),
        max_size=4,
    )
)
def test_sse_query_values_are_200_or_400(fuzzed: TrainingStreamServer, params: dict[str, str]) -> None:
    target = "/events?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
    status, body = raw_request(fuzzed.ports["sse"], target)
    assert status in (200, 400), (params, status, body[:200])
    if "last_event_id" in params and not valid_seq(params["last_event_id"]):
        assert status == 400, params


def test_sse_clients_are_all_gone_after_the_fuzzing(fuzzed: TrainingStreamServer) -> None:
    wait_for(lambda: fuzzed.status()["clients"]["sse"] == 0, timeout=10, what="no SSE client left")
    assert_still_serving(fuzzed)


# -- POST /api/publish: deeper than the encoder writes ------------------------------------------


def test_publish_nested_too_deep_for_the_encoder_is_refused_or_stored(fuzzed: TrainingStreamServer) -> None:
    """JSON the parser accepts but the encoder refuses (nesting deeper than
    orjson writes): either a 4xx now, or stored, never a 200 for an event
    that then vanishes."""
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    response = httpx.post(
        f"{fuzzed.urls['rest']}/api/publish",
        timeout=10,
        content=json.dumps({"type": "note", "data": deep}),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code in (200, 400, 413, 422), response.text
    if response.status_code == 200:
        seq = response.json()["seqs"][0]
        wait_for(lambda: fuzzed.hub.head >= seq, what="the event committed")
        events = httpx.get(
            f"{fuzzed.urls['rest']}/api/history", timeout=10, params={"since": seq - 1, "limit": 1}
        ).json()["events"]
        assert events[0]["seq"] == seq and events[0]["type"] == "note", events[0]
