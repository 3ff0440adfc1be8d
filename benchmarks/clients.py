"""The load generator: many raw SSE or WebSocket clients in a separate process.

The clients run in a process of their own (``multiprocessing`` spawn), so they
share neither the GIL nor the event loop of the server under test. One
selector loop drives every connection over non-blocking sockets: the HTTP
request, the WebSocket upgrade and the framing are written by hand, so the
client costs as little CPU per event as Python allows and works the same
against any server.

The parent talks to the process through a pipe with small dict commands
(see :class:`LoadClient`). Every wait has a deadline, and the process exits by
itself after ``lifetime`` seconds or when the parent goes away.

Counting is exact and cheap: SSE frames are counted with ``bytes.count`` on
whole frames (chunked transfer encoding is decoded first), WebSocket frames by
walking their headers; only the last event of each read is parsed, for its
sequence number. In ``latency`` mode every event's JSON is parsed for its
``ts`` and the sample is ``receipt time - ts`` (both Unix seconds).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import multiprocessing
import os
import resource
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["LoadClient", "raise_fd_limit"]

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_RECV_SIZE = 1 << 18
_MAX_LATENCY_SAMPLES = 500_000

# connection states
_CONNECTING, _HEAD, _STREAM, _CLOSED = range(4)


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted``; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            logger.warning("could not raise RLIMIT_NOFILE from %d to %d", soft, target)
    return soft


class _Dechunker:
    """Incremental decoder of HTTP/1.1 chunked transfer encoding."""

    __slots__ = ("done", "need_crlf", "pending", "remaining")

    def __init__(self) -> None:
        self.pending = b""  # an incomplete chunk-size line
        self.remaining = 0  # payload bytes left in the current chunk
        self.need_crlf = 0  # bytes of the CRLF after a chunk's payload still to skip
        self.done = False

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


@dataclass(eq=False)
class _Conn:
    idx: int
    sock: socket.socket
    state: int = _CONNECTING
    head: bytes = b""
    dechunker: _Dechunker | None = None
    carry: bytes = b""
    frag: list[bytes] = field(default_factory=list)
    ws_key: bytes = b""
    count: int = 0
    last_seq: int = 0
    first_t: float = 0.0
    last_t: float = 0.0
    reached: bool = False
    tries: int = 0
    timed: bool = False  # parse every event for its latency


def _ws_client_frame(opcode: int, payload: bytes) -> bytes:
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


def _unmask(mask: bytes, payload: bytes) -> bytes:
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


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


class _Generator:
    """The selector loop that runs inside the client process."""

    def __init__(self, pipe: Connection, lifetime: float) -> None:
        self.pipe = pipe
        self.deadline = time.monotonic() + lifetime
        self.sel = selectors.DefaultSelector()
        self.sel.register(pipe.fileno(), selectors.EVENT_READ, None)
        self.conns: list[_Conn] = []
        self.kind = "sse"
        self.mode = "count"
        self.addr: tuple[str, int] = ("127.0.0.1", 0)
        self.path = "/events"
        self.ws_subscribe = False
        self.timed = 0
        self.to_open: list[int] = []
        self.max_pending = 64
        self.n_pending = 0
        self.n_connected = 0
        self.failed: list[str] = []
        self.latencies: list[float] = []
        self.target = 0  # seq every connection must reach (sync / expect)
        self.n_reached = 0
        self.waiting: dict[str, Any] | None = None  # the command waiting for a condition
        self.wait_deadline = 0.0
        self.running = True

    # -- main loop -----------------------------------------------------------

    def run(self) -> None:
        while self.running:
            now = time.monotonic()
            if now >= self.deadline:
                logger.warning("load client: lifetime over, exiting")
                break
            self._open_more()
            timeout = min(0.05, self.deadline - now)
            for key, mask in self.sel.select(timeout):
                if key.data is None:
                    if not self._on_command():
                        self.running = False
                        break
                    continue
                conn: _Conn = key.data
                if conn.state == _CONNECTING:
                    self._on_connected(conn)
                else:
                    self._on_readable(conn)
            self._check_waiting()
        self._close_all()

    # -- commands ------------------------------------------------------------

    def _reply(self, msg: dict[str, Any]) -> None:
        try:
            self.pipe.send(msg)
        except (BrokenPipeError, OSError):
            self.running = False

    def _on_command(self) -> bool:
        try:
            cmd: dict[str, Any] = self.pipe.recv()
        except (EOFError, OSError):
            return False  # the parent is gone
        op = cmd["cmd"]
        if op == "connect":
            self._start_connect(cmd)
        elif op in ("sync", "expect"):
            self._start_wait(cmd)
        elif op == "stats":
            self._reply(self._stats())
        elif op == "drop":
            self._close_all()
            self._reply({"ev": "dropped"})
        elif op == "close":
            self._close_all()
            self._reply({"ev": "closed"})
            return False
        else:
            self._reply({"ev": "error", "error": f"unknown command {op!r}"})
        return True

    def _start_connect(self, cmd: dict[str, Any]) -> None:
        self._close_all()
        self.kind = cmd["kind"]
        self.mode = cmd.get("mode", "count")
        n = int(cmd["n"])
        # In latency mode only the first ``timed`` connections parse every event.
        self.timed = min(n, int(cmd.get("timed") or n)) if self.mode == "latency" else 0
        self.addr = (cmd.get("host", "127.0.0.1"), int(cmd["port"]))
        self.path = cmd.get("path", "/events" if self.kind == "sse" else "/")
        self.ws_subscribe = bool(cmd.get("ws_subscribe", False))
        self.max_pending = int(cmd.get("max_pending", 64))
        self.conns = []
        self.to_open = list(range(n - 1, -1, -1))
        self.n_pending = 0
        self.n_connected = 0
        self.failed = []
        self.latencies = []
        self.waiting = cmd
        self.wait_deadline = time.monotonic() + float(cmd.get("timeout", 30.0))
        self.conns = [None] * n  # type: ignore[list-item]

    def _start_wait(self, cmd: dict[str, Any]) -> None:
        self.target = int(cmd["seq"])
        self.n_reached = 0
        for c in self.conns:
            if c is not None:
                c.reached = c.state == _STREAM and c.last_seq >= self.target
                self.n_reached += c.reached
        self.waiting = cmd
        self.wait_deadline = time.monotonic() + float(cmd.get("timeout", 30.0))

    def _check_waiting(self) -> None:
        cmd = self.waiting
        if cmd is None:
            return
        op = cmd["cmd"]
        expired = time.monotonic() >= self.wait_deadline
        if op == "connect":
            if self.n_connected + len(self.failed) >= len(self.conns) or expired:
                self.waiting = None
                self.to_open = []
                self._reply(
                    {"ev": "connected", "n": self.n_connected, "failed": self.failed[:10],
                     "n_failed": len(self.failed), "timeout": expired}
                )
            return
        live = self.n_connected
        if self.n_reached >= live or expired:
            self.waiting = None
            self.target = 0
            if op == "sync":
                # Everything up to cmd["seq"] has arrived: start counting afresh.
                for c in self.conns:
                    if c is None:
                        continue
                    c.count = 0
                    c.first_t = c.last_t = 0.0
                self.latencies = []
                self._reply({"ev": "synced", "ok": not expired, "live": live,
                             "reached": self.n_reached})
            else:
                reply = self._stats()
                reply.update(ev="done", ok=not expired, reached=self.n_reached)
                self._reply(reply)

    def _stats(self) -> dict[str, Any]:
        conns = [c for c in self.conns if c is not None]
        return {
            "ev": "stats",
            "live": sum(1 for c in conns if c.state == _STREAM),
            "counts": [c.count for c in conns],
            "first": [c.first_t for c in conns],
            "last": [c.last_t for c in conns],
            "last_seq": [c.last_seq for c in conns],
            "latencies": self.latencies,
        }

    # -- connections ---------------------------------------------------------

    def _open_more(self) -> None:
        while self.to_open and self.n_pending < self.max_pending:
            idx = self.to_open.pop()
            self._open(idx, tries=(self.conns[idx].tries + 1) if self.conns[idx] else 0)

    def _open(self, idx: int, tries: int) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.failed.append(f"socket(): {exc}")
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(idx=idx, sock=sock, tries=tries, timed=idx < self.timed)
        self.conns[idx] = conn
        err = sock.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            self._fail(conn, f"connect: {os.strerror(err)}")
            return
        self.n_pending += 1
        self.sel.register(sock, selectors.EVENT_WRITE, conn)

    def _fail(self, conn: _Conn, why: str) -> None:
        was_pending = conn.state in (_CONNECTING, _HEAD)
        self._drop(conn)
        if was_pending:
            self.n_pending -= 1
            if conn.tries < 3 and self.waiting is not None and self.waiting["cmd"] == "connect":
                self.to_open.append(conn.idx)  # e.g. a full accept backlog: try again
                return
            self.failed.append(why)

    def _drop(self, conn: _Conn) -> None:
        if conn.state == _STREAM:
            self.n_connected -= 1
            if conn.reached:
                self.n_reached -= 1
        if conn.state != _CLOSED:
            try:
                self.sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()
            conn.state = _CLOSED

    def _close_all(self) -> None:
        for c in self.conns:
            if c is not None and c.state != _CLOSED:
                if c.state == _STREAM and self.kind == "ws":
                    try:
                        c.sock.send(_ws_client_frame(0x8, struct.pack("!H", 1000)))
                    except OSError:
                        pass
                self._drop(c)
        self.conns = []
        self.to_open = []
        self.n_pending = 0
        self.n_connected = 0

    def _on_connected(self, conn: _Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(conn, f"connect: {os.strerror(err)}")
            return
        host = f"{self.addr[0]}:{self.addr[1]}"
        if self.kind == "sse":
            request = (
                f"GET {self.path} HTTP/1.1\r\nHost: {host}\r\n"
                "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
            ).encode()
        else:
            conn.ws_key = base64.b64encode(os.urandom(16))
            request = (
                f"GET {self.path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {conn.ws_key.decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        try:
            conn.sock.sendall(request)  # a few hundred bytes into an empty buffer
        except OSError as exc:
            self._fail(conn, f"send request: {exc}")
            return
        conn.state = _HEAD
        self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def _on_head(self, conn: _Conn, data: bytes) -> bytes | None:
        """Collect the response head; return the body bytes after it, or None."""
        conn.head += data
        end = conn.head.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.head) > 65536:
                self._fail(conn, "response head too long")
            return None
        head, body = conn.head[:end], conn.head[end + 4 :]
        conn.head = b""
        lines = head.split(b"\r\n")
        parts = lines[0].split(None, 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        want = 200 if self.kind == "sse" else 101
        if status != want:
            self._fail(conn, f"HTTP status {status}: {lines[0][:80]!r}")
            return None
        if self.kind == "ws":
            accept = base64.b64encode(hashlib.sha1(conn.ws_key + _WS_GUID).digest())
            if headers.get(b"sec-websocket-accept") != accept:
                self._fail(conn, "bad Sec-WebSocket-Accept")
                return None
            if self.ws_subscribe:
                conn.sock.sendall(_ws_client_frame(0x1, b'{"op": "subscribe"}'))
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            conn.dechunker = _Dechunker()
        conn.state = _STREAM
        self.n_pending -= 1
        self.n_connected += 1
        return body

    def _on_readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(conn, f"recv: {exc}")
            return
        now = time.time()
        if not data:
            self._fail(conn, "closed by server")
            return
        if conn.state == _HEAD:
            body = self._on_head(conn, data)
            if not body:
                return
            data = body
        if self.kind == "sse":
            self._on_sse(conn, data, now)
        else:
            self._on_ws(conn, data, now)

    # -- SSE -----------------------------------------------------------------

    def _on_sse(self, conn: _Conn, data: bytes, now: float) -> None:
        if conn.dechunker is not None:
            data = conn.dechunker.feed(data)
            if conn.dechunker.done:
                self._drop(conn)
        if not data:
            return
        buf = conn.carry + data if conn.carry else data
        if b"\r" in buf:  # sse-starlette ends lines with CRLF by default
            buf = buf.replace(b"\r\n", b"\n")
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            conn.carry = buf
            return
        complete = buf[: cut + 1]
        conn.carry = buf[cut + 2 :]
        if conn.timed:
            got = 0
            lat = self.latencies
            for frame in complete.split(b"\n\n"):
                for line in frame.split(b"\n"):
                    if line.startswith(b"data:"):
                        got += 1
                        try:
                            ts = json.loads(line[5:])["ts"]
                        except (ValueError, KeyError, TypeError):
                            continue
                        if len(lat) < _MAX_LATENCY_SAMPLES:
                            lat.append(now - ts)
        else:
            # Compact JSON has no raw newline, so each event is one data: line.
            got = complete.count(b"\ndata:") + complete.startswith(b"data:")
        j = complete.rfind(b"\nid:")
        if j >= 0 or complete.startswith(b"id:"):
            j += 4  # past "\nid:", or past "id:" at 0 when rfind gave -1
            k = complete.find(b"\n", j)
            try:
                conn.last_seq = int(complete[j : k if k >= 0 else None])
            except ValueError:
                pass
        self._counted(conn, got, now)

    # -- WebSocket -----------------------------------------------------------

    def _on_ws(self, conn: _Conn, data: bytes, now: float) -> None:
        buf = conn.carry + data if conn.carry else data
        i, n = 0, len(buf)
        got = 0
        last_start = -1  # header offset of the last whole single-frame message
        last_whole: bytes | None = None  # or the last reassembled fragmented one
        latency = conn.timed
        closing = False
        while n - i >= 2:
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
                if latency:
                    self._ws_latency(conn, buf[start:end], now)
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
            fin = b0 & 0x80
            i = end
            if masked:  # servers must not mask, but decode it if one does
                payload = _unmask(buf[h : h + 4], buf[h + 4 : end])
            else:
                payload = buf[h:end]
            if opcode in (0, 1, 2):
                conn.frag.append(payload)
                if fin:
                    whole = b"".join(conn.frag)
                    conn.frag = []
                    got += 1
                    if latency:
                        self._ws_latency(conn, whole, now)
                    else:
                        last_start, last_whole = -1, whole
            elif opcode == 9:  # ping -> pong
                self._ws_send(conn, 0xA, payload)
            elif opcode == 8:  # close: answer it and stop reading
                self._ws_send(conn, 0x8, payload[:2])
                closing = True
                break
        conn.carry = buf[i:] if i < n and not closing else b""
        if got:
            if last_whole is not None:
                conn.last_seq = _seq_from_json(last_whole) or conn.last_seq
            elif last_start >= 0:
                b1 = buf[last_start + 1]
                start = last_start + (2 if b1 < 126 else 4)
                end = start + (b1 if b1 < 126 else (buf[last_start + 2] << 8) | buf[last_start + 3])
                conn.last_seq = _seq_from_json(buf[start:end]) or conn.last_seq
            self._counted(conn, got, now)
        if closing:
            self._drop(conn)

    @staticmethod
    def _ws_send(conn: _Conn, opcode: int, payload: bytes) -> None:
        try:
            conn.sock.sendall(_ws_client_frame(opcode, payload))
        except OSError:
            pass

    def _ws_latency(self, conn: _Conn, payload: bytes, now: float) -> None:
        try:
            event = json.loads(payload)
            ts = float(event["ts"])
            seq = int(event.get("seq") or 0)
        except (ValueError, KeyError, TypeError):
            return
        if len(self.latencies) < _MAX_LATENCY_SAMPLES:
            self.latencies.append(now - ts)
        if seq > conn.last_seq:
            conn.last_seq = seq

    # -- bookkeeping ---------------------------------------------------------

    def _counted(self, conn: _Conn, got: int, now: float) -> None:
        if got:
            if not conn.count:
                conn.first_t = now
            conn.count += got
            conn.last_t = now
        if self.target and not conn.reached and conn.last_seq >= self.target:
            conn.reached = True
            self.n_reached += 1


def _client_main(pipe: Connection, lifetime: float, log_level: int) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s client %(levelname)s %(message)s")
    raise_fd_limit()
    gen = _Generator(pipe, lifetime)
    try:
        gen.run()
    finally:
        pipe.close()


class LoadClient:
    """Parent-side handle of one load-generator process.

    Each method sends a command and waits (with a deadline) for its answer:

    - :meth:`connect` opens ``n`` connections and returns once every one has
      its response head (HTTP 200 for SSE, 101 for WebSocket) or failed;
    - :meth:`sync` waits until every connection has received the event with
      sequence number ``seq``, then resets the counters;
    - :meth:`expect` waits until every connection has received ``seq`` and
      returns per-connection counts, first/last receipt times and latencies;
    - :meth:`close` closes everything and ends the process.
    """

    def __init__(self, lifetime: float = 300.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_client_main,
            args=(child, lifetime, logging.getLogger().getEffectiveLevel()),
            name="stream-hub-bench-clients",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self.pid = self._proc.pid

    def _request(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._pipe.send(cmd)
        if not self._pipe.poll(timeout):
            raise TimeoutError(f"load client did not answer {cmd['cmd']!r} in {timeout:.0f} s")
        reply: dict[str, Any] = self._pipe.recv()
        if reply.get("ev") == "error":
            raise RuntimeError(reply["error"])
        return reply

    def connect(
        self, kind: str, port: int, n: int, *, mode: str = "count", host: str = "127.0.0.1",
        timeout: float = 60.0, max_pending: int = 64, ws_subscribe: bool = False,
        timed: int | None = None,
    ) -> dict[str, Any]:
        """Open ``n`` connections; in ``latency`` mode the first ``timed`` (default: all)
        parse every event for its latency, the others only count."""
        return self._request(
            {"cmd": "connect", "kind": kind, "port": port, "n": n, "mode": mode, "host": host,
             "timeout": timeout, "max_pending": max_pending, "ws_subscribe": ws_subscribe,
             "timed": timed},
            timeout + 10,
        )

    def sync(self, seq: int, timeout: float = 1.0) -> dict[str, Any]:
        return self._request({"cmd": "sync", "seq": seq, "timeout": timeout}, timeout + 10)

    def expect(self, seq: int, timeout: float = 60.0) -> dict[str, Any]:
        return self._request({"cmd": "expect", "seq": seq, "timeout": timeout}, timeout + 10)

    def stats(self) -> dict[str, Any]:
        return self._request({"cmd": "stats"}, 10)

    def drop(self) -> None:
        self._request({"cmd": "drop"}, 30)

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._request({"cmd": "close"}, 30)
            except (OSError, EOFError, TimeoutError):
                pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._pipe.close()

    def __enter__(self) -> LoadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
