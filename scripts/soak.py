"""Soak test: stalled and healthy clients, a hostile publisher and restarts.

    python scripts/soak.py --minutes 10     # the hardening issue's soak
    python scripts/soak.py --minutes 1      # a quick run

Not part of the pytest suite. Real processes talk over real sockets:

- **hub** (the "training process"): ``get_stream_server`` on ports 0, a
  training thread logging ``--rate`` metric events/s over ``--runs`` runs,
  ``force_restart()`` every ``--restart-interval`` s, its own RSS sampled every
  second (psutil).
- **healthy** (``--healthy-procs`` processes): ``--healthy`` clients, half SSE
  (``GET /events``, resuming with ``Last-Event-ID``), half WebSocket (the
  subscription in the URL, ``/?since=N&epoch=E``). Each reads everything and
  checks every seq as it comes, across every reconnect: from its first seq to
  the final head, each exactly once and in increasing order.
- **stalled**: ``--stalled`` clients, half SSE, half WebSocket, that resume from
  seq 1 with a small ``SO_RCVBUF`` and never read. Whether the server closed
  one is read from the kernel (the server's end of the connection leaves
  ``ESTABLISHED`` in ``/proc/net/tcp``), without reading a byte; a closed one
  is replaced at once, so about ``--stalled`` exist at all times.
- **hostile**: cross-site ``text/plain`` posts, 1 MiB bodies of
  ``{"data": [{}, {}, ...]}``, posts inventing runs x metrics past
  ``max_series``, a foreign ``Host``, cross-site WebSocket handshakes,
  malformed JSON, an oversized body, and slowloris connections trickling a
  request a byte at a time on all three ports.
- **orchestrator** (this command): starts them, runs for ``--minutes``, stops
  everything in order, checks, prints a table; exit code 0 only if every check
  passes.

Telling evictions from restarts: a restart closes every connection too, and
those closes are not evictions. The hub process wraps its server's
``clients.evict`` (instrumentation only, nothing in ``stream_hub`` changes) to
record the time, server port and client port of each eviction it counts (a
client port is unique only per server port), and records the window ``[start,
end]`` of every ``force_restart()``. A stalled connection seen closed is
*evicted* if an eviction of it falls between its connect and the moment the
close was seen, *closed by a restart* if it was seen closed during a restart
window, and otherwise a finding (the server closed it while serving without
counting it). ``clients.evicted`` must equal the number of evictions recorded,
and every recorded eviction must belong to a client of ours.

The settings, and why: ``send_timeout`` 2 s, so a stalled client can be evicted
between two restarts 5 s apart; ``handshake_timeout`` 3 s, so slowloris
connections meet it between restarts; ``shutdown_timeout`` 1 s, so a restart
waits at most ~0.6 s for the streams of stalled clients before dropping them
(with the 5 s default every restart would take ~2.5 s with stalled clients
around, half of each 5 s period); ``history_bytes`` 32 MiB (below). The hub's
loop responsiveness is measured from outside (``GET /health`` every 100 ms),
its GC pauses from inside (``gc.callbacks``), kernel TCP memory from
``/proc/net/sockstat`` (stalled clients' data waits in the server's socket send
buffers, outside RSS). Every process's log and the raw reports
(``reports.json``) are kept in ``--log-dir``.

The RSS bound (``rss_bound``) is the hub's RSS once started, plus what each
bounded structure may hold in this soak::

    history       1.5 x history_bytes   (32 MiB here, lowered from the 64 MiB
                                         default; the ring charges each event
                                         the size of its three encodings + 300 B;
                                         x1.5 for object headers and malloc slack)
    series        runs x 4 metrics x 80 KiB (a full 1000-point curve measures
                  ~73 KiB) + max_series x 1 KiB (a one-point curve ~0.6 KiB)
    clients       (stalled + healthy + slowloris + 16) x 1.125 x
                  (64 KiB high-water mark + one chunk): a writer waits while
                  the transport is paused, so at most one chunk beyond the
                  mark; a chunk is <= 256 KiB or one event, and the hostile
                  publisher's events are ~1 MiB, so a chunk is <= 1 MiB + 1 KiB;
                  x1.125 for bytearray over-allocation
    chunk cache   65 x that chunk (the ring's joined-chunk cache)
    ingest        32 MiB (one 1 MiB body of "{}"s parses into ~350 000 dicts,
                  ~24 MiB, while it is checked)
    slack         64 MiB (malloc arenas of five threads, fragmentation)

The bound holds with glibc's mmap threshold fixed at 128 KiB, as
``stream-hub serve`` fixes it (:mod:`stream_hub.runtime.memory`; the hub
process here does the same). ``--default-malloc`` leaves it dynamic: glibc
then keeps freed buffers of up to the largest one freed (a 1 MiB event) in
the heap, and RSS is reported without a bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import ctypes
import dataclasses
import gc
import http.client
import json
import logging
import os
import queue
import random
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024
MiB = 1024 * 1024
HOST = "127.0.0.1"
METRICS = ("loss", "acc", "lr", "grad_norm")

logger = logging.getLogger("soak")


@dataclasses.dataclass
class Params:
    """Everything a soak run is made of (sent to every child process as JSON)."""

    minutes: float = 10.0
    rate: int = 500
    runs: int = 4
    restart_interval: float = 5.0
    healthy: int = 200
    healthy_procs: int = 2
    stalled: int = 200
    send_timeout: float = 2.0
    handshake_timeout: float = 3.0
    shutdown_timeout: float = 1.0
    history_size: int = 10_000
    history_bytes: int = 32 * MiB
    max_series: int = 10_000
    blob_interval: float = 3.0
    slowloris: int = 6
    default_malloc: bool = False
    # Filled in by the orchestrator for the clients.
    ports: dict[str, int] = dataclasses.field(default_factory=dict)
    index: int = 0


def emit(message: dict[str, Any], lock: threading.Lock | None = None) -> None:
    """One JSON line on stdout: how every child talks to the orchestrator."""
    line = json.dumps(message, separators=(",", ":")) + "\n"
    if lock is None:
        sys.stdout.write(line)
        sys.stdout.flush()
        return
    with lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def backoff(failures: int) -> float:
    """Reconnect delay: 5 ms doubling to 250 ms, with jitter (a restart takes well under a second)."""
    return min(0.25, 0.005 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)


def raise_fd_limit(wanted: int = 16384) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# =====================================================================================
# hub: the training process
# =====================================================================================


class HubLoad:
    """The training thread, the restarter and the RSS sampler of the hub process."""

    def __init__(self, p: Params, server: Any, manager: Any) -> None:
        import psutil

        self.p = p
        self.server = server
        self.manager = manager
        self.process = psutil.Process()
        self.stop_load = threading.Event()
        self.stop_sampling = threading.Event()
        self.out = threading.Lock()
        self.windows: list[dict[str, Any]] = []
        self.samples: list[tuple[float, int]] = []
        self.logged = 0
        self.train_error: str | None = None
        self.threads: list[threading.Thread] = []
        self.sampler: threading.Thread | None = None
        self.gc_pauses: list[list[float]] = []  # [t, ms, generation] of collections over 20 ms
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif (ms := (time.perf_counter() - self._gc_started) * 1000) > 20:
            self.gc_pauses.append([time.monotonic(), ms, info["generation"]])

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def start(self) -> None:
        self.sampler = threading.Thread(target=self._sample, name="soak-rss", daemon=True)
        self.sampler.start()
        for target, name in ((self._train, "soak-train"), (self._restart, "soak-restart")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_load.set()
        for thread in self.threads:
            thread.join(timeout=60)
            if thread.is_alive():
                raise RuntimeError(f"{thread.name} did not stop within 60 s")

    def _train(self) -> None:
        """Log ``rate`` metric events/s in ticks of 10 ms, round-robin over the runs."""
        p, server = self.p, self.server
        runs = [f"train{k}" for k in range(p.runs)]
        per_tick = max(1, p.rate // 100)
        period = per_tick / p.rate
        due = time.monotonic()
        n = 0
        try:
            while not self.stop_load.is_set():
                for _ in range(per_tick):
                    run = runs[n % len(runs)]
                    step = n // len(runs)
                    loss = 2.0 / (1.0 + step * 1e-3) + random.random() * 0.05
                    server.log(
                        {"loss": loss, "acc": 1.0 - loss / 2.5, "lr": 1e-3, "grad_norm": random.random()},
                        step=step,
                        run=run,
                    )
                    n += 1
                if n % 1000 < per_tick:
                    server.publish("log", {"message": f"{n} events logged", "level": "INFO"}, run=runs[0])
                    n += 1
                due += period
                delay = due - time.monotonic()
                if delay > 0:
                    self.stop_load.wait(delay)  # pacing the load, not waiting for something
                elif delay < -1.0:
                    due = time.monotonic()  # starved for a second: do not catch up in a burst
        except Exception as exc:  # a failing log() is a finding: report it
            self.train_error = repr(exc)
            logger.exception("training thread failed")
        self.logged = n

    def _restart(self) -> None:
        """``force_restart()`` every ``restart_interval`` s (start to start)."""
        interval = self.p.restart_interval
        due = time.monotonic() + interval
        while not self.stop_load.wait(max(0.0, due - time.monotonic())):
            before = self.server.status()["clients"]["evicted"]
            t0 = time.monotonic()
            error = None
            try:
                self.manager.force_restart()
            except Exception as exc:
                error = repr(exc)
                logger.exception("force_restart failed")
            t1 = time.monotonic()
            after = self.server.status()["clients"]["evicted"]
            running = self.manager.is_server_running()
            self.windows.append(
                {
                    "t0": t0,
                    "t1": t1,
                    "evicted": after - before,
                    "error": error,
                    "running": running,
                    "ports": self.server.ports,
                }
            )
            due += interval
            if due < time.monotonic():
                due = time.monotonic() + interval

    def _sample(self) -> None:
        last_progress = time.monotonic()
        while not self.stop_sampling.is_set():
            now = time.monotonic()
            self.samples.append((now, self.rss()))
            if now - last_progress >= 30.0:
                last_progress = now
                status = self.server.status()
                emit(
                    {
                        "type": "progress",
                        "t": now,
                        "rss": self.samples[-1][1],
                        "last_seq": status["last_seq"],
                        "clients": status["clients"],
                        "restarts": status["restarts"],
                    },
                    self.out,
                )
            self.stop_sampling.wait(1.0)  # one sample a second


def record_evictions(server: Any) -> list[list[Any]] | None:
    """Wrap the server's ``clients.evict`` to record ``[time, server port, client
    port, why]`` of each eviction it counts (instrumentation: the library is not
    changed). Both ports: a client port is unique only per server port.

    None when the server has no such registry (then only the counter is used).
    """
    registry = getattr(server, "clients", None)
    original = getattr(registry, "evict", None)
    if registry is None or original is None or not hasattr(registry, "evicted"):
        return None
    records: list[list[Any]] = []

    def evict(conn: Any, why: str) -> None:
        wire = getattr(conn, "wire", None)
        peer = wire.get_extra_info("peername") if wire is not None else None
        local = wire.get_extra_info("sockname") if wire is not None else None
        before = registry.evicted
        original(conn, why)
        if registry.evicted != before:
            kind = "send_timeout" if "send_timeout" in why else "client_buffer_bytes"
            records.append([time.monotonic(), local[1] if local else None, peer[1] if peer else None, kind])

    registry.evict = evict
    return records


class WriteAfterCloseWatch(logging.Filter):
    """Counts asyncio's "socket.send() raised exception." warnings (a write to a
    transport after its connection was lost, the 6th and later) and keeps the
    call stack of the first few, so a report can say which writer keeps writing."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.stacks: list[str] = []
        self.times: list[float] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("socket.send() raised exception"):
            self.count += 1
            if len(self.times) < 100_000:
                self.times.append(time.monotonic())
            if len(self.stacks) < 3:
                self.stacks.append("".join(traceback.format_stack(limit=14)[:-3]))
            return self.count <= 20  # the count is reported; the log keeps the first 20
        return True


