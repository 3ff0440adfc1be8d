"""Telemetry about the server itself, in the Prometheus text format: clients,
event counters, history fill, curves, restarts and the publish-to-write
latency histogram (not the training metrics: those are the hub's events).

Each server has its own registry, so several servers (or tests) in one
process never collide in prometheus-client's global registry.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .core.hub import Hub

__all__ = ["LatencyHistogram", "MetricsExporter", "Observed"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LatencyHistogram:
    """Cumulative histogram of seconds, updated on the loop thread only."""

    __slots__ = ("counts", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += 1
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(LATENCY_BUCKETS, self.counts):
            running += count
            out.append((repr(bound), float(running)))
        out.append(("+Inf", float(self.total)))
        return out


class Observed(Protocol):
    """What the exporter reads of a server."""

    hub: Hub
    latency: LatencyHistogram
    restarts: int

    @property
    def running(self) -> bool: ...

    def client_counts(self) -> dict[str, int]: ...

    def store_status(self) -> dict[str, Any] | None: ...


class _ServerCollector(Collector):
    def __init__(self, server: Observed) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        hub = server.hub
        counts = server.client_counts()
        clients = GaugeMetricFamily("stream_hub_clients", "Connected stream clients", labels=["transport"])
        for transport in ("sse", "ws"):
            clients.add_metric([transport], counts[transport])
        yield clients
        yield CounterMetricFamily(
            "stream_hub_clients_evicted",
            "Clients closed because they stopped reading (send_timeout, client_buffer_bytes)",
            value=counts["evicted"],
        )
        events = hub.events_counts()
        for name, text in (
            ("published", "Events committed to history"),
            ("delivered", "Event frames written to clients"),
            ("dropped", "Events skipped by subscribers that fell behind history, or shed before commit"),
            ("rejected", "Events that could not be encoded or ingested"),
        ):
            value = events[name]
            yield CounterMetricFamily(f"stream_hub_events_{name}", text, value=value)
        yield GaugeMetricFamily("stream_hub_history_events", "Events kept in history", value=hub.size)
        yield GaugeMetricFamily("stream_hub_history_capacity", "History capacity", value=hub.capacity)
        yield GaugeMetricFamily(
            "stream_hub_history_bytes", "Bytes of events kept in history", value=hub.ring.bytes
        )
        yield GaugeMetricFamily("stream_hub_series", "Metric curves kept", value=hub.runs.series_count)
        yield CounterMetricFamily(
            "stream_hub_series_points_dropped",
            "Metric values not kept in curves because of max_series",
            value=hub.runs.points_dropped,
        )
        yield GaugeMetricFamily("stream_hub_last_seq", "Seq of the newest event", value=hub.head)
        yield GaugeMetricFamily("stream_hub_running", "1 while serving", value=1 if server.running else 0)
        yield CounterMetricFamily("stream_hub_restarts", "Restarts of the server", value=server.restarts)
        store = server.store_status()
        if store is not None:
            yield from _store_metrics(store)
        h = server.latency
        yield HistogramMetricFamily(
            "stream_hub_publish_to_write_seconds",
            "Time from publish to the write of the event to a client",
            buckets=h.buckets(),
            sum_value=h.sum,
        )


def _store_metrics(store: dict[str, Any]) -> Iterator[Metric]:
    """The durable store: what it wrote, what waits, what it could not write."""
    for name, key, text in (
        ("stream_hub_store_events_written", "written", "Events written to the store"),
        (
            "stream_hub_store_events_dropped",
            "dropped",
            "Events the store could not take (kept in memory only)",
        ),
        ("stream_hub_store_write_errors", "errors", "Store transactions that failed (retried)"),
        ("stream_hub_store_events_deleted", "deleted", "Events removed from the store by retention"),
    ):
        yield CounterMetricFamily(name, text, value=store.get(key, 0))
    for name, key, text in (
        ("stream_hub_store_queued_events", "queued", "Events waiting to be written to the store"),
        ("stream_hub_store_write_lag_seconds", "lag_s", "How long the oldest waiting event has waited"),
        ("stream_hub_store_events", "events", "Events in the store"),
        ("stream_hub_store_bytes", "bytes", "Size of the store file and its WAL"),
    ):
        yield GaugeMetricFamily(name, text, value=store.get(key, 0))


class MetricsExporter:
    """Renders one server's metrics in the Prometheus text format."""

    def __init__(self, server: Observed) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServerCollector(server))

    def render(self) -> bytes:
        return generate_latest(self.registry)
