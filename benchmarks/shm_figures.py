"""A CPU-bound training thread and where its hub is: in the process, joined
over the socket channel, joined over shared memory (issue 24).

Three ways the same training process publishes, each measured in this one
worker, one after the other, against a ``stream-hub serve`` subprocess for
the two joined ones (:mod:`benchmarks.served`; ``shared_memory`` on or off):

- ``inproc``: the hub in this process (20 SSE clients on it);
- ``socket``: joined, ``shared_memory=False`` (the forwarder thread);
- ``shm``: joined over a shared-memory ring (no thread of ours per event).

Figures, per mode:

- ``shm_spin_p50_ms_<mode>`` / ``shm_spin_p99_ms_<mode>``: event latency at
  ``latency_clients`` SSE clients while the training thread spins in pure
  Python (never letting the GIL go by itself) and logs ``shm_spin_rate``
  events/s, for ``shm_spin_seconds``;
- ``shm_log_cpu_us_<mode>``: the training thread's own CPU per ``log()``
  (``thread_time`` around batches of back-to-back calls, the median batch);
- ``shm_process_cpu_us_<mode>``: the training process's CPU (every thread:
  the hub's loop in process, the forwarder) per event beyond the step's
  work, from the same segments as the slowdown;
- ``shm_slowdown_pct_<mode>``: the training loop's slowdown logging one event
  per step at ``shm_train_rate`` steps/s (the step's work calibrated to it),
  each watched segment against the mean of the unwatched segments before and
  after it; ``shm_train_reps`` segments per mode, the median in the table,
  every value and the spread in the details.

The baseline (the hand-written hub of :mod:`benchmarks.baseline`) only runs
in process: its side measures the same three things in its own process and
reports them under each mode's key, so every row compares with it.
Derived rows say the issue's targets: the shared-memory ``log()`` CPU as a
ratio to the in-process one, and the socket's slowdown minus the ring's.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .clients import LoadClient
from .figures import _percentile, _train_segment
from .process_figures import _spread
from .served import ServedHub, private_registry
from .sides import make_side
from .training import calibrate_work

__all__ = ["MODES", "fig_shm"]

MODES = ("inproc", "socket", "shm")
METRICS = {"loss": 0.123456, "acc": 0.9, "lr": 0.001, "grad_norm": 1.5}


class _Target:
    """Where the training thread logs, and what the clients watch."""

    def __init__(self, log: Callable[..., Any], sse_port: int, last_seq: Callable[[], int | None]) -> None:
        self.log = log
        self.sse_port = sse_port
        self.last_seq = last_seq


def _spin(log: Callable[..., Any], rate: int, seconds: float) -> int:
    """Spin in pure Python, logging ``rate`` events/s; how many were logged."""
    interval = 1.0 / rate
    x, logged = 0, 0
    start = time.perf_counter()
    end = start + seconds
    next_at = start
    now = start
    while now < end:
        for _ in range(50):  # a few µs of pure Python between clock reads
            x = (x * 31 + 7) & 0xFFFFF
        now = time.perf_counter()
        if now >= next_at:
            log(METRICS, step=logged, run="spin")
            logged += 1
            next_at += interval
    return logged


def _latency(target: _Target, client: LoadClient, sz: Mapping[str, Any]) -> dict[str, Any]:
    seq = _sync(target, client)
    logged = _spin(target.log, sz["shm_spin_rate"], sz["shm_spin_seconds"])
    done = client.expect(seq + logged, timeout=60)
    lat = sorted(x * 1000.0 for x in done["latencies"])
    return {
        "p50_ms": _percentile(lat, 0.5),
        "p99_ms": _percentile(lat, 0.99),
        "max_ms": lat[-1] if lat else math.nan,
        "samples": len(lat),
        "logged": logged,
        "complete": bool(done["ok"]),
    }


def _sync(target: _Target, client: LoadClient) -> int:
    """Log probes until every client has one; the seq of the last probe."""
    for _ in range(40):
        seq = target.log({"probe": 1.0}, step=0, run="warmup")
        if seq is None:  # joined: the host numbers the events
            seq = _settled(target)
        if client.sync(seq, timeout=1.0)["ok"]:
            return int(seq)
    raise RuntimeError("the SSE clients never all received a probe")


def _settled(target: _Target) -> int:
    """The hub's last seq once it stopped moving (a joined process's events took)."""
    last = target.last_seq()
    while True:
        threading.Event().wait(0.02)
        now = target.last_seq()
        if now == last and now is not None:
            return now
        last = now


def _log_cpu(target: _Target, batches: int, batch: int) -> list[float]:
    """µs of the calling thread's CPU per log(), back-to-back batches."""
    out = []
    pause = threading.Event()
    for k in range(batches + 1):
        t0 = time.thread_time()
        for i in range(batch):
            target.log(METRICS, step=i, run="cpu")
        spent = time.thread_time() - t0
        if k:  # the first warms caches and code paths
            out.append(spent / batch * 1e6)
        pause.wait(0.2)  # the hub takes the batch before the next one
    return out


def _train(seconds: float, work_n: int, log: Callable[..., Any] | None) -> tuple[float, float]:
    """A loop of ``work(work_n)`` + one ``log()``: (steps per second, the
    process's CPU µs per step: every thread of it, the hub's in process too)."""
    return _train_segment(seconds, work_n, log)


