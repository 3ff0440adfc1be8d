"""The Redis backend's figures: ingest through Redis from four publisher
processes, publish-to-SSE latency through Redis to two replicas, and
deliveries/s per replica.

Everything shares this machine: a ``redis-server`` started here (no
persistence), the publisher processes, two ``stream-hub serve --backend``
replicas and the load-generator processes. The baseline side is what a
user would write by hand with redis-py (as encode/broadcaster's stream
backend does): one ``XADD`` per event, one round trip each, from the same
four processes; it has no replicas, resume or SSE, so its latency and
fan-out figures stay empty.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from .clients import LoadClient

__all__ = ["fig_redis"]

METRICS = {"loss": 0.123456, "acc": 0.9}
PUBLISHERS = 4
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))]


@contextmanager
def _redis_server() -> Iterator[str]:
    """A private ``redis-server`` (its URL), stopped afterwards."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen([executable, *args, "--dir", workdir], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_answering(url, proc)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def _wait_answering(url: str, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            if redis.Redis.from_url(url).ping():
                return
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
        _pause(0.01)


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)


# -- ingest: four publisher processes ----------------------------------------------------------


def _publisher_main(side: str, url: str, namespace: str, n: int, ready: Any, go: Event, out: Any) -> None:
    """One publisher process: get ready, wait for ``go``, publish ``n`` events."""
    if side == "stream_hub":
        from stream_hub import StreamConfig, TrainingStreamServer

        server = TrainingStreamServer(StreamConfig(backend=url, namespace=namespace, replica=False))
        server.start()
        log = server.log
        ready.release()
        go.wait()
        t0 = time.perf_counter()
        for i in range(n):
            log(METRICS, step=i, run="ingest")
        spent = time.perf_counter() - t0
        server.stop(timeout=60)
    else:
        import redis

        client = redis.Redis.from_url(url)
        stream = f"{namespace}:naive"
        ready.release()
        go.wait()
        t0 = time.perf_counter()
        for i in range(n):
            event = {"ts": time.time(), "type": "metric", "run": "ingest", "step": i, "metrics": METRICS}
            body = json.dumps(event)
            client.xadd(stream, {"e": body}, maxlen=1_000_000, approximate=True)
        spent = time.perf_counter() - t0
    out.put(spent / n * 1e6)


