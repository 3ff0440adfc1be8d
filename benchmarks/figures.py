"""The measurements. Each runs in a fresh process, one side at a time.

Every figure function takes the side's name and the sizes (a plain dict, see
``scripts/bench.py``) and returns ``{"figures": {...}, "details": {...}}``.
:func:`benchmarks.runner.run_isolated` runs one in a spawned worker process, so no
figure inherits another's threads, garbage or allocator state, and the two
sides never share a process. The load clients run in yet another process
(:class:`~benchmarks.clients.LoadClient`).
"""

from __future__ import annotations

import gc
import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .clients import LoadClient
from .probes import wait_free, wait_serving
from .process_figures import fig_processes
from .redis_figures import fig_redis
from .sides import Side, make_side
from .training import calibrate_work, work

logger = logging.getLogger(__name__)

__all__ = ["GROUPS", "calibrate_work"]

METRICS = {"loss": 0.123456, "acc": 0.9}
_PROBE = {"probe": 1.0}


# -- helpers -------------------------------------------------------------------


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)


def _warm_up(side: Side, client: LoadClient, timeout: float = 0.25, attempts: int = 40) -> int:
    """Publish probes until every client has one, then zero the client counters.

    A client counts as subscribed only once an event reached it; probes
    published before a server registered a subscriber never arrive, hence
    the retries.
    """
    for _ in range(attempts):
        seq = side.log(_PROBE, step=0, run="warmup")
        reply = client.sync(seq, timeout=timeout)
        if reply["ok"]:
            return seq
    raise RuntimeError(f"clients never all received a probe event: {reply}")


def _connect(client: LoadClient, kind: str, port: int, n: int, **kw: Any) -> dict[str, Any]:
    reply = client.connect(kind, port, n, **kw)
    if reply["n"] != n:
        raise RuntimeError(f"only {reply['n']} of {n} {kind} clients connected: {reply}")
    return reply


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


# -- publish cost ----------------------------------------------------------------


def _publish_batches(side: Side, batches: int, batch: int) -> list[float]:
    """µs per ``log()`` call, one number per batch of back-to-back calls."""
    log = side.log
    metrics = METRICS
    out = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for i in range(batch):
            log(metrics, step=i, run="pub")
        out.append((time.perf_counter_ns() - t0) / batch / 1000.0)
    return out


