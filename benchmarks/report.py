"""The figures' names, units and targets; the table and the JSON document."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FIGURES", "Figure", "machine_info", "render_table", "summarize"]


@dataclass(frozen=True)
class Figure:
    key: str
    label: str  # may hold {placeholders} filled from the sizes
    group: str
    higher_is_better: bool = False
    max_value: float | None = None  # target: stream_hub's value at most this
    min_value: float | None = None  # target: stream_hub's value at least this
    min_ratio: float | None = None  # target: stream_hub at least this many times better

    @property
    def has_target(self) -> bool:
        return self.max_value is not None or self.min_value is not None or self.min_ratio is not None

    def target_text(self) -> str:
        parts = []
        if self.max_value is not None:
            parts.append(f"<= {self.max_value:g}")
        if self.min_value is not None:
            parts.append(f">= {self.min_value:,.0f}")
        if self.min_ratio is not None:
            parts.append(f">= {self.min_ratio:g}x")
        return " and ".join(parts) if parts else "-"


FIGURES: tuple[Figure, ...] = (
    Figure("publish_us", "publish cost, no client (us/event)", "publish", max_value=1.0, min_ratio=8.0),
    Figure("publish_us_1client", "publish cost, 1 SSE client (us/event)", "publish"),
    Figure(
        "fanout_sse_per_s",
        "fan-out, {fanout_clients} SSE clients (deliveries/s)",
        "fanout_sse",
        higher_is_better=True,
        min_ratio=20.0,
    ),
    Figure(
        "fanout_ws_per_s",
        "fan-out, {fanout_clients} WS clients (deliveries/s)",
        "fanout_ws",
        higher_is_better=True,
        min_ratio=20.0,
    ),
    Figure("latency_p50_ms", "latency p50, {latency_rate} ev/s, {latency_clients} SSE (ms)", "latency"),
    Figure(
        "latency_p99_ms",
        "latency p99, {latency_rate} ev/s, {latency_clients} SSE (ms)",
        "latency",
        max_value=5.0,
    ),
    Figure(
        "train_slowdown_pct",
        "training slowdown, {train_clients} SSE watching (%)",
        "slowdown",
        max_value=3.0,
    ),
    Figure("train_cpu_overhead_pct", "training CPU overhead, same runs (%)", "slowdown"),
    Figure("train_watch_p99_ms", "event latency p99 while training (ms)", "slowdown"),
    Figure("joined_publish_us", "publish cost, joined to stream-hub serve (us/event)", "processes"),
    Figure(
        "ingest_4proc_per_s",
        "ingest into one hub from 4 joined processes (events/s)",
        "processes",
        higher_is_better=True,
    ),
    Figure(
        "train_cpu_s_per_m_inproc",
        "training CPU per 1 M deliveries, hub in process, {train_clients} SSE (s)",
        "processes",
    ),
    Figure(
        "train_cpu_s_per_m_serve",
        "training CPU per 1 M deliveries, joined to stream-hub serve, {train_clients} SSE (s)",
        "processes",
    ),
    Figure(
        "train_slowdown_inproc_pct", "training slowdown, hub in process, same runs (%, noisy)", "processes"
    ),
    Figure(
        "train_slowdown_serve_pct", "training slowdown, joined to stream-hub serve (%, noisy)", "processes"
    ),
    Figure("start_ms", "start, 3 ports bound + /health 200 (ms, median)", "lifecycle", max_value=50.0),
    Figure("stop_ms", "stop, ports verified free (ms, median)", "lifecycle", max_value=50.0),
    Figure("restart_ms", "force_restart, serving again (ms, median)", "lifecycle"),
    Figure(
        "redis_ingest_per_s",
        "Redis ingest, {redis_publishers} publisher processes (events/s acked)",
        "redis",
        higher_is_better=True,
        min_value=100_000,
    ),
    Figure("redis_publish_us", "publish cost with a Redis backend (us/event)", "redis"),
    Figure(
        "redis_latency_p50_ms",
        "latency p50 through Redis, {redis_latency_rate} ev/s, 2 replicas (ms)",
        "redis",
    ),
    Figure(
        "redis_latency_p99_ms",
        "latency p99 through Redis, {redis_latency_rate} ev/s, 2 replicas (ms)",
        "redis",
        max_value=10.0,
    ),
    Figure(
        "redis_fanout_per_replica_per_s",
        "fan-out per replica, {redis_clients} SSE each (deliveries/s)",
        "redis",
        higher_is_better=True,
    ),
    Figure(
        "latency_window_worst_p99_ms",
        "latency p99, worst of {latency_windows}x2 {latency_window_s} s windows, fresh and after a burst",
        "latency_windows",
        max_value=5.0,
    ),
    Figure("latency_window_worst_p50_ms", "  the same windows' worst p50 (ms)", "latency_windows"),
    Figure("latency_window_median_p99_ms", "  the same windows' median p99 (ms)", "latency_windows"),
    Figure(
        "rss_kb_per_client",
        "RSS per idle SSE client, {memory_clients} clients (KB)",
        "memory",
        max_value=30.0,
    ),
    # The store: stream_hub with its default store (contract v3: what a user
    # gets), and with an explicit file, against store=False (no baseline).
    Figure(
        "store_durable_per_s",
        "default store: events/s made durable, sustained",
        "store",
        higher_is_better=True,
        min_value=200_000,
    ),
    Figure("store_publish_us", "publish cost, default store, no client (us/event)", "store", max_value=1.0),
    Figure("store_publish_us_explicit", "  the same, an explicit store file (us/event)", "store"),
    Figure("store_publish_us_without", "  the same, store=False (us/event)", "store"),
    Figure("store_publish_cpu_us", "the calling thread's own CPU per log(), default store (us)", "store"),
    Figure("store_publish_cpu_us_explicit", "  the same, an explicit store file (us)", "store"),
    Figure("store_publish_cpu_us_without", "  the same, store=False (us)", "store"),
    Figure("store_writer_cpu_us", "store writer CPU per event (us)", "store"),
    Figure("store_mb_per_million", "default store: size per million metric events (MB)", "store"),
    Figure(
        "store_train_slowdown_pct",
        "training slowdown at {store_train_rate} ev/s, default store (%)",
        "store_slowdown",
        max_value=3.0,
    ),
    Figure(
        "store_train_slowdown_pct_explicit",
        "  the same, an explicit store file (%)",
        "store_slowdown",
        max_value=3.0,
    ),
    Figure("store_train_slowdown_pct_without", "  the same, store=False (%)", "store_slowdown"),
    Figure(
        "store_train_cpu_overhead_pct",
        "training CPU overhead, same runs, default store (%)",
        "store_slowdown",
    ),
    Figure(
        "store_train_cpu_overhead_pct_explicit", "  the same, an explicit store file (%)", "store_slowdown"
    ),
    Figure("store_train_cpu_overhead_pct_without", "  the same, store=False (%)", "store_slowdown"),
    # Issue 24: a CPU-bound training thread, the hub in process, joined over
    # the socket channel, joined over shared memory (the baseline: its hub in
    # process, under each key).
    Figure(
        "shm_spin_p99_ms_shm",
        "latency p99, training thread spinning, {shm_spin_rate} ev/s, joined over shared memory (ms)",
        "shm",
        max_value=10.0,
    ),
    Figure("shm_spin_p50_ms_shm", "  the same, p50 (ms)", "shm"),
    Figure("shm_spin_p99_ms_socket", "  the same, joined over the socket channel: p99 (ms)", "shm"),
    Figure("shm_spin_p50_ms_socket", "  the same, joined over the socket channel: p50 (ms)", "shm"),
    Figure(
        "shm_spin_p99_ms_inproc",
        "  the same, hub in process, {latency_clients} SSE: p99 (ms)",
        "shm",
        max_value=50.0,
    ),
    Figure("shm_spin_p50_ms_inproc", "  the same, hub in process: p50 (ms)", "shm"),
    Figure("shm_log_cpu_us_shm", "training thread's CPU per log(), joined over shared memory (us)", "shm"),
    Figure("shm_log_cpu_us_socket", "  the same, joined over the socket channel (us)", "shm"),
    Figure("shm_log_cpu_us_inproc", "  the same, hub in process (us)", "shm"),
    Figure(
        "shm_log_cpu_vs_inproc",
        "  shared memory / in process (ratio of the two above)",
        "shm",
        max_value=1.5,
    ),
    Figure(
        "shm_process_cpu_us_shm",
        "training process's CPU per event at {shm_train_rate} ev/s, every thread, shared memory (us)",
        "shm",
    ),
    Figure("shm_process_cpu_us_socket", "  the same, joined over the socket channel (us)", "shm"),
    Figure("shm_process_cpu_us_inproc", "  the same, hub in process (us)", "shm"),
    Figure(
        "shm_slowdown_pct_shm",
        "training slowdown at {shm_train_rate} ev/s, joined over shared memory (%, median)",
        "shm",
    ),
    Figure("shm_slowdown_pct_socket", "  the same, joined over the socket channel (%)", "shm"),
    Figure("shm_slowdown_pct_inproc", "  the same, hub in process (%)", "shm"),
    Figure(
        "shm_slowdown_below_socket_pp",
        "  socket's slowdown minus shared memory's (points)",
        "shm",
        higher_is_better=True,
        min_value=0.0,
    ),
)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def summarize(
    results: Mapping[str, Mapping[str, Any]], sizes: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per figure: both values, the ratio (>1 = stream_hub better) and PASS/MISS
    (``not run`` when the figure's group was not run)."""
    out: dict[str, dict[str, Any]] = {}
    for fig in FIGURES:
        values = {
            side: _number(results.get(side, {}).get(fig.group, {}).get("figures", {}).get(fig.key))
            for side in ("stream_hub", "baseline")
        }
        ours, theirs = values["stream_hub"], values["baseline"]
        ratio = None
        if ours is not None and theirs is not None:
            if fig.higher_is_better and theirs > 0:
                ratio = ours / theirs
            elif not fig.higher_is_better and ours > 0:
                ratio = theirs / ours
        verdict = None
        if fig.has_target and fig.group not in results.get("stream_hub", {}):
            verdict = "not run"  # its group was left out (--only): no verdict
        elif fig.has_target:
            ok = ours is not None
            if ok and fig.max_value is not None:
                ok = ours <= fig.max_value  # type: ignore[operator]
            if ok and fig.min_value is not None:
                ok = ours >= fig.min_value  # type: ignore[operator]
            if ok and fig.min_ratio is not None:
                ok = ratio is not None and ratio >= fig.min_ratio
            verdict = "PASS" if ok else "MISS"
        out[fig.key] = {
            "label": fig.label.format(**sizes),
            "stream_hub": ours,
            "baseline": theirs,
            "ratio": ratio,
            "higher_is_better": fig.higher_is_better,
            "target": fig.target_text() if fig.has_target else None,
            "result": verdict,
        }
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table: figure | stream_hub | baseline | ratio | target | result."""
    rows = [("figure", "stream_hub", "baseline", "ratio", "target", "result")]
    for row in summary.values():
        ratio = row["ratio"]
        rows.append(
            (
                row["label"],
                _fmt(row["stream_hub"]),
                _fmt(row["baseline"]),
                "n/a" if ratio is None else f"{ratio:.1f}x",
                row["target"] or "-",
                row["result"] or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        pairs = enumerate(zip(r, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append(
                "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
            )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }
    try:
        info["loadavg_at_end"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info
