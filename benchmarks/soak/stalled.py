"""Stalled clients: connect far back, never read; whether the server closed
one is read from the kernel (``/proc/net/tcp``), not from the socket."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .common import HOST, Params, backoff, emit, stdin_queue


def established(server_ports: Iterable[int]) -> set[tuple[int, int]]:
    """(server port, client port) of every ESTABLISHED IPv4 connection whose
    local end is one of ``server_ports`` (the server's ends, from the kernel)."""
    # Lines read "  sl: 0100007F:<local port> 0100007F:<remote port> <state> ...", ports in
    # hex; state 01 is ESTABLISHED. One regex pass: thousands of TIME_WAIT lines are common.
    ports = b"|".join(b"%04X" % port for port in server_ports)
    pattern = re.compile(rb"^ *\d+: 0100007F:(" + ports + rb") 0100007F:([0-9A-F]{4}) 01 ", re.M)
    with open("/proc/net/tcp", "rb") as f:
        data = f.read()
    return {(int(m[1], 16), int(m[2], 16)) for m in pattern.finditer(data)}


def tcp_memory_pages() -> int:
    """Pages of kernel memory all TCP sockets hold now (``/proc/net/sockstat``)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    return 0


@dataclasses.dataclass
class StalledConn:
    kind: str
    sock: socket.socket
    server_port: int
    port: int
    t_connect: float
    closed: asyncio.Future[None]
    last_alive: float = 0.0
    seen_closed: float = 0.0


async def stalled_main_async(p: Params) -> None:
    loop = asyncio.get_running_loop()
    commands = stdin_queue(loop)
    live: dict[tuple[int, int], StalledConn] = {}  # by (server port, client port)
    closed: list[list[Any]] = []
    opened: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    send_errors: list[str] = []
    stopping = asyncio.Event()
    ready = asyncio.Event()
    requests = {
        "sse": f"GET /events?last_event_id=1 HTTP/1.1\r\nHost: {HOST}:{p.ports['sse']}\r\n"
        "Accept: text/event-stream\r\n\r\n",
        "ws": f"GET /?since=1 HTTP/1.1\r\nHost: {HOST}:{p.ports['ws']}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: c29hay1zdGFsbGVkLWtleQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n",
    }

    async def keep(kind: str) -> None:
        server_port = p.ports[kind]
        failures = 0
        while not stopping.is_set():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            try:
                await loop.sock_connect(sock, (HOST, server_port))
                sock.send(requests[kind].encode())
            except OSError as exc:
                sock.close()
                refused[kind] += 1
                if not isinstance(exc, ConnectionRefusedError):
                    send_errors.append(f"{time.monotonic():.3f} {kind} {exc!r}")
                failures += 1
                await asyncio.sleep(backoff(failures))
                continue
            failures = 0
            now = time.monotonic()
            conn = StalledConn(kind, sock, server_port, sock.getsockname()[1], now, loop.create_future(), now)
            live[conn.server_port, conn.port] = conn
            opened[kind] += 1
            if sum(opened.values()) >= p.stalled:
                ready.set()
            await conn.closed
            del live[conn.server_port, conn.port]
            closed.append([kind, conn.port, conn.t_connect, conn.last_alive, conn.seen_closed])
            # Unread data makes close() send a reset: the server's orphaned end goes at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    tcp_mem_pages: list[int] = []

    def poll() -> None:
        tcp_mem_pages.append(tcp_memory_pages())
        # What the kernel shows is true at some moment of the read: alive at
        # least until its start, closed at the latest by its end.
        start = time.monotonic()
        alive = established(p.ports[k] for k in ("sse", "ws"))
        end = time.monotonic()
        for conn in list(live.values()):
            if conn.closed.done() or conn.t_connect >= start:
                continue
            if (conn.server_port, conn.port) in alive:
                conn.last_alive = start
            else:
                conn.seen_closed = end
                conn.closed.set_result(None)

    async def poller() -> None:
        while not stopping.is_set():
            poll()
            await asyncio.sleep(0.25)

    tasks = [asyncio.create_task(keep("sse" if k % 2 == 0 else "ws")) for k in range(p.stalled)]
    poll_task = asyncio.create_task(poller())
    await asyncio.wait_for(ready.wait(), timeout=120)
    emit({"type": "ready", "stalled": len(live)})
    while True:
        command = await commands.get()
        if command is None or command.get("cmd") == "stop":
            break
    stopping.set()
    await poll_task
    poll()  # a last look, so what closed by now is counted
    await asyncio.sleep(0)
    now = time.monotonic()
    still_open = [[c.kind, c.port, c.t_connect, c.last_alive] for c in live.values() if not c.closed.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in list(live.values()):
        conn.sock.close()
    emit(
        {
            "type": "report",
            "t": now,
            "opened": dict(opened),
            "refused": dict(refused),
            "closed": closed,
            "open": still_open,
            "connect_errors": send_errors[:50],
            "tcp_mem_pages_max": max(tcp_mem_pages, default=0),
        }
    )