def _ingest(side: str, url: str, n: int) -> dict[str, Any]:
    import redis

    ctx = multiprocessing.get_context("spawn")
    namespace = f"bench{os.getpid()}"
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_publisher_main, args=(side, url, namespace, n, ready, go, out))
        for _ in range(PUBLISHERS)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        if not ready.acquire(timeout=60):
            raise RuntimeError("a publisher process did not get ready")
    client = redis.Redis.from_url(url)
    total = PUBLISHERS * n

    def acknowledged() -> int:
        if side == "stream_hub":
            return int(client.get(f"{namespace}:seq") or 0)
        return int(client.xlen(f"{namespace}:naive"))

    t0 = time.perf_counter()
    go.set()
    deadline = t0 + 300
    while acknowledged() < total and time.perf_counter() < deadline:
        _pause(0.002)
    elapsed = time.perf_counter() - t0
    log_us = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(60)
    done = acknowledged()
    memory = client.memory_usage(f"{namespace}:stream" if side == "stream_hub" else f"{namespace}:naive")
    return {
        "redis_ingest_per_s": done / elapsed if done >= total else math.nan,
        "redis_publish_us": sorted(log_us)[len(log_us) // 2],
        "details": {
            "events": total,
            "acknowledged": done,
            "elapsed_s": elapsed,
            "log_us_per_process": log_us,
            "redis_bytes_per_event": (memory or 0) / max(1, done),
        },
    }


# -- two replicas: latency and fan-out -------------------------------------------------------


def _replica(url: str, namespace: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    # STREAM_HUB_HOME stays: a run under the tests keeps to their data directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_HUB_") or k == "STREAM_HUB_HOME"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    ports = ["--sse-port", "0", "--ws-port", "0", "--rest-port", "0", "--port-conflict", "fail"]
    backend = ["--backend", url, "--namespace", namespace]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_hub", "serve", "--json", *backend, *ports],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a replica did not start (exit {proc.wait(10)})")
    return proc, {k: int(v) for k, v in json.loads(line)["ports"].items()}


class _Publisher:
    """This process publishing into the namespace (no replica): events are
    numbered 1, 2, ... in the fresh namespace, so the seq of each is known."""

    def __init__(self, url: str, namespace: str) -> None:
        from stream_hub import StreamConfig, TrainingStreamServer

        self.server = TrainingStreamServer(StreamConfig(backend=url, namespace=namespace, replica=False))
        self.server.start()
        self.seq = 0

    def log(self, metrics: Mapping[str, float], step: int, run: str) -> int:
        self.server.log(metrics, step=step, run=run)
        self.seq += 1
        return self.seq

    def warm_up(self, clients: list[LoadClient]) -> int:
        for _ in range(40):
            seq = self.log({"probe": 1.0}, step=0, run="warmup")
            if all(client.sync(seq, timeout=0.5)["ok"] for client in clients):
                return seq
        raise RuntimeError("the replicas' clients never all received a probe")


def _replicated(url: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    namespace = f"replicated{os.getpid()}"
    replicas = [_replica(url, namespace) for _ in range(2)]
    clients = [LoadClient(), LoadClient()]
    try:
        for client, (_proc, ports) in zip(clients, replicas):
            reply = client.connect("sse", ports["sse"], sz["redis_clients"], mode="latency")
            if reply["n"] != sz["redis_clients"]:
                raise RuntimeError(f"SSE clients did not all connect: {reply}")
        publisher = _Publisher(url, namespace)
        try:
            publisher.warm_up(clients)
            rate = sz["redis_latency_rate"]
            n = max(1, int(rate * sz["redis_latency_seconds"]))
            start = time.perf_counter()
            seq = 0
            for i in range(n):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    _pause(delay)
                seq = publisher.log(METRICS, step=i, run="latency")
            achieved = n / (time.perf_counter() - start)
            latencies = [x * 1000 for client in clients for x in client.expect(seq, timeout=60)["latencies"]]

            publisher.warm_up(clients)
            burst = sz["redis_burst"]
            t0 = time.time()
            for i in range(burst):
                seq = publisher.log(METRICS, step=i, run="burst")
            rates = []
            for client in clients:
                done = client.expect(seq, timeout=120)
                last = max(done["last"]) if done["last"] else 0.0
                rates.append(sum(done["counts"]) / (last - t0) if last > t0 else math.nan)
        finally:
            publisher.server.stop()
    finally:
        for client in clients:
            client.close()
        for proc, _ports in replicas:
            proc.terminate()
            proc.wait(30)
    return {
        "redis_latency_p50_ms": _quantile(latencies, 0.5),
        "redis_latency_p99_ms": _quantile(latencies, 0.99),
        "redis_fanout_per_replica_per_s": min(rates),
        "details": {
            "rate": rate,
            "achieved_rate": achieved,
            "samples": len(latencies),
            "max_ms": max(latencies) if latencies else math.nan,
            "clients_per_replica": sz["redis_clients"],
            "burst": sz["redis_burst"],
            "deliveries_per_s_each_replica": rates,
        },
    }


def fig_redis(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    with _redis_server() as url:
        ingest = _ingest(side_name, url, sz["redis_ingest_events"])
        details: dict[str, Any] = {"ingest": ingest.pop("details")}
        figures = dict(ingest)
        if side_name == "stream_hub":
            replicated = _replicated(url, sz)
            details["replicas"] = replicated.pop("details")
            figures.update(replicated)
    return {"figures": figures, "details": details}