def rest_status(port: int) -> dict[str, Any]:
    """``GET /api/status`` (commits what is pending, so ``last_seq`` is the head)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/api/status")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/api/status answered {response.status}: {body[:200]!r}")
        result: dict[str, Any] = json.loads(body)
        return result
    finally:
        conn.close()


def hub_main(p: Params) -> int:
    import psutil

    from stream_hub import StreamConfig, get_stream_server, get_stream_server_manager, release_stream_server

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per WebSocket connection and handshake refusal is noise at this rate.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    write_after_close = WriteAfterCloseWatch()
    logging.getLogger("asyncio").addFilter(write_after_close)
    raise_fd_limit()
    if not p.default_malloc:
        # As stream-hub serve does: the RSS bound is for freed buffers given back.
        from stream_hub.runtime.memory import fix_mmap_threshold

        fix_mmap_threshold()
    rss_baseline = int(psutil.Process().memory_info().rss)
    config = StreamConfig(
        host=HOST,
        sse_port=0,
        ws_port=0,
        rest_port=0,
        port_conflict="fail",
        send_timeout=p.send_timeout,
        handshake_timeout=p.handshake_timeout,
        shutdown_timeout=p.shutdown_timeout,
        history_size=p.history_size,
        history_bytes=p.history_bytes,
        max_series=p.max_series,
    )
    server = get_stream_server(config=config)
    manager = get_stream_server_manager()
    evictions = record_evictions(server)
    load = HubLoad(p, server, manager)
    status = server.status()
    emit(
        {
            "type": "ready",
            "ports": server.ports,
            "pid": os.getpid(),
            "epoch": status["epoch"],
            "rss_baseline": rss_baseline,
            "rss_started": load.rss(),
            "config": config.to_dict(),
            "evictions_recorded": evictions is not None,
        },
        load.out,
    )
    t_go = t_stop = 0.0
    head: int | None = None
    for line in sys.stdin:
        command = json.loads(line)["cmd"]
        if command == "go":
            t_go = time.monotonic()
            load.start()
            emit({"type": "go", "t": t_go, "rss": load.rss()}, load.out)
        elif command == "stop_load":
            load.stop()
            t_stop = time.monotonic()
            try:
                final = rest_status(server.ports["rest"])
                error = None
            except (OSError, RuntimeError, ValueError) as exc:
                # The server is not serving (a failed restart): the clients cannot
                # reach any head; report the committed one and say why.
                final = manager.status()
                error = f"/api/status failed: {exc!r}; running={manager.is_server_running()}"
                logger.error("%s", error)
            head = final["last_seq"]
            emit({"type": "head", "head": head, "t": t_stop, "status": final, "error": error}, load.out)
        elif command == "exit":
            break
    rss_end = load.rss()
    load.stop_load.set()
    load.stop_sampling.set()
    if load.sampler is not None:
        load.sampler.join(timeout=5)
    status = manager.status()
    stop_error = None
    t0 = time.monotonic()
    try:
        release_stream_server()
    except Exception as exc:
        stop_error = repr(exc)
        logger.exception("release_stream_server failed")
    stop_ms = (time.monotonic() - t0) * 1000
    rss_after_stop = load.rss()
    # What of that is free memory malloc kept, rather than live objects?
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss_after_trim = load.rss()
    emit(
        {
            "type": "final",
            "t_go": t_go,
            "t_stop": t_stop,
            "head": head,
            "status": status,
            "running_after_release": manager.is_server_running(),
            "stop_error": stop_error,
            "stop_ms": stop_ms,
            "rss_end": rss_end,
            "rss_after_stop": rss_after_stop,
            "rss_after_trim": rss_after_trim,
            "samples": load.samples,
            "windows": load.windows,
            "evictions": evictions,
            "logged": load.logged,
            "train_error": load.train_error,
            "gc_pauses": load.gc_pauses,
            "write_after_close": write_after_close.count,
            "write_after_close_stacks": write_after_close.stacks,
            "write_after_close_times": write_after_close.times,
        },
        load.out,
    )
    return 0


# =====================================================================================
# healthy clients: read everything, check every seq
# =====================================================================================

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


def stdin_queue(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[dict[str, Any] | None]:
    """Commands from the orchestrator (JSON lines on stdin) as an asyncio queue."""
    commands: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(commands.put_nowait, None)

    threading.Thread(target=pump, name="soak-stdin", daemon=True).start()
    return commands


# =====================================================================================
# stalled clients: connect far back, never read
# =====================================================================================


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


# =====================================================================================
# hostile publisher
# =====================================================================================

# What each hostile request must be answered with.
EXPECTED: dict[str, set[int]] = {
    "xsite_text_plain": {403, 415},
    "text_plain": {415},
    "malformed_json": {400},
    "host_evil_rest": {403},
    "host_evil_sse": {403},
    "host_evil_ws": {403},
    "ws_origin_evil": {403},
    "too_large_declared": {413},
    "invent_series": {200, 422},
    "blob_1mib": {200},
}


def blob_body(limit: int = MiB) -> bytes:
    """A valid event of exactly ``limit`` bytes: ``{"type": "blob", "data": [{}, {}, ...]}``."""
    prefix = b'{"type":"blob","run":"hostile","data":['
    n = (limit - len(prefix) - 2 + 1) // 3
    body = prefix + b",".join([b"{}"] * n) + b"]}"
    return body + b" " * (limit - len(body))


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    host: str | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'{HOST}:{port}'}", "Connection: close"]
    given = dict(headers or {})
    if body or method == "POST":
        given.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in given.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def ws_handshake(port: int, host: str | None = None, origin: str | None = None) -> bytes:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "aG9zdGlsZS1zb2FrLWtleQ==",
        "Sec-WebSocket-Version": "13",
    }
    if origin:
        headers["Origin"] = origin
    raw = http_request(port, "GET", "/", headers=headers, host=host)
    return raw.replace(b"Connection: close\r\n", b"")


class Hostile:
    def __init__(self, p: Params) -> None:
        self.p = p
        self.counts: dict[str, Counter[str]] = {kind: Counter() for kind in EXPECTED}
        self.errors: list[list[Any]] = []  # [kind, t0, t1, error]
        self.unexpected: list[list[Any]] = []  # [kind, t0, t1, status, body start]
        self.series_accepted_after_cap = 0
        self.series_capped = False
        self.slowloris: list[list[Any]] = []  # [port kind, t_connect, t_closed, how, bytes sent]
        self.slowloris_open: list[list[Any]] = []
        self.slowloris_refused = 0
        self.blobs: list[list[float]] = []  # [t0, t1] of each accepted 1 MiB post
        self.probes: list[list[float]] = []  # [t, ms] of each REST /health answer
        self.probe_errors: list[list[Any]] = []  # [t0, t1, error]
        self.stopping = asyncio.Event()
        self.invented = 0
        self.blob = blob_body()

    async def request(self, kind: str, port: int, raw: bytes) -> int | None:
        t0 = time.monotonic()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
            writer.write(raw)
            await asyncio.wait_for(writer.drain(), 30)
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 30)
            status = int(line.split(b" ", 2)[1])
            rest = await asyncio.wait_for(reader.read(64 * KiB), 30)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError) as exc:
            self.counts[kind]["error"] += 1
            self.errors.append([kind, t0, time.monotonic(), repr(exc)[:200]])
            return None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        self.counts[kind][str(status)] += 1
        if status not in EXPECTED[kind]:
            body = rest.split(b"\r\n\r\n", 1)[-1][:200].decode("latin-1")
            self.unexpected.append([kind, t0, time.monotonic(), status, body])
        return status

    def invent_body(self) -> bytes:
        """Ten new runs of 100 new metrics: 1000 new curves per post."""
        k = self.invented
        self.invented += 1
        events = [
            {"run": f"invented-{k}-{j}", "step": 1, "metrics": {f"m{i}": 1.0 for i in range(100)}}
            for j in range(10)
        ]
        return json.dumps({"events": events}).encode()

    async def cycle(self) -> None:
        ports = self.p.ports
        rest, sse, ws = ports["rest"], ports["sse"], ports["ws"]
        small = b'{"run": "hostile", "step": 1, "metrics": {"x": 1.0}}'
        evil = "http://evil.example"
        next_blob = time.monotonic()
        while not self.stopping.is_set():
            t_cycle = time.monotonic()
            plain = {"Content-Type": "text/plain"}
            await self.request(
                "xsite_text_plain",
                rest,
                http_request(rest, "POST", "/api/publish", small, {**plain, "Origin": evil}),
            )
            await self.request("text_plain", rest, http_request(rest, "POST", "/api/publish", small, plain))
            json_type = {"Content-Type": "application/json"}
            await self.request(
                "malformed_json",
                rest,
                http_request(rest, "POST", "/api/publish", b'{"run": "x", "metrics": {', json_type),
            )
            await self.request(
                "host_evil_rest", rest, http_request(rest, "GET", "/api/status", host="evil.example")
            )
            await self.request("host_evil_sse", sse, http_request(sse, "GET", "/events", host="evil.example"))
            await self.request("host_evil_ws", ws, ws_handshake(ws, host="evil.example"))
            await self.request("ws_origin_evil", ws, ws_handshake(ws, origin=evil))
            too_large = http_request(
                rest, "POST", "/api/publish", b"", {**json_type, "Content-Length": str(2 * MiB)}
            )
            await self.request("too_large_declared", rest, too_large)
            status = await self.request(
                "invent_series",
                rest,
                http_request(rest, "POST", "/api/publish", self.invent_body(), json_type),
            )
            if status == 422:
                self.series_capped = True
            elif status == 200 and self.series_capped:
                self.series_accepted_after_cap += 1
            if time.monotonic() >= next_blob:
                next_blob += self.p.blob_interval
                t0 = time.monotonic()
                blob = http_request(rest, "POST", "/api/publish", self.blob, json_type)
                if await self.request("blob_1mib", rest, blob) == 200:
                    self.blobs.append([t0, time.monotonic()])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, t_cycle + 0.5 - time.monotonic()))

    async def slow(self, kind: str) -> None:
        """Trickle a request that never ends, a byte every 0.25 s, until the server closes it."""
        port = self.p.ports[kind]
        if kind == "ws":
            request = ws_handshake(port)[:-2] + b"X-Slow: " + b"a" * 100_000
        else:
            request = f"GET /api/status HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Slow: ".encode() + b"a" * 100_000
        failures = 0
        while not self.stopping.is_set():
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                self.slowloris_refused += 1
                failures += 1
                await asyncio.sleep(backoff(failures))
                continue
            failures = 0
            t0 = time.monotonic()
            sent = 0
            ended = asyncio.ensure_future(reader.read(1))
            how = None
            while not self.stopping.is_set():
                done, _ = await asyncio.wait({ended}, timeout=0.25)
                if done:
                    exc = ended.exception()
                    how = type(exc).__name__ if exc else ("eof" if not ended.result() else "answered")
                    break
                writer.write(request[sent : sent + 1])
                sent += 1
            t1 = time.monotonic()
            if how is None:
                ended.cancel()
                self.slowloris_open.append([kind, t0, t1, sent])
            else:
                self.slowloris.append([kind, t0, t1, how, sent])
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def probe(self) -> None:
        """How responsive the hub's loop is: ``GET /health`` every 100 ms, on a
        kept-alive connection (reopened after each restart)."""
        port = self.p.ports["rest"]
        request = f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        while not self.stopping.is_set():
            t0 = time.monotonic()
            # A kept-alive connection the last restart closed fails once: then
            # the same request goes out again on a fresh connection.
            for attempt in (1, 2):
                start = time.monotonic()
                reused = writer is not None
                try:
                    if writer is None or reader is None:
                        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
                    writer.write(request)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    await asyncio.wait_for(reader.readexactly(int(length[1]) if length else 0), 10)
                    self.probes.append([start, (time.monotonic() - start) * 1000])
                    break
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                    if writer is not None:
                        writer.close()
                    writer = reader = None
                    if not (reused and attempt == 1):
                        self.probe_errors.append([start, time.monotonic(), repr(exc)[:100]])
                        break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, t0 + 0.1 - time.monotonic()))
        if writer is not None:
            writer.close()

    def report(self) -> dict[str, Any]:
        return {
            "type": "report",
            "blobs": self.blobs,
            "probes": self.probes,
            "probe_errors": self.probe_errors,
            "counts": {kind: dict(c) for kind, c in self.counts.items()},
            "errors": self.errors,
            "unexpected": self.unexpected[:50],
            "unexpected_total": len(self.unexpected),
            "series_capped": self.series_capped,
            "series_accepted_after_cap": self.series_accepted_after_cap,
            "slowloris": self.slowloris,
            "slowloris_open": self.slowloris_open,
            "slowloris_refused": self.slowloris_refused,
        }


async def hostile_main_async(p: Params) -> None:
    loop = asyncio.get_running_loop()
    commands = stdin_queue(loop)
    hostile = Hostile(p)
    kinds = ["rest", "sse", "ws"]
    tasks = [asyncio.create_task(hostile.cycle()), asyncio.create_task(hostile.probe())]
    tasks += [asyncio.create_task(hostile.slow(kinds[k % 3])) for k in range(p.slowloris)]
    emit({"type": "ready"})
    while True:
        command = await commands.get()
        if command is None or command.get("cmd") == "stop":
            break
    hostile.stopping.set()
    done, pending = await asyncio.wait(tasks, timeout=60)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            hostile.errors.append(["task", 0.0, 0.0, repr(task.exception())])
    emit(hostile.report())


# =====================================================================================
# orchestrator
# =====================================================================================


class SoakError(Exception):
    """The soak could not run to the end (a process died or did not answer)."""


class Child:
    """A child process of the soak: JSON lines in on stdin, out on stdout, its log in a file."""

    def __init__(self, name: str, role: str, p: Params, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[str] = open(self.log_path, "w")  # closed in finish()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--role",
                role,
                "--params",
                json.dumps(dataclasses.asdict(p)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, name=f"soak-{name}", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def expect(
        self, kind: str, timeout: float, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SoakError(
                    f"{self.name}: no {kind!r} message within {timeout:g} s (log: {self.log_path})"
                )
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise SoakError(
                    f"{self.name} exited with code {self.proc.wait()} before sending {kind!r} "
                    f"(log: {self.log_path})"
                )
            message: dict[str, Any] = json.loads(line)
            if message.get("type") == kind:
                return message
            if message.get("type") == "progress" and on_progress is not None:
                on_progress(message)

    def drain(self, on_progress: Callable[[dict[str, Any]], None]) -> None:
        """Handle the progress lines that came in; raise if the child died."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                raise SoakError(
                    f"{self.name} exited early with code {self.proc.wait()} (log: {self.log_path})"
                )
            message = json.loads(line)
            if message.get("type") == "progress":
                on_progress(message)

    def finish(self, timeout: float = 30.0) -> int | None:
        """Close stdin, wait for the exit; kill (this child, by its pid) if it hangs."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not exit within %g s; killing pid %d", self.name, timeout, self.proc.pid)
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._log.close()
        return code


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a child so far (0 if it is gone)."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def progress_line(t_go: float) -> Callable[[dict[str, Any]], None]:
    def show(message: dict[str, Any]) -> None:
        clients = message["clients"]
        print(
            f"  [{message['t'] - t_go:6.0f} s] seq {message['last_seq']:>9,}  "
            f"RSS {message['rss'] / MiB:6.1f} MiB  "
            f"clients sse {clients['sse']} ws {clients['ws']}  evicted {clients['evicted']:,}  "
            f"restarts {message['restarts']}",
            file=sys.stderr,
            flush=True,
        )

    return show


def orchestrate(p: Params, log_dir: Path) -> int:
    raise_fd_limit()
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"soak: {p.minutes:g} min; logs in {log_dir}", file=sys.stderr, flush=True)
    children: list[Child] = []
    try:
        hub = Child("hub", "hub", p, log_dir)
        children.append(hub)
        ready = hub.expect("ready", 60)
        p.ports = ready["ports"]
        stalled = Child("stalled", "stalled", p, log_dir)
        children.append(stalled)
        healthy = []
        for index in range(p.healthy_procs):
            healthy.append(Child(f"healthy{index}", "healthy", dataclasses.replace(p, index=index), log_dir))
        children += healthy
        for child in [stalled, *healthy]:
            child.expect("ready", 180)
        hub.send({"cmd": "go"})
        go = hub.expect("go", 30)
        show = progress_line(go["t"])
        hostile = Child("hostile", "hostile", p, log_dir)
        children.append(hostile)
        hostile.expect("ready", 60)
        print(f"soak: running; hub pid {ready['pid']}, ports {p.ports}", file=sys.stderr, flush=True)
        end = go["t"] + p.minutes * 60
        while time.monotonic() < end:
            for child in children:
                child.drain(show)
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))  # pacing the run's duration
        cpu = {child.name: cpu_seconds(child.proc.pid) for child in children}
        print("soak: stopping the load", file=sys.stderr, flush=True)
        hostile.send({"cmd": "stop"})
        hostile_report = hostile.expect("report", 90)
        hub.send({"cmd": "stop_load"})
        head = hub.expect("head", 120, show)
        for child in healthy:
            child.send({"cmd": "finish", "final_head": head["head"]})
        healthy_reports = [child.expect("report", 120) for child in healthy]
        stalled.send({"cmd": "stop"})
        stalled_report = stalled.expect("report", 60)
        hub.send({"cmd": "exit"})
        final = hub.expect("final", 60)
        codes = {child.name: child.finish() for child in children}
    except SoakError as exc:
        print(f"soak: FAILED to run: {exc}", file=sys.stderr)
        for child in children:
            child.finish(timeout=5)
        return 2
    except BaseException:
        for child in children:
            child.finish(timeout=5)
        raise
    reports = {
        "params": dataclasses.asdict(p),
        "ready": ready,
        "head": head,
        "final": final,
        "healthy": healthy_reports,
        "stalled": stalled_report,
        "hostile": hostile_report,
        "codes": codes,
        "cpu": cpu,
    }
    (log_dir / "reports.json").write_text(json.dumps(reports))
    return analyze(reports, log_dir)


def analyze(reports: dict[str, Any], log_dir: Path) -> int:
    """Check a run's reports and print the table; the exit code (0: every check passed)."""
    p = Params(**reports["params"])
    result = Analysis(
        p,
        reports["ready"],
        reports["head"],
        reports["final"],
        reports["healthy"],
        reports["stalled"],
        reports["hostile"],
        reports["codes"],
        log_dir,
    )
    result.cpu = reports["cpu"]
    return result.report()


