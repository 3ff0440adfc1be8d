"""The test suite's clients of the three faces, written once.

* strict JSON: ``json.loads`` that refuses the ``NaN``/``Infinity`` tokens
  Python accepts (a browser's ``JSON.parse`` would choke on them);
* the wire contract: the keys every event and every status answer carries;
* SSE: a parser that reads frames as a browser's EventSource does
  (``id:``/``event:``/``data:`` lines, ``:`` comments, a blank line ends a
  frame), a stream over a real httpx connection, and a decoder for a whole
  body (the chunks the hub hands the transports);
* WebSocket: the asyncio helpers (``recv_json``, ``ready``, ``subscribe``,
  ``expect_closed``, ...), the same few for the sync client, and a decoder for
  the frames the server builds by hand;
* clients that connect and then never read (a tiny receive buffer makes the
  server's writes to them block almost at once);
* arbitrary input for fuzzing (hypothesis) and what the server must accept.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from stream_hub import TrainingStreamServer

# -- strict JSON ---------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not valid JSON: bare {name}")


def strict_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses NaN/Infinity (Python accepts them by default)."""
    return json.loads(text, parse_constant=_reject_constant)


def json_body(response: httpx.Response) -> Any:
    """A response's body as strict JSON, after checking it says it is JSON."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return strict_json(response.text)


# -- the wire contract ---------------------------------------------------------------------

EVENT_KEYS_METRIC = {"seq", "epoch", "ts", "type", "run", "step", "metrics"}
EVENT_KEYS_DATA = {"seq", "epoch", "ts", "type", "run", "step", "data"}
STATUS_KEYS = {
    "running",
    "ref_count",
    "pid",
    "uptime_s",
    "ports",
    "urls",
    "epoch",
    "last_seq",
    "history",
    "clients",
    "events",
    "loop_thread_alive",
    "restarts",
    "role",  # contract v2
}
# status()["store"], present while the hub has a store (StreamConfig.store)
STORE_STATUS_KEYS = {
    "path",
    "journal",
    "events",
    "bytes",
    "written",
    "queued",
    "lag_s",
    "dropped",
    "errors",
    "deleted",
    "last_seq",
}


def valid_seq(text: str) -> bool:
    """What the server accepts as a resume point (whitespace only: none given)."""
    text = text.strip()
    return text == "" or (text.isascii() and text.isdigit() and len(text) <= 18)


def assert_still_serving(server: TrainingStreamServer) -> None:
    """``/health`` answers on the SSE and the REST port."""
    for face in ("sse", "rest"):
        assert httpx.get(f"{server.urls[face]}/health", timeout=5).status_code == 200


# -- SSE -----------------------------------------------------------------------------------


@dataclass
class Frame:
    """One SSE event frame."""

    id: str | None
    event: str | None
    data: str

    @property
    def json(self) -> dict[str, Any]:
        value = strict_json(self.data)
        assert isinstance(value, dict), self.data
        return value

    @property
    def seq(self) -> int:
        return int(self.json["seq"])


class SSEParser:
    """Lines in, frames out, as EventSource reads them; comments are kept."""

    def __init__(self) -> None:
        self.comments: list[str] = []
        self._fields: dict[str, str] = {}
        self._data: list[str] = []

    def feed(self, line: str) -> Frame | None:
        """Take one line (without its line ending); the frame it completes, if any."""
        if line == "":
            if not self._fields and not self._data:
                return None
            frame = Frame(self._fields.get("id"), self._fields.get("event"), "\n".join(self._data))
            self._fields, self._data = {}, []
            return frame
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        else:
            self._fields[name] = value
        return None


def sse_frames(body: str | bytes) -> list[Frame]:
    """Every complete frame of an SSE body (any of its line endings)."""
    text = body.decode() if isinstance(body, bytes) else body
    parser = SSEParser()
    frames = (parser.feed(line) for line in text.replace("\r\n", "\n").split("\n"))
    return [frame for frame in frames if frame is not None]


def sse_events(body: str | bytes) -> list[dict[str, Any]]:
    """Each frame's event, checking that its ``id:`` and ``event:`` lines agree
    with the ``seq`` and ``type`` in its data."""
    events = []
    for frame in sse_frames(body):
        event = frame.json
        assert frame.id == str(event["seq"]), (frame.id, event)
        assert frame.event == event["type"], (frame.event, event)
        events.append(event)
    return events


class SSEStream:
    """One ``GET /events`` over a real httpx connection, parsed into frames."""

    def __init__(
        self,
        url: str,
        *,
        params: Any = None,
        headers: dict[str, str] | None = None,
        read_timeout: float = 10.0,
    ) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=read_timeout))
        self._ctx = self._client.stream("GET", url, params=params, headers=headers)
        self.response = self._ctx.__enter__()
        self._parser = SSEParser()
        self.comments = self._parser.comments
        self.lines: Iterator[str] = self.response.iter_lines()

    def next(self) -> Frame | None:
        """The next event frame, or None when the stream has ended."""
        assert self.response.status_code == 200, (self.response.status_code, self.response.read())
        for line in self.lines:
            frame = self._parser.feed(line)
            if frame is not None:
                return frame
        return None

    def read(self, n: int) -> list[Frame]:
        frames = []
        for _ in range(n):
            frame = self.next()
            assert frame is not None, f"stream ended after {len(frames)} of {n} frames"
            frames.append(frame)
        return frames

    def read_until_seq(self, seq: int) -> list[Frame]:
        """Frames up to and including the one with ``id == seq``."""
        frames = []
        while True:
            frame = self.next()
            assert frame is not None, f"stream ended before seq {seq}: got {[f.id for f in frames]}"
            frames.append(frame)
            if frame.id is not None and int(frame.id) >= seq:
                return frames

    def close(self) -> None:
        try:
            self._ctx.__exit__(None, None, None)
        finally:
            self._client.close()

    def __enter__(self) -> SSEStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- WebSocket, asyncio client -------------------------------------------------------------


def ws_url(server: TrainingStreamServer, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.ports['ws']}{path}"


def ws_connect(server: TrainingStreamServer, path: str = "/", **kwargs: Any) -> Any:
    """``async with ws_connect(server) as ws``: the asyncio client, no proxy, short timeouts."""
    return async_connect(ws_url(server, path), proxy=None, open_timeout=5, close_timeout=2, **kwargs)


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """One frame: must be a text frame holding exactly one JSON object."""
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str), f"expected a text frame, got {type(message).__name__}"
    value = strict_json(message)
    assert isinstance(value, dict), message
    return value


async def recv_until_seq(ws: ClientConnection, seq: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    out = []
    while True:
        event = await recv_json(ws, timeout)
        out.append(event)
        if event.get("seq", -1) >= seq:
            return out


async def ready(ws: ClientConnection, skip_events: bool = False) -> dict[str, Any]:
    """Ping and wait for the pong: the connection's handler is running.

    With ``skip_events``, events published meanwhile may come before the pong.
    """
    await ws.send(json.dumps({"op": "ping"}))
    while True:
        frame = await recv_json(ws)
        if frame["type"] == "pong" or not skip_events:
            assert frame["type"] == "pong", frame
            return frame
        assert "seq" in frame, frame  # an event, never an error


async def subscribe(ws: ClientConnection, **fields: Any) -> list[dict[str, Any]]:
    """Subscribe, then ping: returns the frames before the pong (the replay).

    The server handles one client message at a time, so once the pong is back
    the subscription is in force and its replay has been sent.
    """
    await ws.send(json.dumps({"op": "subscribe", **fields}))
    await ws.send(json.dumps({"op": "ping"}))
    frames = []
    while True:
        frame = await recv_json(ws)
        if frame.get("type") == "pong":
            return frames
        frames.append(frame)


async def expect_closed(ws: ClientConnection, timeout: float = 5.0) -> ConnectionClosed:
    """Read until the server closes; every frame before must be an event."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc
    raise AssertionError("unreachable")  # pragma: no cover


