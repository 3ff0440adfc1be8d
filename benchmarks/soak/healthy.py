"""Healthy clients: read everything, check every seq across every reconnect
(raw asyncio protocols for SSE and WebSocket)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
import statistics
import time
from collections import Counter
from typing import Any

from .common import HOST, KiB, Params, backoff, emit, stdin_queue

_WS_EVENT = re.compile(rb'\{"seq":(\d+),"epoch":"(\w+)","ts":[^,]*,"type":"([\w.-]+)"')
_BIG = 64 * KiB  # frames larger than this are skipped through, not buffered whole


class Healthy:
    """One healthy client's bookkeeping over all its connections."""

    def __init__(self, ident: int, kind: str) -> None:
        self.ident = ident
        self.kind = kind
        self.started = False
        self.first = 0
        self.last = 0
        self.epoch = ""
        self.received = 0
        self.lost = 0
        self.holes: list[list[int]] = []
        self.dups = 0
        self.gaps: list[dict[str, Any]] = []
        self.gap_lost = 0
        self.connections = 0
        self.shutdowns = 0
        self.refused = 0
        self.statuses: Counter[str] = Counter()
        self.abrupt: list[list[Any]] = []  # [port, t_open, t_close, why] of closes without shutdown
        self.reconnect_s: list[float] = []  # shutdown event -> next connection established
        self.shutdown_at: float | None = None
        self.errors: list[str] = []
        self.target: int | None = None
        self.done = False
        self.conn: Any = None
        self.connected_once = asyncio.Event()

    def on_event(self, seq: int, etype: bytes, body: bytes | None) -> None:
        """Check one event against the sequence (called once the frame is complete)."""
        if etype == b"gap":
            data: dict[str, Any] = {}
            if body is not None:
                with contextlib.suppress(ValueError):
                    data = json.loads(body).get("data") or {}
            self.gaps.append({"seq": seq, "after": self.last, "t": time.monotonic(), **data})
            if self.started and seq > self.last:
                self.gap_lost += seq - self.last
                self.last = seq
            return
        if not self.started:
            self.started = True
            self.first = seq
        elif seq == self.last + 1:
            pass
        elif seq > self.last + 1:
            self.lost += seq - self.last - 1
            if len(self.holes) < 20:
                self.holes.append([self.last + 1, seq - 1])
        else:
            self.dups += 1
            return
        self.last = seq
        self.received += 1
        if etype == b"shutdown":
            self.shutdowns += 1
            self.shutdown_at = time.monotonic()
            if self.conn is not None:
                self.conn.saw_shutdown = True
        if self.target is not None and seq >= self.target:
            self.finish()

    def finish(self) -> None:
        self.done = True
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()

    def report(self) -> dict[str, Any]:
        return {
            "id": self.ident,
            "kind": self.kind,
            "first": self.first,
            "last": self.last,
            "received": self.received,
            "lost": self.lost,
            "holes": self.holes,
            "dups": self.dups,
            "gaps": self.gaps,
            "gap_lost": self.gap_lost,
            "connections": self.connections,
            "shutdowns": self.shutdowns,
            "refused": self.refused,
            "statuses": dict(self.statuses),
            "abrupt": self.abrupt,
            "reconnect_max": max(self.reconnect_s, default=0.0),
            "reconnect_mean": statistics.fmean(self.reconnect_s) if self.reconnect_s else 0.0,
            "errors": self.errors[:20],
            "done": self.done,
        }


