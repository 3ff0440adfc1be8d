"""The load generator: many raw SSE or WebSocket clients in a separate process.

The clients run in a process of their own (``multiprocessing`` spawn), so they
share neither the GIL nor the event loop of the server under test. One
selector loop drives every connection over non-blocking sockets; requests,
the WebSocket upgrade and the framing are done by hand
(:mod:`benchmarks.wire`), so the client costs as little CPU per event as
Python allows and works the same against any server.

The parent talks to the process through a pipe with small dict commands
(see :class:`LoadClient`). Every wait has a deadline, and the process exits by
itself after ``lifetime`` seconds or when the parent goes away.
"""

from __future__ import annotations

import errno
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

from .wire import (
    SseParser,
    WsParser,
    parse_head,
    sse_request,
    ws_accept,
    ws_client_frame,
    ws_request,
)

logger = logging.getLogger(__name__)

__all__ = ["LoadClient", "raise_fd_limit"]

_RECV_SIZE = 1 << 18

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


@dataclass(eq=False)
class _Conn:
    idx: int
    sock: socket.socket
    timed: bool = False  # parse every event for its latency
    tries: int = 0
    state: int = _CONNECTING
    head: bytes = b""
    ws_key: bytes = b""
    parser: SseParser | WsParser | None = field(default=None, repr=False)
    count: int = 0
    first_t: float = 0.0
    last_t: float = 0.0
    reached: bool = False

    @property
    def last_seq(self) -> int:
        return self.parser.last_seq if self.parser is not None else 0


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
            for key, _mask in self.sel.select(timeout):
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
                    {
                        "ev": "connected",
                        "n": self.n_connected,
                        "failed": self.failed[:10],
                        "n_failed": len(self.failed),
                        "timeout": expired,
                    }
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
                self._reply({"ev": "synced", "ok": not expired, "live": live, "reached": self.n_reached})
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
                        c.sock.send(ws_client_frame(0x8, struct.pack("!H", 1000)))
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
            request = sse_request(host, self.path)
        else:
            request, conn.ws_key = ws_request(host, self.path)
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
        head = parse_head(conn.head)
        if head is None:
            if len(conn.head) > 65536:
                self._fail(conn, "response head too long")
            return None
        conn.head = b""
        want = 200 if self.kind == "sse" else 101
        if head.status != want:
            self._fail(conn, f"HTTP status {head.status}: {head.status_line[:80]!r}")
            return None
        if self.kind == "ws":
            if head.headers.get(b"sec-websocket-accept") != ws_accept(conn.ws_key):
                self._fail(conn, "bad Sec-WebSocket-Accept")
                return None
            conn.parser = WsParser(conn.timed)
            if self.ws_subscribe:
                conn.sock.sendall(ws_client_frame(0x1, b'{"op": "subscribe"}'))
        else:
            chunked = b"chunked" in head.headers.get(b"transfer-encoding", b"").lower()
            conn.parser = SseParser(chunked, conn.timed)
        conn.state = _STREAM
        self.n_pending -= 1
        self.n_connected += 1
        return head.body

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
        parser = conn.parser
        assert parser is not None
        got = parser.feed(data, now, self.latencies)
        self._counted(conn, got, now)
        if isinstance(parser, WsParser):
            for frame in parser.outbox:
                try:
                    conn.sock.sendall(frame)
                except OSError:
                    break
            parser.outbox.clear()
            if parser.closed:
                self._drop(conn)
        elif parser.ended:
            self._drop(conn)

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
        self,
        kind: str,
        port: int,
        n: int,
        *,
        mode: str = "count",
        host: str = "127.0.0.1",
        timeout: float = 60.0,
        max_pending: int = 64,
        ws_subscribe: bool = False,
        timed: int | None = None,
    ) -> dict[str, Any]:
        """Open ``n`` connections; in ``latency`` mode the first ``timed`` (default: all)
        parse every event for its latency, the others only count."""
        return self._request(
            {
                "cmd": "connect",
                "kind": kind,
                "port": port,
                "n": n,
                "mode": mode,
                "host": host,
                "timeout": timeout,
                "max_pending": max_pending,
                "ws_subscribe": ws_subscribe,
                "timed": timed,
            },
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