# -- analysis -------------------------------------------------------------------------


def rss_bound(p: Params, started: int) -> tuple[int, list[tuple[str, int]]]:
    """The most RSS the hub may reach in this soak, and its terms (see the module docstring)."""
    chunk = max(256 * KiB, MiB + KiB)
    clients = p.stalled + p.healthy + p.slowloris + 16
    terms = [
        ("RSS once started (interpreter, fastapi, uvicorn, websockets)", started),
        (f"history: 1.5 x history_bytes ({p.history_bytes // MiB} MiB)", int(1.5 * p.history_bytes)),
        (
            f"series: {p.runs}x{len(METRICS)} full curves x 80 KiB + max_series ({p.max_series}) x 1 KiB",
            p.runs * len(METRICS) * 80 * KiB + p.max_series * KiB,
        ),
        (
            f"clients: {clients} x 1.125 x (64 KiB + {chunk // KiB} KiB chunk)",
            int(clients * 1.125 * (64 * KiB + chunk)),
        ),
        ("chunk cache: 65 joined chunks", 65 * chunk),
        ("ingest: one 1 MiB body of {}s parsed", 32 * MiB),
        ("slack: malloc arenas, fragmentation", 64 * MiB),
    ]
    return sum(v for _, v in terms), terms


class Windows:
    """The restart windows, for "did this happen during a restart?"."""

    def __init__(self, windows: list[dict[str, Any]], slack: float = 0.05, end: float = float("inf")) -> None:
        # A restart that left the server stopped lasts until one brings it back.
        spans = []
        for i, w in enumerate(windows):
            t1 = w["t1"]
            if not w.get("running", True):
                t1 = next((v["t1"] for v in windows[i + 1 :] if v.get("running", True)), end)
            spans.append((w["t0"] - slack, t1 + slack))
        self.spans = sorted(spans)
        self.starts = [s for s, _ in self.spans]

    def overlaps(self, a: float, b: float) -> bool:
        """Whether [a, b] meets a restart window."""
        i = bisect.bisect_right(self.starts, b)
        return any(self.spans[j][1] >= a for j in range(max(0, i - 3), i))

    def find(self, a: float, b: float) -> int | None:
        """The index of the first restart window that meets [a, b] (None: none)."""
        i = bisect.bisect_right(self.starts, b)
        hits = [j for j in range(max(0, i - 3), i) if self.spans[j][1] >= a]
        return hits[0] if hits else None

    def serving_before(self, index: int, since: float) -> float:
        """How long the server served between ``since`` and the start of window ``index``."""
        previous_end = self.spans[index - 1][1] if index > 0 else float("-inf")
        return max(0.0, self.spans[index][0] - max(since, previous_end))

    def survived(self, since: float, alive: float, grace: float = 1.0) -> bool:
        """Whether a connection made at ``since`` was still alive at ``alive``,
        more than ``grace`` s after a whole restart window that began after it."""
        i = bisect.bisect_right(self.starts, since)
        return any(end + grace < alive for _, end in self.spans[i:])

    def last_end_before(self, t: float) -> float:
        """When the last restart before ``t`` ended (-inf: none)."""
        i = bisect.bisect_right(self.starts, t)
        ends = [e for _, e in self.spans[:i] if e <= t]
        return max(ends, default=float("-inf"))


