"""What processes of one machine say to their hub: frames on a local channel.

The channel is a Unix socket in the registry directory (only this user can
reach it, and the host checks the peer's uid), or a loopback TCP socket
where Unix sockets are missing. Every message is one frame: a 4-byte
big-endian length, then a JSON object with an ``op``:

=============  ===========================================================
joiner → host  ``hello`` {token, source, pid, rank, host, role, version}
host → joiner  ``welcome`` {epoch, pid, ports, urls, acked, last_seq}
joiner → host  ``batch`` {n, events, dropped, dropped_runs?}: events
               ``[ts, type, run, step, payload, rank]``; ``dropped``: the
               events the joiner dropped so far, ``dropped_runs`` the same
               per run (when it dropped any)
host → joiner  ``ack`` {n, last_seq}
host → joiner  ``refused`` {error}
host → joiner  ``handover`` {state}, then ``go``: take over as host
=============  ===========================================================

Batch numbers ``n`` count up per source (a joined process or forked child,
named by a random ``source`` id). The host remembers the last batch it took
from each source and acknowledges a batch it already has without taking it
again, so a joiner that resends after a reconnect delivers every event once.

A metric event's payload is its metrics (NaN and the infinities as the
strings the wire uses); any other event's payload is its data, already
encoded, as a JSON string, so the host stores it without parsing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import struct
from typing import Any

import orjson

from ..core.intake import FIELDS, Submission
from ..events import validate_metrics, validate_run, validate_step, validate_type, wire_numbers

__all__ = [
    "HEADER",
    "MAX_FRAME",
    "ChannelClosed",
    "JoinTarget",
    "ProtocolError",
    "connect",
    "decode_events",
    "encode_events",
    "frame",
    "hello",
    "let_go_after_fork",
    "parse",
    "read_frame",
    "recv_frame",
    "send_whole",
    "take_frames",
]


@dataclasses.dataclass(frozen=True)
class JoinTarget:
    """A hub to forward to: its channel address and join token, and what it said
    about itself in its record (pid, urls, ports, epoch)."""

    channel: str
    token: str
    pid: int
    ports: dict[str, int]
    urls: dict[str, str]
    epoch: str
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


HEADER = struct.Struct("!I")
CONNECT_TIMEOUT = 2.0
#: The largest frame accepted (a hand-over carries a whole history).
MAX_FRAME = 512 * 1024 * 1024
_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class ProtocolError(Exception):
    """The other side sent something that is not a frame of this protocol."""


class ChannelClosed(Exception):
    """The other side closed the channel."""


def frame(message: dict[str, Any]) -> bytes:
    """One message, framed."""
    body = orjson.dumps(message)
    return HEADER.pack(len(body)) + body


def parse(body: bytes) -> dict[str, Any]:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("a message is a JSON object with an op")
    return message


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> dict[str, Any]:
    """The next message (asyncio side).

    Raises:
        ChannelClosed: the other side closed the channel.
        ProtocolError: what arrived is not a frame, or is larger than ``limit``.
    """
    try:
        (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        if length > limit:
            raise ProtocolError(f"a frame of {length} bytes is over the limit of {limit}")
        return parse(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        raise ChannelClosed from None


def recv_frame(sock: socket.socket, limit: int = MAX_FRAME) -> dict[str, Any]:
    """The next message (blocking socket side; honours the socket's timeout).

    Raises:
        ChannelClosed, ProtocolError: as :func:`read_frame`; ``TimeoutError``
        from the socket's timeout.
    """
    (length,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if length > limit:
        raise ProtocolError(f"a frame of {length} bytes is over the limit of {limit}")
    return parse(_recv_exactly(sock, length))


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        part = sock.recv(min(size, 1 << 20))
        if not part:
            raise ChannelClosed
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def encode_events(batch: list[Any], count: int) -> list[list[Any]]:
    """An intake's flat batch as the events of a ``batch`` message."""
    out: list[list[Any]] = []
    for k in range(count):
        _seq, ts, event_type, run, step, payload, rank = batch[k * FIELDS : (k + 1) * FIELDS]
        if event_type == "metric":
            payload = wire_numbers(payload)
        elif type(payload) is bytes:
            payload = payload.decode()
        else:
            payload = orjson.dumps(payload).decode()
        out.append([ts, event_type, run, step, payload, rank])
    return out


def decode_events(events: Any) -> list[Submission]:
    """The events of a ``batch`` message, checked, as submissions for an intake.

    Raises:
        ProtocolError: an event is malformed.
    """
    if not isinstance(events, list):
        raise ProtocolError("events must be a list")
    out: list[Submission] = []
    try:
        for event in events:
            ts, event_type, run, step, payload, rank = event
            if type(ts) not in (float, int) or (step is not None and type(step) is not int):
                raise TypeError("ts and step must be numbers")
            step = validate_step(step)  # a joiner of another version: steps JSON can carry
            if rank is not None and type(rank) is not int:
                raise TypeError("rank must be an int")
            run = validate_run(run)
            if event_type == "metric":
                if not isinstance(payload, dict):
                    raise TypeError("metrics must be an object")
                for name, value in payload.items():
                    if type(value) is str and value in _FLOATS:
                        payload[name] = _FLOATS[value]
                out.append(("metric", run, step, validate_metrics(payload), float(ts), rank))
            else:
                if type(payload) is not str:
                    raise TypeError("data must be JSON text")
                data = payload.encode()
                orjson.loads(data)  # it goes into every client's stream as is: it must be JSON
                out.append((validate_type(event_type), run, step, data, float(ts), rank))
    except (TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise ProtocolError(f"bad event in a batch: {exc}") from None
    return out


# -- the blocking-socket side (joined processes) ---------------------------------------


def take_frames(buffer: bytearray) -> list[dict[str, Any]]:
    """The complete messages at the start of ``buffer`` (removed from it)."""
    out: list[dict[str, Any]] = []
    while len(buffer) >= HEADER.size:
        (length,) = HEADER.unpack_from(buffer)
        if length > MAX_FRAME:
            raise ProtocolError(f"a frame of {length} bytes is over the limit")
        end = HEADER.size + length
        if len(buffer) < end:
            break
        out.append(parse(bytes(buffer[HEADER.size : end])))
        del buffer[:end]
    return out


def hello(target: JoinTarget, source: str, rank: int | None, role: str, version: int) -> dict[str, Any]:
    """A joiner's ``hello`` to ``target``."""
    return {
        "op": "hello",
        "token": target.token,
        "source": source,
        "pid": os.getpid(),
        "rank": rank,
        "host": socket.gethostname(),
        "role": role,
        "version": version,
    }


def let_go_after_fork(sock: socket.socket | None) -> None:
    """In a forked child: let go of the parent's connection without closing
    it for the parent (its descriptor then points at /dev/null)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, sock.fileno())
        finally:
            os.close(null)


def connect(address: str) -> socket.socket:
    """A blocking connection to ``unix:/path`` or ``tcp:host:port``."""
    kind, _, rest = address.partition(":")
    if kind == "unix" and hasattr(socket, "AF_UNIX"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(rest)
        except OSError:
            sock.close()
            raise
        return sock
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT)
    raise OSError(f"cannot reach a channel at {address!r}")


def send_whole(sock: socket.socket, data: bytes) -> None:
    """Write ``data`` whole on a non-blocking socket, waiting only while a
    partial write is in flight (a frame is never left half-sent)."""
    view = memoryview(data)
    sent = 0
    while sent < len(view):
        try:
            sent += sock.send(view[sent:])
        except BlockingIOError:
            if sent == 0:
                raise
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sent += sock.send(view[sent:])
            finally:
                sock.setblocking(False)
