"""The hostile publisher: cross-site posts, huge bodies, invented runs and
metrics, foreign Hosts and Origins, malformed JSON, slowloris connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from typing import Any

from .common import HOST, KiB, MiB, Params, backoff, emit, stdin_queue

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


async def probe_health(
    port: int, stopping: asyncio.Event, probes: list[list[float]], errors: list[list[Any]]
) -> None:
    """``GET /health`` every 100 ms until ``stopping`` is set, on a kept-alive
    connection (reopened after each restart); ``[t, ms]`` of each answer goes
    to ``probes``, ``[t0, t1, error]`` of each failure to ``errors``."""
    request = f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    while not stopping.is_set():
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
                probes.append([start, (time.monotonic() - start) * 1000])
                break
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                if writer is not None:
                    writer.close()
                writer = reader = None
                if not (reused and attempt == 1):
                    errors.append([start, time.monotonic(), repr(exc)[:100]])
                    break
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), max(0.0, t0 + 0.1 - time.monotonic()))
    if writer is not None:
        writer.close()


async def idle_probes(port: int, seconds: float) -> dict[str, list[list[Any]]]:
    """:func:`probe_health` for ``seconds`` s (the hub idle, before the load)."""
    stopping = asyncio.Event()
    probes: list[list[float]] = []
    errors: list[list[Any]] = []
    asyncio.get_running_loop().call_later(seconds, stopping.set)
    await probe_health(port, stopping, probes, errors)
    return {"probes": probes, "errors": errors}


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
        """How responsive the hub's loop is, while the load runs (see :func:`probe_health`)."""
        await probe_health(self.p.ports["rest"], self.stopping, self.probes, self.probe_errors)

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