class Analysis:
    def __init__(
        self,
        p: Params,
        ready: dict[str, Any],
        head: dict[str, Any],
        final: dict[str, Any],
        healthy: list[dict[str, Any]],
        stalled: dict[str, Any],
        hostile: dict[str, Any],
        codes: dict[str, int | None],
        log_dir: Path,
    ) -> None:
        self.p = p
        self.ready = ready
        self.head = head
        self.final = final
        self.clients = [c for r in healthy for c in r["clients"]]
        self.catch_up = max((r["catch_up_s"] for r in healthy), default=0.0)
        self.stalled = stalled
        self.hostile = hostile
        self.codes = codes
        self.log_dir = log_dir
        self.windows = Windows(final["windows"])
        self.rows: list[tuple[str, str, str]] = []
        self.findings: list[str] = []
        self.failed = False
        self.cpu: dict[str, float] = {}

    def row(self, name: str, value: Any, ok: bool | None = None) -> None:
        check = "" if ok is None else ("ok" if ok else "FAIL")
        if ok is False:
            self.failed = True
        self.rows.append((name, str(value), check))

    def section(self, name: str) -> None:
        self.rows.append((name, "", ""))

    def report(self) -> int:
        self.general()
        self.memory()
        self.stalled_clients()
        self.healthy_clients()
        self.hostile_publisher()
        self.logs()
        self.print()
        return 1 if self.failed else 0

    # -- figures ------------------------------------------------------------------------

    def general(self) -> None:
        final, p = self.final, self.p
        status = final["status"]
        duration = final["t_stop"] - final["t_go"]
        windows = final["windows"]
        failed = [w for w in windows if w["error"]]
        ms = sorted((w["t1"] - w["t0"]) * 1000 for w in windows) or [0.0]
        self.section("hub")
        self.row("duration of the load (s)", f"{duration:.1f}")
        self.row("events published (events.published)", f"{status['events']['published']:,}")
        self.row("final head (last_seq)", f"{self.head['head']:,}")
        if self.head.get("error"):
            self.row("server serving at the end of the load", "no", False)
            self.findings.append(f"at the end of the load: {self.head['error']}")
        down = [w for w in windows if not w.get("running", True)]
        self.row("restarts that left the server stopped", len(down), not down)
        ports = self.ready["ports"]
        moved = [w for w in windows if w.get("running", True) and w.get("ports", ports) != ports]
        self.row("restarts that came back on other ports", len(moved), not moved)
        for w in moved[:3]:
            self.findings.append(
                f"the restart at {w['t0'] - final['t_go']:.1f} s came back on ports {w['ports']}, not {ports}"
            )
        self.row(
            "training events logged / rate",
            f"{final['logged']:,} / {final['logged'] / max(duration, 1e-9):.0f} per s",
        )
        self.row("training thread errors", final["train_error"] or "none", final["train_error"] is None)
        self.row(
            "events delivered / dropped / rejected",
            " / ".join(f"{status['events'][k]:,}" for k in ("delivered", "dropped", "rejected")),
        )
        expected = int(duration // p.restart_interval)
        self.row(
            "force_restart done / failed",
            f"{len(windows)} / {len(failed)}",
            not failed and len(windows) >= expected - 1,
        )
        for w in failed[:5]:
            self.findings.append(f"force_restart failed at t={w['t0'] - final['t_go']:.1f} s: {w['error']}")
        self.row(
            "restart duration ms (median / p95 / max)",
            f"{statistics.median(ms):.0f} / {ms[int(0.95 * (len(ms) - 1))]:.0f} / {ms[-1]:.0f}",
        )
        stopped = final["stop_error"] is None and not final["running_after_release"]
        self.row(
            "release_stream_server() at the end",
            f"{'stopped' if stopped else final['stop_error']} in {final['stop_ms']:.0f} ms",
            stopped,
        )
        if not stopped:
            self.findings.append(f"the final stop failed: {final['stop_error']}")
        if self.cpu:
            self.row(
                "CPU s used during the load, per process",
                ", ".join(f"{name} {seconds:.0f}" for name, seconds in self.cpu.items()),
            )
        bad_exit = {name: code for name, code in self.codes.items() if code != 0}
        self.row("child processes exited cleanly", "yes" if not bad_exit else bad_exit, not bad_exit)

    def memory(self) -> None:
        final, ready = self.final, self.ready
        samples = final["samples"]
        rss = [r for _, r in samples] or [0]
        bound, terms = rss_bound(self.p, ready["rss_started"])
        self.section("memory (hub process RSS)")
        self.row(
            "RSS after imports / once started (MiB)",
            f"{ready['rss_baseline'] / MiB:.1f} / {ready['rss_started'] / MiB:.1f}",
        )
        peak_at = samples[rss.index(max(rss))][0] - final["t_go"] if samples else 0.0
        self.row(
            "RSS start / peak / end of load (MiB)",
            f"{rss[0] / MiB:.1f} / {max(rss) / MiB:.1f} (at {peak_at:.0f} s) / {final['rss_end'] / MiB:.1f}",
        )
        n = len(rss)
        parts = 10 if n >= 300 else 4
        if n >= 2 * parts:
            peaks = [max(rss[i * n // parts : (i + 1) * n // parts]) / MiB for i in range(parts)]
            name = "tenth" if parts == 10 else "quarter"
            self.row(f"RSS peak per {name} of the run (MiB)", " / ".join(f"{q:.0f}" for q in peaks))
        self.row(
            "RSS after the final stop / after gc + malloc_trim (MiB)",
            f"{final['rss_after_stop'] / MiB:.1f} / {final['rss_after_trim'] / MiB:.1f}",
        )
        if self.p.default_malloc:
            # glibc keeps freed buffers below its raised mmap threshold: no bound is stated.
            fixed = f"none ({bound / MiB:.1f} if fixed)"
            self.row("RSS bound (MiB), glibc mmap threshold left dynamic", fixed)
            return
        self.row("RSS bound (MiB), glibc mmap threshold fixed", f"{bound / MiB:.1f}", max(rss) < bound)
        for name, value in terms:
            self.row(f"  + {name}", f"{value / MiB:.1f}")
        if max(rss) >= bound:
            self.findings.append(
                f"hub RSS peaked at {max(rss) / MiB:.1f} MiB, over the bound of {bound / MiB:.1f} MiB"
            )

    def evictions(self) -> list[list[Any]] | None:
        return self.final["evictions"]

    def stalled_clients(self) -> None:
        p, final, report = self.p, self.final, self.stalled
        windows = self.windows
        t_go = final["t_go"]
        records = self.evictions()
        by_port: dict[tuple[int, int], list[list[Any]]] = {}
        for record in records or []:
            by_port.setdefault((record[1], record[2]), []).append(record)
        used: set[int] = set()

        def match(kind: str, port: int, t_from: float, t_to: float) -> list[Any] | None:
            for record in by_port.get((p.ports[kind], port), ()):
                if id(record) not in used and t_from - 0.01 <= record[0] <= t_to + 0.01:
                    used.add(id(record))
                    return record
            return None

        evicted: Counter[str] = Counter()
        by_restart: Counter[str] = Counter()
        unexplained: list[list[Any]] = []
        overdue: list[list[Any]] = []
        to_evict: list[float] = []
        threshold = p.send_timeout + 0.5 + 1.5  # send_timeout + a sweep + slack
        for kind, port, t_connect, last_alive, seen in report["closed"]:
            record = match(kind, port, t_connect, seen)
            if record is not None:
                evicted[kind] += 1
                to_evict.append(record[0] - t_connect)
            elif (index := windows.find(last_alive, seen)) is not None:
                by_restart[kind] += 1
                serving = windows.serving_before(index, t_connect)
                if t_connect > t_go + 10 and serving > threshold:
                    overdue.append([kind, port, t_connect - t_go, serving])
            else:
                unexplained.append([kind, port, t_connect - t_go, last_alive - t_go, seen - t_go])
        survivors = [
            [kind, port, t_connect - t_go, last_alive - t_go]
            for kind, port, t_connect, last_alive, *_ in report["closed"] + report["open"]
            if windows.survived(t_connect, last_alive)
        ]
        t_end = report["t"]
        still = []
        for kind, port, t_connect, _ in report["open"]:
            serving = t_end - max(t_connect, windows.last_end_before(t_end))
            if t_connect > t_go + 10 and serving > threshold:
                still.append([kind, port, t_connect - t_go, serving])
        opened = report["opened"]
        closed = len(report["closed"])
        self.section("stalled clients")
        self.row(
            "stalled connections opened (SSE / WS)", f"{opened.get('sse', 0):,} / {opened.get('ws', 0):,}"
        )
        self.row("connect attempts refused (restarting)", f"{sum(report['refused'].values()):,}")
        self.row("seen closed by the server", f"{closed:,}")
        self.row("  evicted (an eviction of that port)", f"{evicted['sse']:,} SSE + {evicted['ws']:,} WS")
        self.row("  closed by a restart", f"{by_restart['sse']:,} SSE + {by_restart['ws']:,} WS")
        self.row("  closed while serving, not evicted", len(unexplained), not unexplained)
        for item in unexplained[:5]:
            self.findings.append(
                f"stalled {item[0]} client port {item[1]} (connected at {item[2]:.1f} s) was closed by "
                f"the server between {item[3]:.2f} s and {item[4]:.2f} s, outside any restart, "
                "without being counted as evicted"
            )
        if to_evict:
            to_evict.sort()
            self.row(
                "  connect -> eviction s (median / max)",
                f"{statistics.median(to_evict):.2f} / {to_evict[-1]:.2f}",
            )
        self.row(
            f"  served > {threshold:g} s and not evicted",
            len(overdue) + len(still),
            not overdue and not still,
        )
        for item in (overdue + still)[:5]:
            self.findings.append(
                f"stalled {item[0]} client port {item[1]} (connected at {item[2]:.1f} s) was served for "
                f"{item[3]:.1f} s without an eviction (send_timeout {p.send_timeout:g} s)"
            )
        self.row("still open at the end", len(report["open"]))
        self.row("outlived a whole restart (never closed by it)", len(survivors), not survivors)
        for kind, port, t_connect, last_alive in survivors[:5]:
            self.findings.append(
                f"stalled {kind} client port {port} (connected at {t_connect:.1f} s) was still connected at "
                f"{last_alive:.1f} s, through the restarts in between"
            )
        self.row(
            "kernel TCP memory, all sockets, peak (MiB)",
            f"{report.get('tcp_mem_pages_max', 0) * os.sysconf('SC_PAGE_SIZE') / MiB:.1f}",
        )
        self.row(
            "stalled evictions happened at all",
            "yes" if sum(evicted.values()) else "no",
            sum(evicted.values()) > 0,
        )
        counter = final["status"]["clients"]["evicted"]
        self.section("evictions")
        if records is None:
            self.row("clients.evicted", f"{counter:,} (evictions not recorded: no per-connection check)")
            return
        healthy_evicted = 0
        for client in self.clients:
            for port, t_open, t_close, _ in client["abrupt"]:
                if match(client["kind"], port, t_open, t_close) is not None:
                    healthy_evicted += 1
        unmatched = [r for r in records if id(r) not in used]
        kinds = Counter(r[3] for r in records)
        self.row(
            "clients.evicted counter / evictions recorded",
            f"{counter:,} / {len(records):,}",
            counter == len(records),
        )
        self.row(
            "  by send_timeout / by client_buffer_bytes",
            f"{kinds['send_timeout']:,} / {kinds['client_buffer_bytes']:,}",
        )
        self.row("  of stalled / of healthy clients", f"{sum(evicted.values()):,} / {healthy_evicted:,}")
        self.row("  during a restart window", f"{sum(w['evicted'] for w in final['windows']):,}")
        self.row("  of no client of ours", len(unmatched), not unmatched)
        for record in unmatched[:5]:
            self.findings.append(
                f"eviction of client port {record[2]} on server port {record[1]} at "
                f"{record[0] - t_go:.2f} s matches no client connection"
            )

    def healthy_clients(self) -> None:
        clients, head = self.clients, self.head["head"]
        sse = [c for c in clients if c["kind"] == "sse"]
        ws = [c for c in clients if c["kind"] == "ws"]
        lost = sum(c["lost"] for c in clients)
        dups = sum(c["dups"] for c in clients)
        gaps = [g for c in clients for g in c["gaps"]]
        behind = [c for c in clients if c["last"] != head]
        errors = [(c["id"], e) for c in clients for e in c["errors"]]
        firsts = [c["first"] for c in clients]
        self.section("healthy clients")
        self.row("healthy clients (SSE / WS)", f"{len(sse)} / {len(ws)}")
        self.row("events received", f"{sum(c['received'] for c in clients):,}")
        self.row("events lost (holes in the sequence)", f"{lost:,}", lost == 0)
        self.row("duplicates / out of order", f"{dups:,}", dups == 0)
        self.row("gap events", f"{len(gaps)} ({sum(c['gap_lost'] for c in clients):,} seqs)", not gaps)
        self.row(
            "reached the final head",
            f"{len(clients) - len(behind)}/{len(clients)} (catch-up {self.catch_up:.1f} s)",
            not behind,
        )
        self.row(
            "first seq (min / max)",
            f"{min(firsts, default=0):,} / {max(firsts, default=0):,}",
        )
        self.row(
            "connections / shutdown events seen",
            f"{sum(c['connections'] for c in clients):,} / {sum(c['shutdowns'] for c in clients):,}",
        )
        abrupt = [a for c in clients for a in c["abrupt"]]
        in_restart = sum(1 for a in abrupt if self.windows.overlaps(a[2] - 0.1, a[2]))
        self.row(
            "closed without a shutdown event (in a restart / not)",
            f"{in_restart} / {len(abrupt) - in_restart}",
        )
        reconnect = [c["reconnect_max"] for c in clients]
        means = [c["reconnect_mean"] for c in clients if c["reconnect_mean"]]
        self.row(
            "shutdown -> reconnected s (mean / max)",
            f"{statistics.fmean(means) if means else 0:.3f} / {max(reconnect, default=0):.3f}",
        )
        statuses: Counter[str] = Counter()
        for c in clients:
            statuses.update(c["statuses"])
        self.row("handshake answers", ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())))
        self.row("protocol errors seen", len(errors), not errors)
        for c in clients:
            if c["lost"]:
                self.findings.append(
                    f"healthy {c['kind']} client {c['id']} lost {c['lost']} events: holes {c['holes'][:5]}"
                )
            if c["dups"]:
                self.findings.append(
                    f"healthy {c['kind']} client {c['id']} got {c['dups']} duplicate/out-of-order events"
                )
        for g in gaps[:5]:
            self.findings.append(f"healthy client got a gap event: {g}")
        for c in behind[:5]:
            self.findings.append(
                f"healthy {c['kind']} client {c['id']} ended at seq {c['last']}, not the head {head}"
            )
        for ident, error in errors[:5]:
            self.findings.append(f"healthy client {ident}: {error}")

    def hostile_publisher(self) -> None:
        report, windows, p = self.hostile, self.windows, self.p
        t_go = self.final["t_go"]
        self.section("hostile publisher (answers by status)")
        for kind, counts in report["counts"].items():
            allowed = EXPECTED[kind]
            bad = {k: v for k, v in counts.items() if k != "error" and int(k) not in allowed}
            shown = ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))
            self.row(
                f"{kind} (expect {'/'.join(map(str, sorted(allowed)))})",
                shown or "none",
                not bad and bool(counts),
            )
        for kind, t0, _, status, body in report["unexpected"][:5]:
            self.findings.append(f"hostile {kind} at {t0 - t_go:.1f} s answered {status}: {body}")
        self.row(
            "max_series reached (422)", "yes" if report["series_capped"] else "no", report["series_capped"]
        )
        self.row(
            "  curves accepted after the cap",
            report["series_accepted_after_cap"],
            report["series_accepted_after_cap"] == 0,
        )
        errors = report["errors"]
        outside = [e for e in errors if not windows.overlaps(e[1], e[2])]
        self.row(
            "connection errors (in a restart / outside)",
            f"{len(errors) - len(outside)} / {len(outside)}",
            not outside,
        )
        for kind, t0, t1, error in outside[:5]:
            self.findings.append(
                f"hostile {kind} request at {t0 - t_go:.2f}-{t1 - t_go:.2f} s failed outside any "
                f"restart: {error}"
            )
        self.responsiveness()
        self.section("slowloris connections")
        ht = p.handshake_timeout
        timed, restarted, odd = Counter(), Counter(), []
        for kind, t0, t1, how, sent in report["slowloris"]:
            age = t1 - t0
            if ht - 0.3 <= age <= ht + 1.0 and how in ("eof", "ConnectionResetError"):
                timed[kind] += 1
            elif windows.overlaps(t1 - 0.3, t1):
                restarted[kind] += 1
            else:
                odd.append([kind, t0 - t_go, age, how, sent])
        late = [s for s in report["slowloris_open"] if s[2] - s[1] > ht + 1.0]
        self.row(
            f"closed at handshake_timeout ({ht:g} s): REST / SSE / WS",
            f"{timed['rest']} / {timed['sse']} / {timed['ws']}",
            sum(timed.values()) > 0,
        )
        self.row("closed by a restart", sum(restarted.values()))
        self.row("closed otherwise (early, late, answered)", len(odd), not odd)
        self.row("outlived handshake_timeout at the end", len(late), not late)
        for kind, t0, age, how, sent in odd[:5]:
            self.findings.append(
                f"slowloris on {kind} (at {t0:.1f} s) ended after {age:.2f} s ({how}, {sent} bytes sent)"
            )

    def responsiveness(self) -> None:
        """REST /health latency outside restarts: how long the hub's loop stalls."""
        report, windows, t_go = self.hostile, self.windows, self.final["t_go"]
        probes = [(t, ms) for t, ms in report["probes"] if not windows.overlaps(t, t + ms / 1000)]
        self.section("hub loop responsiveness (REST /health every 100 ms, outside restarts)")
        if not probes:
            self.row("probes", "none")
            return
        ms = sorted(m for _, m in probes)
        self.row(
            "latency ms (median / p99 / max)",
            f"{statistics.median(ms):.1f} / {ms[int(0.99 * (len(ms) - 1))]:.1f} / {ms[-1]:.0f}",
        )
        slow = sorted(((m, t) for t, m in probes if m > 250), reverse=True)
        self.row("answers slower than 250 ms", len(slow))
        blobs = [t0 for t0, _ in report["blobs"]]
        for m, t in slow[:3]:
            near = min((abs(t - b) for b in blobs), default=float("inf"))
            self.row(f"  {m:.0f} ms at {t - t_go:.1f} s", f"nearest 1 MiB post {near:.2f} s away")
        pauses = self.final.get("gc_pauses") or []
        longest = max((ms for _, ms, _ in pauses), default=0.0)
        self.row("hub GC pauses > 20 ms (count / longest ms)", f"{len(pauses)} / {longest:.0f}")
        errors = [e for e in report["probe_errors"] if not windows.overlaps(e[0], e[1])]
        self.row("probe errors outside restarts", len(errors), not errors)
        for t0, _, error in errors[:3]:
            self.findings.append(
                f"REST /health probe at {t0 - t_go:.2f} s failed outside any restart: {error}"
            )

    def logs(self) -> None:
        self.section("logs")
        hub_log = self.log_dir / "hub.log"
        text = hub_log.read_text(errors="replace") if hub_log.exists() else ""
        tracebacks = text.count("Traceback (most recent call last)")
        errors = [line for line in text.splitlines() if " ERROR " in line]
        warnings = Counter(
            re.sub(r"\d+(\.\d+)?", "N", line.split(" WARNING ", 1)[1])[:110]
            for line in text.splitlines()
            if " WARNING " in line
        )
        self.row(
            "hub log: tracebacks / ERROR lines",
            f"{tracebacks} / {len(errors)}",
            tracebacks == 0 and not errors,
        )
        writes = self.final.get("write_after_close", 0)
        times = self.final.get("write_after_close_times") or []
        during = sum(1 for t in times if t < self.final["t_stop"])
        self.row("asyncio write-after-close warnings (during the load)", f"{writes:,} ({during:,})")
        if writes:
            stacks = self.final.get("write_after_close_stacks") or ["?"]
            self.findings.append(
                f"{writes:,} 'asyncio: socket.send() raised exception.' warnings (writes to a transport "
                "after its connection was lost, the 6th and later on one transport); first stack:\n"
                + stacks[0].rstrip()
            )
        for line in errors[:5]:
            self.findings.append(f"hub log: {line[:300]}")
        for message, count in warnings.most_common(4):
            self.row(f"  WARNING x{count}", message)
        for name in sorted(self.codes):
            if name == "hub":
                continue
            path = self.log_dir / f"{name}.log"
            other = path.read_text(errors="replace") if path.exists() else ""
            if "Traceback" in other:
                self.row(f"{name} log: tracebacks", other.count("Traceback"), False)
                self.findings.append(f"{name} log has tracebacks; see {path}")

    def print(self) -> None:
        p = self.p
        print()
        print(
            f"stream_hub soak: {p.minutes:g} min, {p.rate} events/s over {p.runs} runs, force_restart every "
            f"{p.restart_interval:g} s, {p.healthy} healthy + {p.stalled} stalled clients, "
            "a hostile publisher"
        )
        print(
            f"config: send_timeout={p.send_timeout:g} s, handshake_timeout={p.handshake_timeout:g} s, "
            f"shutdown_timeout={p.shutdown_timeout:g} s, history_size={p.history_size}, "
            f"history_bytes={p.history_bytes // MiB} MiB (default 64), max_series={p.max_series}, "
            f"1 MiB blob every {p.blob_interval:g} s"
        )
        width = max(len(name) for name, _, _ in self.rows) + 2
        vwidth = max(len(value) for _, value, _ in self.rows) + 2
        print()
        print(f"{'figure':<{width}}{'value':<{vwidth}}check")
        print("-" * (width + vwidth + 5))
        for name, value, check in self.rows:
            if not value and not check:
                print(f"{name}")
            else:
                print(f"  {name:<{width - 2}}{value:<{vwidth}}{check}")
        print()
        if self.findings:
            print("findings:")
            for finding in self.findings:
                print(f"  - {finding}")
        print(f"RESULT: {'FAIL' if self.failed else 'PASS'} (logs in {self.log_dir})")


