"""Prometheus text format for ``/metrics``: telemetry about the server itself
(clients, event counters, history fill, curves, restarts, the
publish-to-write latency histogram) and the training gauges — each run's
latest metric values, last step and last update, so alerts can watch
training (loss is NaN, no update for five minutes).

The training series are capped (``max_prometheus_series``): the newest runs
are exported first, and series left out are counted once each in
``stream_hub_metric_series_dropped_total``.

Each server has its own registry, so several servers (or tests) in one
process never collide in prometheus-client's global registry.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .events import ALERT_LEVELS

if TYPE_CHECKING:
    from .core.hub import Hub
    from .core.run_index import RunSummary

__all__ = ["LatencyHistogram", "MetricsExporter", "Observed", "TrainingGauges"]

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

    def backend_status(self) -> dict[str, Any] | None: ...

    def store_status(self) -> dict[str, Any] | None: ...

    def webhook_status(self) -> dict[str, int] | None: ...


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
        yield GaugeMetricFamily(
            "stream_hub_history_media_bytes",
            "Bytes of histogram and image events kept in history (their own budget: history_media_bytes)",
            value=hub.ring.media_bytes,
        )
        yield CounterMetricFamily(
            "stream_hub_history_media_dropped",
            "Histogram and image events that left history early for history_media_bytes (a gap each)",
            value=hub.ring.media_dropped,
        )
        yield GaugeMetricFamily("stream_hub_series", "Metric curves kept", value=hub.runs.series_count)
        yield CounterMetricFamily(
            "stream_hub_series_points_dropped",
            "Metric values not kept in curves because of max_series",
            value=hub.runs.points_dropped,
        )
        yield GaugeMetricFamily(
            "stream_hub_runs", "Runs whose summaries and curves are kept", value=len(hub.runs.runs)
        )
        yield CounterMetricFamily(
            "stream_hub_runs_evicted",
            "Runs forgotten to make room for new ones (max_runs; the oldest finished first)",
            value=hub.runs.runs_evicted,
        )
        yield from _alert_metrics(hub.watch.counts, server.webhook_status())
        yield GaugeMetricFamily("stream_hub_last_seq", "Seq of the newest event", value=hub.head)
        yield GaugeMetricFamily("stream_hub_running", "1 while serving", value=1 if server.running else 0)
        yield CounterMetricFamily("stream_hub_restarts", "Restarts of the server", value=server.restarts)
        yield from _backend_metrics(server.backend_status())
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


def _alert_metrics(counts: dict[tuple[str, str], int], webhook: dict[str, int] | None) -> Iterator[Metric]:
    """Alerts committed by level and source (every pair, 0 until one comes); the webhook's posts."""
    alerts = CounterMetricFamily(
        "stream_hub_alerts", "Alert events committed, the hub's and users'", labels=["level", "source"]
    )
    pairs = {(level, source): 0 for level in ALERT_LEVELS for source in ("hub", "user")}
    pairs.update(counts)
    for (level, source), value in sorted(pairs.items()):
        alerts.add_metric([level, source], value)
    yield alerts
    if webhook is None:
        return
    for name, text in (
        ("sent", "Alerts posted to the alert webhook"),
        ("failed", "Alerts whose post to the alert webhook failed (not retried)"),
        ("dropped", "Alerts left out because the webhook's queue was full"),
    ):
        yield CounterMetricFamily(f"stream_hub_alert_webhook_{name}", text, value=webhook[name])


