"""I/O-free client side of the wire: requests, response heads, SSE and WebSocket parsing.

Nothing here touches a socket: :mod:`benchmarks.clients` feeds received bytes
in and sends what comes out. Each parser is built for counting many events
cheaply -- SSE frames are counted with ``bytes.count`` on whole frames,
WebSocket frames by a tight walk over their headers -- and parses only the
last event of each read for its sequence number, unless it is ``timed``: then
every event's JSON is parsed and ``receipt time - ts`` is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct

__all__ = [
    "MAX_LATENCY_SAMPLES",
    "Dechunker",
    "ResponseHead",
    "SseParser",
    "WsParser",
    "parse_head",
    "sse_request",
    "ws_accept",
    "ws_client_frame",
    "ws_request",
]

MAX_LATENCY_SAMPLES = 500_000
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- HTTP ---------------------------------------------------------------------------


def sse_request(host: str, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()


def ws_request(host: str, path: str) -> tuple[bytes, bytes]:
    """The upgrade request and its ``Sec-WebSocket-Key``."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return request, key


def ws_accept(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


class ResponseHead:
    __slots__ = ("body", "headers", "status", "status_line")

    def __init__(self, status: int, status_line: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status = status
        self.status_line = status_line
        self.headers = headers  # lower-case names
        self.body = body  # bytes received after the head


def parse_head(buf: bytes) -> ResponseHead | None:
    """The response head once ``buf`` holds all of it, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].split(b"\r\n")
    parts = lines[0].split(None, 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return ResponseHead(status, lines[0], headers, buf[end + 4 :])


class Dechunker:
    """Incremental decoder of HTTP/1.1 chunked transfer encoding."""

    __slots__ = ("done", "need_crlf", "pending", "remaining")

    def __init__(self) -> None:
        self.pending = b""  # an incomplete chunk-size line
        self.remaining = 0  # payload bytes left in the current chunk
        self.need_crlf = 0  # bytes of the CRLF after a chunk's payload still to skip
        self.done = False  # the last (empty) chunk arrived

    def feed(self, data: bytes) -> bytes:
        if self.pending:
            data = self.pending + data
            self.pending = b""
        out: list[bytes] = []
        i, n = 0, len(data)
        while i < n and not self.done:
            if self.remaining:
                take = min(self.remaining, n - i)
                out.append(data[i : i + take])
                i += take
                self.remaining -= take
                if not self.remaining:
                    self.need_crlf = 2
            elif self.need_crlf:
                skip = min(self.need_crlf, n - i)
                i += skip
                self.need_crlf -= skip
            else:
                j = data.find(b"\r\n", i)
                if j < 0:
                    self.pending = data[i:]
                    break
                size = int(data[i:j].split(b";", 1)[0].strip() or b"0", 16)
                i = j + 2
                if size == 0:
                    self.done = True
                else:
                    self.remaining = size
        if len(out) == 1:
            return out[0]
        return b"".join(out)


# -- SSE ------------------------------------------------------------------------------


class SseParser:
    """Counts the events of one ``text/event-stream`` body."""

    __slots__ = ("carry", "dechunker", "last_seq", "timed")

    def __init__(self, chunked: bool, timed: bool) -> None:
        self.dechunker = Dechunker() if chunked else None
        self.timed = timed
        self.carry = b""  # the incomplete frame at the end of what arrived so far
        self.last_seq = 0

    @property
    def ended(self) -> bool:
        return self.dechunker is not None and self.dechunker.done

    def feed(self, data: bytes, now: float, latencies: list[float]) -> int:
        """Take received bytes; return how many events they completed."""
        if self.dechunker is not None:
            data = self.dechunker.feed(data)
        if not data:
            return 0
        buf = self.carry + data if self.carry else data
        if b"\r" in buf:  # sse-starlette ends lines with CRLF by default
            buf = buf.replace(b"\r\n", b"\n")
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self.carry = buf
            return 0
        complete = buf[: cut + 1]
        self.carry = buf[cut + 2 :]
        if self.timed:
            got = 0
            for frame in complete.split(b"\n\n"):
                for line in frame.split(b"\n"):
                    if line.startswith(b"data:"):
                        got += 1
                        _sample(line[5:], now, latencies)
        else:
            # Compact JSON has no raw newline, so each event is one data: line.
            got = complete.count(b"\ndata:") + complete.startswith(b"data:")
        j = complete.rfind(b"\nid:")
        if j >= 0 or complete.startswith(b"id:"):
            j += 4  # past "\nid:", or past "id:" at 0 when rfind gave -1
            k = complete.find(b"\n", j)
            try:
                self.last_seq = int(complete[j : k if k >= 0 else None])
            except ValueError:
                pass
        return got


def _sample(payload: bytes, now: float, latencies: list[float]) -> int:
    """Record ``now - ts`` of one event's JSON; return its seq (0 if unreadable)."""
    try:
        event = json.loads(payload)
        ts = float(event["ts"])
        seq = int(event.get("seq") or 0)
    except (ValueError, KeyError, TypeError):
        return 0
    if len(latencies) < MAX_LATENCY_SAMPLES:
        latencies.append(now - ts)
    return seq


# -- WebSocket -------------------------------------------------------------------------


def _unmask(mask: bytes, payload: bytes) -> bytes:
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def ws_client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client-to-server frame (RFC 6455 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + _unmask(mask, payload)


def _seq_from_json(payload: bytes) -> int:
    j = payload.find(b'"seq":')
    if j < 0:
        return 0
    j += 6
    n = len(payload)
    while j < n and payload[j] == 32:
        j += 1
    k = j
    while k < n and 48 <= payload[k] <= 57:
        k += 1
    return int(payload[j:k]) if k > j else 0


class WsParser:
    """Counts the messages of one WebSocket connection (server-to-client side).

    Control frames are answered through :attr:`outbox` (masked client frames
    the caller must send): a ping gets its pong, a close gets its close echo,
    after which :attr:`closed` is set.
    """

    __slots__ = ("carry", "closed", "frag", "last_seq", "outbox", "timed")

    def __init__(self, timed: bool) -> None:
        self.timed = timed
        self.carry = b""  # an incomplete frame
        self.frag: list[bytes] = []  # payloads of an unfinished fragmented message
        self.last_seq = 0
        self.outbox: list[bytes] = []
        self.closed = False

    def feed(self, data: bytes, now: float, latencies: list[float]) -> int:
        """Take received bytes; return how many messages they completed."""
        buf = self.carry + data if self.carry else data
        i, n = 0, len(buf)
        got = 0
        last_start = -1  # header offset of the last whole single-frame message
        last_whole: bytes | None = None  # or the last reassembled fragmented one
        timed = self.timed
        while n - i >= 2 and not self.closed:
            # Fast path: whole unmasked text frames (0x81) of < 64 KiB, which is
            # what every server sends for these events. Kept to a few operations
            # per frame: in count mode this loop is the client's whole cost.
            b1 = buf[i + 1]
            if buf[i] == 0x81 and b1 < 127:
                if b1 < 126:
                    start = i + 2
                    end = start + b1
                elif n - i >= 4:
                    start = i + 4
                    end = start + ((buf[i + 2] << 8) | buf[i + 3])
                else:
                    break
                if end > n:
                    break
                got += 1
                if timed:
                    self.last_seq = max(self.last_seq, _sample(buf[start:end], now, latencies))
                else:
                    last_start, last_whole = i, None
                i = end
                continue
            # General path: long frames, fragments, control frames, masking.
            length = b1 & 0x7F
            h = i + 2
            if length == 126:
                if n - i < 4:
                    break
                length = (buf[i + 2] << 8) | buf[i + 3]
                h = i + 4
            elif length == 127:
                if n - i < 10:
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
                h = i + 10
            masked = b1 & 0x80
            end = h + length + (4 if masked else 0)
            if end > n:
                break
            b0 = buf[i]
            opcode = b0 & 0x0F
            i = end
            if masked:  # servers must not mask, but decode it if one does
                payload = _unmask(buf[h : h + 4], buf[h + 4 : end])
            else:
                payload = buf[h:end]
            if opcode in (0, 1, 2):
                self.frag.append(payload)
                if b0 & 0x80:  # FIN
                    whole = b"".join(self.frag)
                    self.frag = []
                    got += 1
                    if timed:
                        self.last_seq = max(self.last_seq, _sample(whole, now, latencies))
                    else:
                        last_start, last_whole = -1, whole
            elif opcode == 9:  # ping -> pong
                self.outbox.append(ws_client_frame(0xA, payload))
            elif opcode == 8:  # close -> echo the code, stop reading
                self.outbox.append(ws_client_frame(0x8, payload[:2]))
                self.closed = True
        self.carry = buf[i:] if i < n and not self.closed else b""
        if last_whole is not None:
            self.last_seq = _seq_from_json(last_whole) or self.last_seq
        elif last_start >= 0:
            b1 = buf[last_start + 1]
            if b1 < 126:
                start, end = last_start + 2, last_start + 2 + b1
            else:
                start = last_start + 4
                end = start + ((buf[last_start + 2] << 8) | buf[last_start + 3])
            self.last_seq = _seq_from_json(buf[start:end]) or self.last_seq
        return got
