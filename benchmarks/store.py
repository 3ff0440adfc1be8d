"""The durable store's figures: stream_hub with its default store (what a
user gets with no configuration, contract v3) and with an explicit store
file, against stream_hub with ``store=False`` (no baseline applies). Each
group runs in a fresh process, like every figure (:mod:`benchmarks.runner`),
for the stream_hub side only; ``STREAM_HUB_HOME`` is a temporary directory
(``scripts/bench.py``).

- ``store``: sustained events/s made durable by the default store while a
  thread logs as fast as it can; the writer thread's CPU time per event; the
  file's size per million metric events; the publish cost on the training
  thread (wall, and the thread's own CPU) without a store, with the default
  store and with an explicit one, in the same process.
- ``store_slowdown``: a training loop logging 10 000 events/s (about 100 µs
  of pure-Python work per step), alone, with a server without a store, with
  the default store and with an explicit store, interleaved; the slowdown
  against the neighbouring segments without a server, with its spread over
  the repeats, and the process's CPU time per step added (which other
  processes on the machine disturb less).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from .figures import _publish_batches, _train_segment, calibrate_work
from .sides import StreamHubSide

__all__ = ["STORE_GROUPS"]


def _store_status(side: StreamHubSide) -> dict[str, Any]:
    """The ``store`` part of the server's status (public API: ``manager.status()``)."""
    from stream_hub import get_stream_server_manager

    return dict(get_stream_server_manager().status().get("store") or {})


def _writer_cpu_s() -> float:
    """CPU seconds of the store's writer thread (found by its name)."""
    ids = {t.native_id for t in threading.enumerate() if t.name == "stream-hub-store"}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids)


def _varied_metrics(n: int = 4096) -> list[dict[str, float]]:
    """Metric dicts with realistic values (a decaying loss with noise, an
    accuracy), so the size figure is not that of one repeated event."""
    rng = random.Random(1)
    return [{"loss": 2.0 / (1 + i / 100) + rng.gauss(0, 0.01), "acc": rng.random()} for i in range(n)]