class _Conn(asyncio.Protocol):
    """What the SSE and WebSocket client connections share."""

    def __init__(self, client: Healthy, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[str] = loop.create_future()
        self.local_port = 0
        self.t_open = 0.0
        self.head = bytearray()
        self.upgraded = False
        self.saw_shutdown = False
        self.why = "eof"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.local_port = transport.get_extra_info("sockname")[1]
        self.t_open = time.monotonic()
        transport.write(self.request())

    def request(self) -> bytes:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self.body(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > 64 * KiB:
                self.fail("response headers too long")
            return
        head, rest = bytes(self.head[:end]), bytes(self.head[end + 4 :])
        self.head = bytearray()
        status = head.split(b"\r\n", 1)[0].split(b" ", 2)
        code = status[1].decode() if len(status) > 1 else "?"
        self.client.statuses[code] += 1
        if not self.accept(code, head.lower()):
            self.why = f"http {code}"
            assert self.transport is not None
            self.transport.close()
            return
        self.upgraded = True
        client = self.client
        client.connections += 1
        client.conn = self
        if client.shutdown_at is not None:
            client.reconnect_s.append(time.monotonic() - client.shutdown_at)
            client.shutdown_at = None
        client.connected_once.set()
        if rest:
            self.body(rest)

    def accept(self, code: str, head: bytes) -> bool:
        raise NotImplementedError

    def body(self, data: bytes) -> None:
        raise NotImplementedError

    def fail(self, why: str) -> None:
        self.client.errors.append(why)
        self.why = why
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.why == "eof":
            self.why = type(exc).__name__
        if self.client.conn is self:
            self.client.conn = None
        if not self.closed.done():
            self.closed.set_result(self.why)


class SseConn(_Conn):
    """``GET /events`` over HTTP/1.1 chunked encoding, parsed incrementally."""

    def __init__(self, client: Healthy, port: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(client, port, loop)
        self.state = 0  # 0: chunk-size line, 1: chunk data, 2: CRLF after data, 3: body ended
        self.left = 0
        self.line = bytearray()
        self.buf = bytearray()
        self.skipping: tuple[int, bytes] | None = None  # a big frame being skipped: its seq and type
        self.tail_nl = False

    def request(self) -> bytes:
        resume = f"Last-Event-ID: {self.client.last}\r\n" if self.client.started else ""
        return (
            f"GET /events HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        ).encode()

    def accept(self, code: str, head: bytes) -> bool:
        if code != "200":
            return False
        if b"transfer-encoding: chunked" not in head:
            self.fail("SSE response is not chunked")
            return False
        return True

    def body(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            state = self.state
            if state == 1:
                take = min(self.left, n - pos)
                self.sse(data if take == n else data[pos : pos + take])
                pos += take
                self.left -= take
                if not self.left:
                    self.state, self.left = 2, 2
            elif state == 2:
                take = min(self.left, n - pos)
                pos += take
                self.left -= take
                if not self.left:
                    self.state = 0
            elif state == 0:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self.line += data[pos:]
                    return
                self.line += data[pos:nl]
                pos = nl + 1
                size = int(bytes(self.line).split(b";", 1)[0].strip() or b"0", 16)
                self.line.clear()
                if size:
                    self.state, self.left = 1, size
                else:
                    self.state = 3
            else:
                return

    def sse(self, data: bytes) -> None:
        if self.skipping is not None:
            if self.tail_nl and data[:1] == b"\n":
                end = 1
            else:
                i = data.find(b"\n\n")
                if i < 0:
                    self.tail_nl = data[-1:] == b"\n"
                    return
                end = i + 2
            seq, etype = self.skipping
            self.skipping = None
            self.client.on_event(seq, etype, None)
            data = data[end:]
            if not data:
                return
        buf = self.buf
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            self.frame(bytes(buf[start:end]))
            start = end + 2
        if start:
            del buf[:start]
        if len(buf) > _BIG:
            head = bytes(buf[:512])
            parsed = self.parse(head)
            if parsed is None:
                self.fail(f"unparseable SSE frame start {head[:80]!r}")
                return
            self.skipping = parsed
            self.tail_nl = buf[-1:] == b"\n"
            buf.clear()

    @staticmethod
    def parse(frame: bytes) -> tuple[int, bytes] | None:
        if not frame.startswith(b"id: "):
            return None
        nl = frame.find(b"\n", 4)
        seq = int(frame[4:nl])
        if frame.startswith(b"event: ", nl + 1):
            return seq, frame[nl + 8 : frame.find(b"\n", nl + 8)]
        return seq, b"message"

    def frame(self, frame: bytes) -> None:
        if frame.startswith(b":"):
            return  # keep-alive comment
        parsed = self.parse(frame)
        if parsed is None:
            self.client.errors.append(f"unexpected SSE frame {frame[:80]!r}")
            return
        seq, etype = parsed
        body = None
        if etype == b"gap":
            at = frame.find(b"data: ")
            body = frame[at + 6 :] if at >= 0 else None
        self.client.on_event(seq, etype, body)


class WsConn(_Conn):
    """A WebSocket client in a few lines: handshake, unmasked server frames,
    masked pong and close replies."""

    def __init__(self, client: Healthy, port: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(client, port, loop)
        self.buf = bytearray()
        self.skip_left = 0
        self.skipping: tuple[int, bytes] | None = None

    def request(self) -> bytes:
        client = self.client
        path = f"/?since={client.last}&epoch={client.epoch}" if client.started else "/"
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def accept(self, code: str, head: bytes) -> bool:
        return code == "101"

    def body(self, data: bytes) -> None:
        if self.skip_left:
            if len(data) < self.skip_left:
                self.skip_left -= len(data)
                return
            data = data[self.skip_left :]
            self.skip_left = 0
            if self.skipping is not None:
                seq, etype = self.skipping
                self.skipping = None
                self.client.on_event(seq, etype, None)
            if not data:
                return
        buf = self.buf
        buf += data
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            size, hl = b1 & 0x7F, 2
            if size == 126:
                if n - pos < 4:
                    break
                size, hl = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, hl = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:
                self.fail("the server sent a masked frame")
                return
            opcode = b0 & 0x0F
            start, end = pos + hl, pos + hl + size
            if end > n:
                if opcode == 1 and size > _BIG and n - start >= 256:
                    parsed = self.parse(bytes(buf[start : start + 256]))
                    if parsed is None:
                        return
                    self.skipping = parsed
                    self.skip_left = end - n
                    pos = n
                break
            if opcode == 1:
                payload = bytes(buf[start : min(end, start + 256)])
                parsed = self.parse(payload)
                if parsed is not None:
                    seq, etype = parsed
                    body = bytes(buf[start:end]) if etype == b"gap" else None
                    self.client.on_event(seq, etype, body)
            elif opcode == 9:  # ping: answer with a masked pong
                self.send(0xA, bytes(buf[start:end]))
            elif opcode == 8:  # close: answer, the server then closes the TCP connection
                code = int.from_bytes(buf[start : start + 2], "big") if size >= 2 else 1005
                if code != 1001:
                    self.client.errors.append(f"close code {code}")
                self.why = "close" if self.saw_shutdown else f"close {code}"
                self.send(0x8, bytes(buf[start : start + 2]))
            elif opcode != 0xA:
                self.client.errors.append(f"unexpected opcode {opcode}")
            pos = end
        if pos:
            del buf[:pos]

    def parse(self, payload: bytes) -> tuple[int, bytes] | None:
        match = _WS_EVENT.match(payload)
        if match is None:
            self.client.errors.append(f"unexpected WebSocket message {payload[:100]!r}")
            return None
        if not self.client.epoch:
            self.client.epoch = match.group(2).decode()
        return int(match.group(1)), match.group(3)

    def send(self, opcode: int, payload: bytes) -> None:
        # Client frames must be masked; a zero key leaves the payload as it is.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)


async def run_healthy(client: Healthy, port: int, cls: type[_Conn]) -> None:
    """Connect, read until the connection ends, reconnect (with back-off) until done."""
    loop = asyncio.get_running_loop()
    failures = 0
    while not client.done:
        try:
            _, conn = await loop.create_connection(lambda: cls(client, port, loop), HOST, port)
        except OSError:
            client.refused += 1
            failures += 1
            await asyncio.sleep(backoff(failures))
            continue
        why = await conn.closed
        if client.done:
            break
        if not conn.saw_shutdown and conn.upgraded:
            client.abrupt.append([conn.local_port, conn.t_open, time.monotonic(), why])
        failures = 0 if conn.upgraded else failures + 1
        await asyncio.sleep(backoff(failures) if failures else random.uniform(0.0, 0.005))


async def healthy_main_async(p: Params) -> None:
    loop = asyncio.get_running_loop()
    commands = stdin_queue(loop)
    share = p.healthy // p.healthy_procs
    count = share + (p.healthy % p.healthy_procs if p.index == p.healthy_procs - 1 else 0)
    clients: list[Healthy] = []
    tasks: list[asyncio.Task[None]] = []
    for k in range(count):
        ident = p.index * share + k
        kind = "sse" if k % 2 == 0 else "ws"
        client = Healthy(ident, kind)
        clients.append(client)
        port, cls = (p.ports["sse"], SseConn) if kind == "sse" else (p.ports["ws"], WsConn)
        tasks.append(asyncio.create_task(run_healthy(client, port, cls)))
        if k % 20 == 19:
            await asyncio.sleep(0.02)  # pacing the first connections
    await asyncio.wait_for(asyncio.gather(*(c.connected_once.wait() for c in clients)), timeout=120)
    emit({"type": "ready", "clients": len(clients)})
    while True:
        command = await commands.get()
        if command is None or command.get("cmd") == "finish":
            break
    target = command["final_head"] if command else None
    t0 = time.monotonic()
    for client in clients:
        client.target = target
        if target is not None and client.last >= target:
            client.finish()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    for client in clients:
        client.finish()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    emit(
        {
            "type": "report",
            "catch_up_s": time.monotonic() - t0,
            "clients": [c.report() for c in clients],
        }
    )