def _backend_metrics(backend: dict[str, Any] | None) -> Iterator[Metric]:
    """The Redis backend's side (nothing without one)."""
    if backend is None:
        return
    yield GaugeMetricFamily(
        "stream_hub_backend_up", "1 while Redis answers (the replica's reads)", value=backend["state"] == "up"
    )
    publisher = backend["publisher"]
    yield CounterMetricFamily(
        "stream_hub_backend_sent", "Events Redis took from this process", value=publisher["sent"]
    )
    yield CounterMetricFamily(
        "stream_hub_backend_dropped",
        "Events dropped while Redis did not answer (the publisher's buffer was full)",
        value=publisher["dropped"],
    )
    yield GaugeMetricFamily(
        "stream_hub_backend_queued", "Events waiting to be sent to Redis", value=publisher["queued"]
    )
    replica = backend["replica"]
    if replica is not None:
        yield GaugeMetricFamily(
            "stream_hub_replica_lag", "Stream entries this replica has not stored yet", value=replica["lag"]
        )
        yield CounterMetricFamily(
            "stream_hub_replica_rejected",
            "Stream entries in the hub's numbering that were not events (served as one-event gaps)",
            value=replica["rejected"],
        )
        yield CounterMetricFamily(
            "stream_hub_replica_foreign",
            "Stream entries the hubs did not number (written by someone else), left out",
            value=replica["foreign"],
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


class TrainingGauges(Collector):
    """The training gauges, read from the hub's run summaries (on the loop
    thread, which is the only one that writes them while serving).

    - ``stream_hub_metric{run, metric, rank}``: the latest value of each metric
      (NaN and ±inf as Prometheus writes them: ``NaN``, ``+Inf``, ``-Inf``);
      ``rank`` is empty for events without one;
    - ``stream_hub_run_last_step{run, rank}``;
    - ``stream_hub_run_last_update_seconds{run}``: Unix time of the run's last
      metric event (of its last event, before any metric);
    - ``stream_hub_run_ended{run}``: 1 once every rank of the run has ended
      (``run_end``), so a "no update" alert can leave finished runs alone.

    At most ``max_series`` of these series are exported, the newest runs
    first; each series ever left out is counted once in
    ``stream_hub_metric_series_dropped_total``.
    """

    def __init__(self, hub: Callable[[], Hub], max_series: int) -> None:
        self.hub = hub
        self.max_series = max_series
        self.dropped: set[tuple[str, ...]] = set()  # bounded by the hub's own curve and run limits

    def collect(self) -> Iterator[Metric]:
        value = GaugeMetricFamily(
            "stream_hub_metric", "Latest value of a training metric", labels=["run", "metric", "rank"]
        )
        step = GaugeMetricFamily("stream_hub_run_last_step", "Last step logged", labels=["run", "rank"])
        updated = GaugeMetricFamily(
            "stream_hub_run_last_update_seconds", "Unix time of the run's last metric event", labels=["run"]
        )
        ended = GaugeMetricFamily(
            "stream_hub_run_ended", "1 once every rank of the run has ended", labels=["run"]
        )
        budget = self.max_series
        runs = sorted(self.hub().runs.runs.values(), key=lambda s: s.last_ts or 0.0, reverse=True)
        for summary in runs:
            for kind, labels, number in _run_series(summary):
                if budget <= 0:
                    self.dropped.add((kind, *labels))
                    continue
                budget -= 1
                family = {"metric": value, "step": step, "updated": updated, "ended": ended}[kind]
                family.add_metric(list(labels), number)
        yield value
        yield step
        yield updated
        yield ended
        yield CounterMetricFamily(
            "stream_hub_metric_series_dropped",
            "Training series left out of /metrics by max_prometheus_series (each counted once); "
            "raise STREAM_HUB_MAX_PROMETHEUS_SERIES to export them",
            value=len(self.dropped),
        )


def _run_series(summary: RunSummary) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """One run's series, most important first: (family, label values, value)."""
    run = summary.run
    tracks = [track for track in summary.tracks.values() if track.last_ts is not None]
    last = max((track.last_ts or 0.0 for track in tracks), default=summary.last_ts)
    if last is not None:
        yield "updated", (run,), last
    yield "ended", (run,), 1.0 if summary.ended is not None else 0.0
    for rank, track in sorted(summary.tracks.items(), key=lambda item: -1 if item[0] is None else item[0]):
        label = "" if rank is None else str(rank)
        if track.last_step is not None:
            yield "step", (run, label), float(track.last_step)
        for name, number in sorted(track.latest.items()):
            yield "metric", (run, name, label), float(number)


class MetricsExporter:
    """Renders one server's metrics in the Prometheus text format.

    ``max_training_series`` caps the training gauges (:class:`TrainingGauges`).
    """

    def __init__(self, server: Observed, max_training_series: int = 1000) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServerCollector(server))
        # The hub is looked up at each scrape: a hand-over may replace its content.
        self.training = TrainingGauges(lambda: server.hub, max_training_series)
        self.registry.register(self.training)

    def render(self) -> bytes:
        return generate_latest(self.registry)