# =====================================================================================
# entry point
# =====================================================================================


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    defaults = Params()
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="how long the load runs")
    parser.add_argument("--rate", type=int, default=defaults.rate, help="training events per second")
    parser.add_argument("--runs", type=int, default=defaults.runs, help="training runs logged round-robin")
    parser.add_argument("--restart-interval", type=float, default=defaults.restart_interval)
    parser.add_argument(
        "--healthy", type=int, default=defaults.healthy, help="healthy clients, half SSE, half WS"
    )
    parser.add_argument("--healthy-procs", type=int, default=defaults.healthy_procs)
    parser.add_argument(
        "--stalled", type=int, default=defaults.stalled, help="stalled clients, half SSE, half WS"
    )
    parser.add_argument("--send-timeout", type=float, default=defaults.send_timeout)
    parser.add_argument("--handshake-timeout", type=float, default=defaults.handshake_timeout)
    parser.add_argument("--shutdown-timeout", type=float, default=defaults.shutdown_timeout)
    parser.add_argument("--history-mib", type=int, default=defaults.history_bytes // MiB)
    parser.add_argument("--blob-interval", type=float, default=defaults.blob_interval)
    parser.add_argument("--slowloris", type=int, default=defaults.slowloris)
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's mmap threshold dynamic in the hub (fixed by default, as in stream-hub serve)",
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="where the processes' logs go")
    parser.add_argument(
        "--report", type=Path, default=None, metavar="LOG_DIR", help="print the table of a finished run again"
    )
    parser.add_argument(
        "--role",
        default="run",
        choices=["run", "hub", "healthy", "stalled", "hostile"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--params", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role != "run":
        p = Params(**json.loads(args.params))
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if args.role == "hub":
            return hub_main(p)
        raise_fd_limit()
        role_main = {
            "healthy": healthy_main_async,
            "stalled": stalled_main_async,
            "hostile": hostile_main_async,
        }[args.role]
        asyncio.run(role_main(p))
        return 0
    if args.report is not None:
        return analyze(json.loads((args.report / "reports.json").read_text()), args.report)
    p = Params(
        minutes=args.minutes,
        rate=args.rate,
        runs=args.runs,
        restart_interval=args.restart_interval,
        healthy=args.healthy,
        healthy_procs=args.healthy_procs,
        stalled=args.stalled,
        send_timeout=args.send_timeout,
        handshake_timeout=args.handshake_timeout,
        shutdown_timeout=args.shutdown_timeout,
        history_bytes=args.history_mib * MiB,
        blob_interval=args.blob_interval,
        slowloris=args.slowloris,
        default_malloc=args.default_malloc,
    )
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="stream-hub-soak-"))
    return orchestrate(p, log_dir)


if __name__ == "__main__":
    sys.exit(main())