def _targets(side_name: str, hub: ServedHub | None, stack: list[Any]) -> dict[str, _Target]:
    """The three ways to log (the baseline: its in-process hub for all three)."""
    side = make_side(side_name)
    side.start()
    stack.append(side.stop)
    inproc = _Target(side.log, side.ports["sse"], lambda: None)
    if hub is None:
        return {mode: inproc for mode in MODES}
    out = {"inproc": inproc}
    for mode, shared in (("socket", False), ("shm", True)):
        server = hub.join(shared_memory=shared)
        stack.append(server.stop)
        path = server.status()["forwarding"]["path"]
        if path != ("shared-memory" if shared else "socket"):
            raise RuntimeError(f"joined over {path!r}, not {mode!r}")
        out[mode] = _Target(server.log, hub.ports["sse"], hub.last_seq)
    return out


def fig_shm(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    if side_name != "stream_hub":
        return _measure(side_name, sz, None)
    with private_registry() as runtime:
        hub = ServedHub(runtime)
        try:
            return _measure(side_name, sz, hub)
        finally:
            hub.stop()


def _measure(side_name: str, sz: Mapping[str, Any], hub: ServedHub | None) -> dict[str, Any]:
    stack: list[Any] = []
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    try:
        targets = _targets(side_name, hub, stack)
        n = sz["latency_clients"]
        clients: dict[int, LoadClient] = {}
        for target in targets.values():
            if target.sse_port not in clients:
                client = clients[target.sse_port] = LoadClient()
                stack.append(client.close)
                reply = client.connect("sse", target.sse_port, n, mode="latency")
                if reply["n"] != n:
                    raise RuntimeError(f"only {reply['n']} of {n} SSE clients connected: {reply}")
        measured: dict[int, dict[str, Any]] = {}
        for target in targets.values():
            if id(target) not in measured:
                measured[id(target)] = _latency(target, clients[target.sse_port], sz)
        for client in clients.values():  # what follows is the training thread's cost alone
            client.drop()
        cpus: dict[int, list[float]] = {}
        for target in targets.values():
            if id(target) not in cpus:
                cpus[id(target)] = _log_cpu(target, sz["shm_cpu_batches"], sz["shm_cpu_batch"])
        for mode, target in targets.items():
            latency, cpu = measured[id(target)], cpus[id(target)]
            figures[f"shm_spin_p50_ms_{mode}"] = latency["p50_ms"]
            figures[f"shm_spin_p99_ms_{mode}"] = latency["p99_ms"]
            figures[f"shm_log_cpu_us_{mode}"] = statistics.median(cpu)
            details[mode] = {"spin_latency": latency, "log_cpu_us": _spread(cpu)}
        slowdowns = _slowdowns(targets, sz)
        for mode, values in slowdowns.pop("per_mode").items():
            figures[f"shm_slowdown_pct_{mode}"] = _spread(values)["median"]
            details[mode]["slowdown_pct"] = _spread(values)
        for mode, values in slowdowns.pop("process_cpu_us_per_event").items():
            figures[f"shm_process_cpu_us_{mode}"] = _spread(values)["median"]
            details[mode]["process_cpu_us_per_event"] = _spread(values)
        details["training"] = slowdowns
    finally:
        for undo in reversed(stack):
            try:
                undo()
            except Exception:  # the next ones still close
                pass
    if hub is not None:
        figures["shm_log_cpu_vs_inproc"] = figures["shm_log_cpu_us_shm"] / figures["shm_log_cpu_us_inproc"]
        figures["shm_slowdown_below_socket_pp"] = (
            figures["shm_slowdown_pct_socket"] - figures["shm_slowdown_pct_shm"]
        )
    details["sizes"] = {k: v for k, v in sz.items() if k.startswith("shm_") or k == "latency_clients"}
    return {"figures": figures, "details": details}


def _slowdowns(targets: Mapping[str, _Target], sz: Mapping[str, Any]) -> dict[str, Any]:
    """Alone, mode 1, alone, mode 2, ... alone, ``shm_train_reps`` times over:
    each watched segment's slowdown against its two neighbours."""
    seconds = sz["shm_train_segment_s"]
    # One step of work plus one log() at the training rate: the work alone
    # takes a little less than the step.
    work_n = calibrate_work(0.8 / sz["shm_train_rate"])
    _train(seconds / 2, work_n, None)  # warm-up
    alone = [_train(seconds, work_n, None)]
    watched: list[tuple[str, tuple[float, float]]] = []
    pause = threading.Event()
    for _ in range(sz["shm_train_reps"]):
        for mode, target in targets.items():
            watched.append((mode, _train(seconds, work_n, target.log)))
            pause.wait(0.3)  # the hub catches up before the next segment
            alone.append(_train(seconds, work_n, None))
    per_mode: dict[str, list[float]] = {mode: [] for mode in targets}
    cpu_per_event: dict[str, list[float]] = {mode: [] for mode in targets}
    for i, (mode, (rate, cpu_us)) in enumerate(watched):
        ref = (alone[i][0] + alone[i + 1][0]) / 2
        per_mode[mode].append((1.0 - rate / ref) * 100.0)
        # One event per step: what a step costs the process beyond its work.
        cpu_per_event[mode].append(cpu_us - (alone[i][1] + alone[i + 1][1]) / 2)
    return {
        "per_mode": per_mode,
        "process_cpu_us_per_event": cpu_per_event,
        "work_n": work_n,
        "steps_per_s_alone": alone,
        "steps_per_s_watched": watched,
    }