# -- WebSocket, sync client ----------------------------------------------------------------


def ws_open(server: TrainingStreamServer, query: str = "", **kwargs: Any) -> SyncConnection:
    """``with ws_open(server) as conn``: the sync client on ``/`` plus ``query``."""
    return sync_connect(f"{server.urls['ws']}/{query}", proxy=None, open_timeout=5, close_timeout=1, **kwargs)


def send_op(conn: SyncConnection, op: str, **fields: Any) -> None:
    conn.send(json.dumps({"op": op, **fields}))


def until_pong(conn: SyncConnection, send: bool = True) -> list[dict[str, Any]]:
    """Ping (unless told not to), then every frame up to the pong (errors, a replay)."""
    if send:
        send_op(conn, "ping")
    frames = []
    while True:
        frame = strict_json(conn.recv(timeout=5))
        if frame.get("type") == "pong":
            return frames
        frames.append(frame)


def ping(conn: SyncConnection) -> dict[str, Any]:
    """Ping and return the pong (events that come first are passed over)."""
    send_op(conn, "ping")
    while True:
        frame = strict_json(conn.recv(timeout=5))
        if frame.get("type") == "pong":
            return dict(frame)


def events_until(conn: SyncConnection, seq: int) -> list[dict[str, Any]]:
    """Frames up to and including ``seq``, pongs left out."""
    out: list[dict[str, Any]] = []
    while not out or out[-1].get("seq", -1) < seq:
        event = strict_json(conn.recv(timeout=5))
        if event.get("type") != "pong":
            out.append(event)
    return out


def ws_events(data: bytes) -> list[dict[str, Any]]:
    """Decode unmasked server text frames (7-, 16- and 64-bit lengths) into events."""
    out, i = [], 0
    while i < len(data):
        assert data[i] == 0x81, data[i : i + 2]  # FIN + text
        n = data[i + 1]
        i += 2
        if n == 126:
            n = int.from_bytes(data[i : i + 2], "big")
            i += 2
        elif n == 127:
            n = int.from_bytes(data[i : i + 8], "big")
            i += 8
        out.append(strict_json(data[i : i + n]))
        i += n
    return out


# -- clients that never read -------------------------------------------------------------------


def _small_buffer_connection(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def stalled_sse(server: TrainingStreamServer, last_event_id: int | None = None) -> socket.socket:
    """Sends ``GET /events`` (resuming after ``last_event_id``, if given) and never reads."""
    sock = _small_buffer_connection(server.ports["sse"])
    target = b"/events" if last_event_id is None else b"/events?last_event_id=%d" % last_event_id
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n" % target)
    return sock


def stalled_ws(server: TrainingStreamServer, query: str = "") -> socket.socket:
    """Completes the opening handshake on ``/`` plus ``query``, then never reads again."""
    sock = _small_buffer_connection(server.ports["ws"])
    sock.sendall(
        b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % query.encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:  # the 101 response, then nothing more is read
        chunk = sock.recv(1)
        assert chunk, "server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


# -- arbitrary input -------------------------------------------------------------------------

# The settings of every fuzz test: module-scoped servers, requests that take their time.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
