"""The hub process: the training process of the soak (a training thread,
``force_restart()`` every few seconds, its RSS sampled), instrumented to
record every eviction and restart window."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import http.client
import json
import logging
import os
import random
import sys
import threading
import time
import traceback
from typing import Any

from .common import HOST, Params, emit, raise_fd_limit

logger = logging.getLogger(__name__)


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


def idle_restarts(manager: Any, n: int) -> list[float]:
    """``force_restart()`` ``n`` times with no client and no load: ms each."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        manager.force_restart()
        out.append((time.perf_counter() - t0) * 1000)
    return out


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
    if not p.default_gc:
        # As stream-hub serve does once its server runs (stream_hub/runtime/collector.py).
        try:
            from stream_hub.runtime.collector import tune_for_serving
        except ImportError:  # a tree from before it (a baseline run)
            pass
        else:
            tune_for_serving()
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
        message = json.loads(line)
        command = message["cmd"]
        if command == "idle_restarts":
            emit({"type": "idle_restarts", "ms": idle_restarts(manager, message["n"])}, load.out)
        elif command == "go":
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
            "dropped_stalled": getattr(getattr(server, "clients", None), "dropped_stalled", None),
            "write_after_close": write_after_close.count,
            "write_after_close_stacks": write_after_close.stacks,
            "write_after_close_times": write_after_close.times,
        },
        load.out,
    )
    return 0