def fig_publish(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    # Batches are long (tens of ms) on purpose: the loop thread takes the GIL
    # about every switch interval (5 ms) to commit what was published, and
    # that cost lands on the publishing thread too. A batch much shorter than
    # the switch interval would sometimes catch it and sometimes not.
    side = make_side(side_name)
    side.start()
    try:
        _publish_batches(side, 1, sz["publish_batch"])  # warm caches and code paths
        idle = _publish_batches(side, sz["publish_batches"], sz["publish_batch"])
        with LoadClient() as client:
            _connect(client, "sse", side.ports["sse"], 1)
            first = _warm_up(side, client)
            one = _publish_batches(side, sz["publish_batches"], sz["publish_batch"])
            last = side.log(METRICS, step=0, run="pub-end")
            # How far behind the one client was when publishing ended (untimed).
            behind = client.stats()
    finally:
        side.stop()
    return {
        "figures": {
            "publish_us": statistics.median(idle),
            "publish_us_1client": statistics.median(one),
        },
        "details": {
            "batches_us_idle": idle,
            "batches_us_1client": one,
            "client_had_fraction_at_end": sum(behind["counts"]) / max(1, last - first),
        },
    }


# -- fan-out ---------------------------------------------------------------------


def _fanout(side_name: str, sz: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Deliveries/s of a burst: events received by all clients / (last receipt - first publish)."""
    n, burst = sz["fanout_clients"], sz["fanout_burst"]
    side = make_side(side_name)
    side.start()
    rounds = []
    try:
        with LoadClient() as client:
            _connect(client, kind, side.ports[kind], n)
            for _ in range(sz["fanout_rounds"]):
                _warm_up(side, client)  # also: all of the previous round has arrived
                log = side.log
                t0 = time.time()
                seq = 0
                for i in range(burst):
                    seq = log(METRICS, step=i, run="burst")
                t_published = time.time()
                done = client.expect(seq, timeout=sz["fanout_timeout"])
                received = sum(done["counts"])
                last = max(done["last"]) if done["last"] else 0.0
                elapsed = last - t0
                rounds.append(
                    {
                        "rate": received / elapsed if elapsed > 0 else math.nan,
                        "expected": n * burst,
                        "received": received,
                        "complete": bool(done["ok"]),
                        "publish_s": t_published - t0,
                        "elapsed_s": elapsed,
                        "min_per_client": min(done["counts"]) if done["counts"] else 0,
                    }
                )
    finally:
        side.stop()
    return {
        "figures": {f"fanout_{kind}_per_s": statistics.median(r["rate"] for r in rounds)},
        "details": {"clients": n, "burst": burst, "rounds": rounds},
    }


def fig_fanout_sse(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    return _fanout(side_name, sz, "sse")


def fig_fanout_ws(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    return _fanout(side_name, sz, "ws")


# -- latency ---------------------------------------------------------------------


def fig_latency(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    rate, seconds = sz["latency_rate"], sz["latency_seconds"]
    n_events = max(1, int(rate * seconds))
    side = make_side(side_name)
    side.start()
    try:
        with LoadClient() as client:
            _connect(client, "sse", side.ports["sse"], sz["latency_clients"], mode="latency")
            _warm_up(side, client)
            log = side.log
            interval = 1.0 / rate
            seq = 0
            start = time.perf_counter()
            for i in range(n_events):
                # Pace by absolute deadlines so sleep overshoot does not accumulate.
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                seq = log(METRICS, step=i, run="latency")
            achieved = n_events / (time.perf_counter() - start)
            done = client.expect(seq, timeout=30)
    finally:
        side.stop()
    lat_ms = sorted(x * 1000.0 for x in done["latencies"])
    return {
        "figures": {
            "latency_p50_ms": _percentile(lat_ms, 0.50),
            "latency_p99_ms": _percentile(lat_ms, 0.99),
        },
        "details": {
            "clients": sz["latency_clients"],
            "rate": rate,
            "achieved_rate": achieved,
            "events": n_events,
            "samples": len(lat_ms),
            "complete": bool(done["ok"]),
            "p90_ms": _percentile(lat_ms, 0.90),
            "p999_ms": _percentile(lat_ms, 0.999),
            "max_ms": lat_ms[-1] if lat_ms else math.nan,
        },
    }


def _paced_window(side: Side, client: LoadClient, rate: int, seconds: float, run: str) -> list[float]:
    """Log at ``rate`` for ``seconds`` (the thread sleeping between events);
    the latencies (ms) of that window's events at the timed clients."""
    first = _warm_up(side, client)
    interval, n = 1.0 / rate, max(1, int(rate * seconds))
    seq = first
    start = time.perf_counter()
    for i in range(n):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        seq = side.log(METRICS, step=i, run=run)
    done = client.expect(seq, timeout=30)
    return sorted(x * 1000.0 for x in done["latencies"])


def fig_latency_windows(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    """Latency in repeated windows, the worst one reported (issue: one window
    hides a window in which the hub batched for no reason): windows on a
    fresh hub, and windows right after a burst of ``fanout_burst`` events
    to ``fanout_clients`` clients; ``latency_clients`` of them timed."""
    rate, seconds, count = sz["latency_rate"], sz["latency_window_s"], sz["latency_windows"]
    fresh: list[list[float]] = []
    after_burst: list[list[float]] = []
    for _ in range(count):
        side = make_side(side_name)
        side.start()
        try:
            with LoadClient() as client:
                _connect(
                    client,
                    "sse",
                    side.ports["sse"],
                    sz["fanout_clients"],
                    mode="latency",
                    timed=sz["latency_clients"],
                )
                fresh.append(_paced_window(side, client, rate, seconds, "fresh"))
                last = 0
                for i in range(sz["fanout_burst"]):
                    last = side.log(METRICS, step=i, run="burst")
                client.expect(last, timeout=60)
                after_burst.append(_paced_window(side, client, rate, seconds, "after-burst"))
        finally:
            side.stop()

    def p(q: float, windows: list[list[float]]) -> list[float]:
        return [_percentile(w, q) for w in windows]

    return {
        "figures": {
            "latency_window_worst_p99_ms": max(p(0.99, fresh + after_burst)),
            "latency_window_worst_p50_ms": max(p(0.50, fresh + after_burst)),
            "latency_window_median_p99_ms": statistics.median(p(0.99, fresh + after_burst)),
        },
        "details": {
            "fresh_p99_ms": p(0.99, fresh),
            "after_burst_p99_ms": p(0.99, after_burst),
            "fresh_p50_ms": p(0.50, fresh),
            "after_burst_p50_ms": p(0.50, after_burst),
            "windows": 2 * count,
            "window_s": seconds,
            "rate": rate,
        },
    }


# -- training slowdown -----------------------------------------------------------


def _train_segment(seconds: float, work_n: int, log: Callable[..., int] | None) -> tuple[float, float]:
    """One segment of the training loop: (steps per wall second, process CPU µs per step).

    Process CPU time counts the server's loop thread too, and not the time
    other processes take the cores: it shows the server's cost even on a busy
    machine, where wall-clock rates wander.
    """
    steps = 0
    metrics = {"loss": 0.5, "acc": 0.5}
    cpu0 = time.process_time()
    t0 = now = time.perf_counter()
    while now - t0 < seconds:
        work(work_n)
        if log is not None:
            metrics["loss"] = 1.0 / (steps + 1)
            log(metrics, step=steps, run="train")
        steps += 1
        now = time.perf_counter()
    return steps / (now - t0), (time.process_time() - cpu0) / steps * 1e6


def _watched_segment(side_name: str, sz: Mapping[str, Any], client: LoadClient) -> dict[str, Any]:
    """One training segment with a fresh server and ``train_clients`` SSE watchers."""
    side = make_side(side_name)
    side.start()
    try:
        # A few watchers time every event; the rest only count, which keeps
        # the client process light next to the training process.
        _connect(
            client,
            "sse",
            side.ports["sse"],
            sz["train_clients"],
            mode="latency",
            timed=min(5, sz["train_clients"]),
        )
        first = _warm_up(side, client)
        rate, cpu_us = _train_segment(sz["train_segment_s"], sz["work_n"], side.log)
        last = side.log(METRICS, step=0, run="train-end")
        t_end = time.time()
        done = client.expect(last, timeout=60)
        client.drop()
    finally:
        side.stop()
    published = last - first
    return {
        "rate": rate,
        "cpu_us_per_step": cpu_us,
        "published": published,
        "delivered_fraction": sum(done["counts"]) / max(1, published * len(done["counts"])),
        # How long after training stopped the slowest watcher had everything.
        "lag_after_training_s": (max(done["last"]) - t_end) if done["last"] else None,
        "latencies": done["latencies"],
    }


def fig_slowdown(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    """Training steps/s with no server vs with clients watching, interleaved A-B-A-B-...-A.

    The machine's speed drifts (other work, frequency), so each watched
    segment is compared with the mean of the no-server segments right before
    and after it; the figure is the median of those paired slowdowns.
    """
    seg, reps, work_n = sz["train_segment_s"], sz["train_segments"], sz["work_n"]
    _train_segment(seg / 2, work_n, None)  # warm-up
    alone = [_train_segment(seg, work_n, None)]
    watched = []
    with LoadClient() as client:  # idle between segments
        for _ in range(reps):
            watched.append(_watched_segment(side_name, sz, client))
            alone.append(_train_segment(seg, work_n, None))

    def paired(i: int, what: int, value: float) -> float:
        """Slowdown of watched segment i against the mean of its two neighbours."""
        ref = (alone[i][what] + alone[i + 1][what]) / 2
        return (1.0 - value / ref) * 100.0 if what == 0 else (value / ref - 1.0) * 100.0

    wall = [paired(i, 0, w["rate"]) for i, w in enumerate(watched)]
    cpu = [paired(i, 1, w["cpu_us_per_step"]) for i, w in enumerate(watched)]
    lat_ms = sorted(x * 1000.0 for w in watched for x in w.pop("latencies"))
    return {
        "figures": {
            "train_slowdown_pct": statistics.median(wall),
            "train_cpu_overhead_pct": statistics.median(cpu),
            "train_watch_p99_ms": _percentile(lat_ms, 0.99),
        },
        "details": {
            "clients": sz["train_clients"],
            "work_n": work_n,
            "steps_per_s_no_server": [a[0] for a in alone],
            "steps_per_s_watched": [w["rate"] for w in watched],
            "cpu_us_per_step_no_server": [a[1] for a in alone],
            "cpu_us_per_step_watched": [w["cpu_us_per_step"] for w in watched],
            "paired_slowdown_pct": wall,
            "paired_cpu_overhead_pct": cpu,
            "segments": watched,
            "watch_p50_ms": _percentile(lat_ms, 0.5),
            "watch_max_ms": lat_ms[-1] if lat_ms else None,
        },
    }


# -- lifecycle -------------------------------------------------------------------


def fig_lifecycle(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    if side_name == "stream_hub":
        import stream_hub  # noqa: F401  (import time is not start time)
    side = make_side(side_name)
    start_ms: list[float] = []
    restart_ms: list[float] = []
    stop_ms: list[float] = []
    for cycle in range(sz["lifecycle_cycles"] + 1):  # cycle 0 warms up, uncounted
        t0 = time.perf_counter()
        side.start()
        wait_serving(side.ports)
        t1 = time.perf_counter()
        side.force_restart()
        wait_serving(side.ports)
        t2 = time.perf_counter()
        ports = side.ports
        side.stop()
        wait_free(ports)
        t3 = time.perf_counter()
        if cycle:
            start_ms.append((t1 - t0) * 1000)
            restart_ms.append((t2 - t1) * 1000)
            stop_ms.append((t3 - t2) * 1000)
    return {
        "figures": {
            "start_ms": statistics.median(start_ms),
            "stop_ms": statistics.median(stop_ms),
            "restart_ms": statistics.median(restart_ms),
        },
        "details": {"start_ms": start_ms, "stop_ms": stop_ms, "restart_ms": restart_ms},
    }


# -- memory ----------------------------------------------------------------------


def fig_memory(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    n = sz["memory_clients"]
    side = make_side(side_name, max_clients=n + 1000)
    side.start()
    try:
        with LoadClient() as client:
            # Warm up the code paths (lazy imports, first-request caches) first.
            _connect(client, "sse", side.ports["sse"], 20)
            _warm_up(side, client)
            client.drop()
            _pause(0.5)
            gc.collect()
            rss0 = _rss()
            t0 = time.perf_counter()
            _connect(client, "sse", side.ports["sse"], n, timeout=180)
            connect_s = time.perf_counter() - t0
            _warm_up(side, client, timeout=5.0, attempts=10)
            _pause(0.5)
            gc.collect()
            rss1 = _rss()
    finally:
        side.stop()
    return {
        "figures": {"rss_kb_per_client": (rss1 - rss0) / n / 1024.0},
        "details": {
            "clients": n,
            "rss_before_mb": rss0 / 2**20,
            "rss_after_mb": rss1 / 2**20,
            "connect_s": connect_s,
        },
    }


GROUPS: dict[str, Callable[[str, Mapping[str, Any]], dict[str, Any]]] = {
    "publish": fig_publish,
    "fanout_sse": fig_fanout_sse,
    "fanout_ws": fig_fanout_ws,
    "latency": fig_latency,
    "latency_windows": fig_latency_windows,
    "slowdown": fig_slowdown,
    "processes": fig_processes,
    "lifecycle": fig_lifecycle,
    "memory": fig_memory,
    "redis": fig_redis,
}