def _publish(side: StreamHubSide, sz: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """The publish figure's batches: wall µs per ``log()`` (what the loop
    lost, other threads' GIL and CPU included), and the calling thread's own
    CPU µs per call."""
    _publish_batches(side, 1, sz["publish_batch"])  # warm caches and code paths
    wall, cpu = [], []
    for _ in range(sz["publish_batches"]):
        t0 = time.thread_time()
        wall += _publish_batches(side, 1, sz["publish_batch"])
        cpu.append((time.thread_time() - t0) / sz["publish_batch"] * 1e6)
    return wall, cpu


def fig_store(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        publish: dict[str, tuple[list[float], list[float]]] = {}
        # Taking turns, twice: drift in the machine's load hits each alike.
        for name, config in (
            ("none", {"store": False}),
            ("default", {}),
            ("explicit", {"store": str(Path(tmp) / "bench.db")}),
        ) * 2:
            side = StreamHubSide(**config)
            side.start()
            try:
                wall, cpu = _publish(side, sz)
                if name != "none":
                    _drain(side)
            finally:
                side.stop()
            before = publish.get(name, ([], []))
            publish[name] = (before[0] + wall, before[1] + cpu)
        durable = _durable_rate(None, sz["store_seconds"])
    med = {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in publish.items()}
    return {
        "figures": {
            "store_durable_per_s": durable["rate"],
            "store_writer_cpu_us": durable["writer_cpu_us"],
            "store_mb_per_million": durable["mb_per_million"],
            "store_publish_us": med["default"][0],
            "store_publish_us_explicit": med["explicit"][0],
            "store_publish_us_without": med["none"][0],
            "store_publish_cpu_us": med["default"][1],
            "store_publish_cpu_us_explicit": med["explicit"][1],
            "store_publish_cpu_us_without": med["none"][1],
        },
        "details": {
            "publish_batches_us": {name: w for name, (w, _c) in publish.items()},
            "publish_cpu_us": {name: c for name, (_w, c) in publish.items()},
            "durable": durable,
        },
    }


def _drain(side: StreamHubSide, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the store has nothing queued; its status then."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        status = _store_status(side)
        if not status.get("queued") or time.monotonic() > deadline:
            return status
        pause.wait(0.05)


def _durable_rate(db: str | None, seconds: float) -> dict[str, Any]:
    """A thread logs as fast as it can for ``seconds``; how fast the store
    (``db``, or None: the default store) makes events durable (after a
    first quarter to reach a steady state)."""
    if db is not None:
        Path(db).unlink(missing_ok=True)
    side = StreamHubSide(**({} if db is None else {"store": db}))
    side.start()
    path = str(_store_status(side)["path"])
    metrics = _varied_metrics()
    stop = threading.Event()
    logged = [0]

    def produce() -> None:
        log, n, i = side.log, len(metrics), 0
        while not stop.is_set():
            for _ in range(1000):
                log(metrics[i % n], step=i, run="bench")
                i += 1
        logged[0] = i

    try:
        producer = threading.Thread(target=produce, name="bench-producer")
        cpu0 = _writer_cpu_s()
        producer.start()
        stop.wait(seconds / 4)
        t0, w0 = time.perf_counter(), _store_status(side)["written"]
        stop.wait(seconds * 3 / 4)
        t1, w1 = time.perf_counter(), _store_status(side)["written"]
        stop.set()
        producer.join()
        final = _drain(side)
        cpu = _writer_cpu_s() - cpu0
    finally:
        side.stop()
    size = Path(path).stat().st_size  # the WAL is checkpointed into the file at close
    written = max(1, final["written"])
    return {
        "rate": (w1 - w0) / (t1 - t0),
        "logged": logged[0],
        "written": final["written"],
        "dropped": final["dropped"],
        "writer_cpu_s": cpu,
        "writer_cpu_us": cpu / written * 1e6,
        "bytes": size,
        "mb_per_million": size / written,  # bytes per event = MB per million events
    }


# -- training at 10 000 events/s ---------------------------------------------------------------------


def fig_store_slowdown(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    seg, reps = sz["train_segment_s"], sz["store_train_segments"]
    work_n = calibrate_work(1.0 / sz["store_train_rate"])
    with tempfile.TemporaryDirectory() as tmp:

        def served(config: dict[str, Any]) -> tuple[float, float]:
            side = StreamHubSide(**config)
            side.start()
            try:
                return _train_segment(seg, work_n, side.log)
            finally:
                side.stop()

        _train_segment(seg / 2, work_n, None)  # warm-up
        alone = [_train_segment(seg, work_n, None)]
        plain: list[tuple[float, float]] = []
        default: list[tuple[float, float]] = []
        explicit: list[tuple[float, float]] = []
        for _ in range(reps):
            plain.append(served({"store": False}))
            alone.append(_train_segment(seg, work_n, None))
            default.append(served({}))
            alone.append(_train_segment(seg, work_n, None))
            explicit.append(served({"store": str(Path(tmp) / "train.db")}))
            alone.append(_train_segment(seg, work_n, None))

    def paired(segments: list[tuple[float, float]], offset: int, what: int) -> list[float]:
        """Each segment against the mean of the segments without a server
        around it: steps/s lost (``what`` 0), or CPU per step added (1)."""
        out = []
        for i, segment in enumerate(segments):
            ref = (alone[3 * i + offset][what] + alone[3 * i + offset + 1][what]) / 2
            out.append(
                (1.0 - segment[what] / ref) * 100.0 if what == 0 else (segment[what] / ref - 1.0) * 100.0
            )
        return out

    slowdown = {
        "none": paired(plain, 0, 0),
        "default": paired(default, 1, 0),
        "explicit": paired(explicit, 2, 0),
    }
    cpu = {"none": paired(plain, 0, 1), "default": paired(default, 1, 1), "explicit": paired(explicit, 2, 1)}
    return {
        "figures": {
            "store_train_slowdown_pct": statistics.median(slowdown["default"]),
            "store_train_slowdown_pct_explicit": statistics.median(slowdown["explicit"]),
            "store_train_slowdown_pct_without": statistics.median(slowdown["none"]),
            "store_train_cpu_overhead_pct": statistics.median(cpu["default"]),
            "store_train_cpu_overhead_pct_explicit": statistics.median(cpu["explicit"]),
            "store_train_cpu_overhead_pct_without": statistics.median(cpu["none"]),
        },
        "details": {
            "paired_slowdown_pct": slowdown,
            "paired_cpu_overhead_pct": cpu,
            "spread": {name: _spread(values) for name, values in slowdown.items()},
            "events_per_s": [s[0] for s in default],
            "work_n": work_n,
            "steps_per_s_alone": [a[0] for a in alone],
        },
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "max": max(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


STORE_GROUPS: dict[str, Callable[[str, Mapping[str, Any]], dict[str, Any]]] = {
    "store": fig_store,
    "store_slowdown": fig_store_slowdown,
}
