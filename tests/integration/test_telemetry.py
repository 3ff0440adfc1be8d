"""``GET /metrics`` of a real server, parsed with prometheus-client's own parser.

Each figure is checked to move with real traffic: clients connected over real
sockets, events read by a real SSE client, a resume that falls out of a small
history, a restart through the manager.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from stream_hub import (
    TrainingStreamServer,
    get_stream_server,
    get_stream_server_manager,
    release_stream_server,
)

from ..clients import SSEStream, ping, ws_open
from ..conftest import free_config, wait_for

OpenStream = Callable[..., SSEStream]

LATENCY = "stream_hub_publish_to_write_seconds"
COUNTERS = ("published", "delivered", "dropped", "rejected")


# -- scraping ----------------------------------------------------------------------------


def scrape(server: TrainingStreamServer) -> dict[str, Any]:
    """Families by name, parsed from the server's ``/metrics``."""
    response = httpx.get(server.urls["rest"] + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def samples(server: TrainingStreamServer) -> list[Sample]:
    return [s for family in scrape(server).values() for s in family.samples]


def value(server: TrainingStreamServer, name: str, **labels: str) -> float:
    """The one sample called ``name`` (exact sample name) with these labels."""
    found = [s.value for s in samples(server) if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return float(found[0])


def counter(server: TrainingStreamServer, what: str) -> float:
    return value(server, f"stream_hub_events_{what}_total")


def clients(server: TrainingStreamServer) -> dict[str, float]:
    return {s.labels["transport"]: s.value for s in samples(server) if s.name == "stream_hub_clients"}


# -- tests -------------------------------------------------------------------------------


def test_output_parses_and_has_every_family(server: TrainingStreamServer) -> None:
    families = scrape(server)
    kinds = {name: family.type for name, family in families.items()}
    assert kinds["stream_hub_clients"] == "gauge"
    for what in COUNTERS:
        assert kinds[f"stream_hub_events_{what}"] == "counter"
    assert kinds["stream_hub_history_events"] == "gauge"
    assert kinds["stream_hub_history_capacity"] == "gauge"
    assert kinds["stream_hub_restarts"] == "counter"
    assert kinds[LATENCY] == "histogram"
    assert all(family.documentation for family in families.values())
    assert clients(server) == {"sse": 0, "ws": 0}
    assert value(server, "stream_hub_history_capacity") == server.config.history_size
    assert value(server, "stream_hub_restarts_total") == 0
    assert value(server, "stream_hub_running") == 1


def test_clients_per_transport(server: TrainingStreamServer, open_stream: OpenStream) -> None:
    stream = open_stream(server)
    wait_for(lambda: clients(server) == {"sse": 1, "ws": 0}, what="sse=1 in /metrics")
    with ws_open(server) as ws:
        ping(ws)  # answered: the connection is registered
        wait_for(lambda: clients(server) == {"sse": 1, "ws": 1}, what="ws=1 in /metrics")
    wait_for(lambda: clients(server)["ws"] == 0, what="ws back to 0")
    stream.close()
    wait_for(lambda: clients(server) == {"sse": 0, "ws": 0}, what="sse back to 0")


def test_event_counters_move_with_traffic(server: TrainingStreamServer, open_stream: OpenStream) -> None:
    before = {what: counter(server, what) for what in COUNTERS}
    start = server.status()["last_seq"]
    stream = open_stream(server, headers={"Last-Event-ID": str(start)})
    seqs = [server.log({"loss": 1.0 / (i + 1)}, step=i, run="m") for i in range(10)]
    events = [f.json for f in stream.read_until_seq(seqs[-1])]
    assert [e["seq"] for e in events] == seqs
    wait_for(lambda: counter(server, "published") >= before["published"] + 10, what="published")
    wait_for(lambda: counter(server, "delivered") >= before["delivered"] + 10, what="delivered")
    assert counter(server, "rejected") == before["rejected"] == 0

    # Accepted from a source that does not encode first (publish() refuses it
    # in the caller), then rejected by the encoder on the loop thread: the
    # client gets a gap in its place, the counter says why.
    bad = server.hub.submit("log", "m", None, {"bad": {1, 2}})
    gap = stream.next().json
    assert gap["seq"] == bad and gap["type"] == "gap" and gap["data"]["reason"] == "rejected"
    wait_for(lambda: counter(server, "rejected") == 1, what="rejected 1")
    assert counter(server, "dropped") == 0
    assert server.status()["events"]["rejected"] == 1


def alerts(server: TrainingStreamServer) -> dict[tuple[str, str], float]:
    return {
        (s.labels["level"], s.labels["source"]): s.value
        for s in samples(server)
        if s.name == "stream_hub_alerts_total"
    }


def test_alerts_are_counted_by_level_and_source(server: TrainingStreamServer) -> None:
    assert kinds_of(server)["stream_hub_alerts"] == "counter"
    every = {(level, source): 0.0 for level in ("info", "warning", "error") for source in ("hub", "user")}
    assert alerts(server) == every  # each pair present from the start
    server.log({"loss": math.nan}, step=1, run="a")  # the hub's: error
    server.finish("a", "killed")  # the hub's: error
    server.alert("slow", "x", run="a")  # the user's: warning
    published = {"type": "alert", "run": "a", "data": {"title": "t", "text": "x", "level": "info"}}
    assert httpx.post(server.urls["rest"] + "/api/publish", json=published, timeout=10).status_code == 200
    expected = {**every, ("error", "hub"): 2.0, ("warning", "user"): 1.0, ("info", "user"): 1.0}
    wait_for(lambda: alerts(server) == expected, what=f"alerts {expected}")
    assert "stream_hub_alert_webhook_sent_total" not in {s.name for s in samples(server)}  # no webhook


def kinds_of(server: TrainingStreamServer) -> dict[str, str]:
    return {name: family.type for name, family in scrape(server).items()}


def test_rest_ingest_rejections_are_counted(server: TrainingStreamServer) -> None:
    url = server.urls["rest"] + "/api/publish"
    json_type = {"Content-Type": "application/json"}
    assert httpx.post(url, content=b"{not json", timeout=10, headers=json_type).status_code == 400
    bad_metric = {"type": "metric", "run": "r", "metrics": {"loss": "high"}}
    assert httpx.post(url, json=bad_metric, timeout=10).status_code == 422
    wait_for(lambda: counter(server, "rejected") == 2, what="rejected 2")


def test_dropped_and_history_fill_with_a_small_history(open_stream: OpenStream) -> None:
    srv = TrainingStreamServer(free_config(history_size=10, store=False))
    srv.start()
    try:
        assert value(srv, "stream_hub_history_capacity") == 10
        last = [srv.log({"x": i}, step=i, run="small") for i in range(30)][-1]
        wait_for(lambda: value(srv, "stream_hub_last_seq") == last, what="all committed")
        assert value(srv, "stream_hub_history_events") == 10
        assert counter(srv, "published") == last  # seqs start at 1, none lost

        stream = open_stream(srv, headers={"Last-Event-ID": "1"})  # seqs 2..last-10 have left the ring
        gap = stream.next().json
        assert gap["type"] == "gap" and gap["data"]["reason"] == "behind"
        lost = gap["data"]["lost"]
        assert lost == last - 10 - 1
        assert [f.seq for f in stream.read_until_seq(last)] == list(range(last - 9, last + 1))
        wait_for(lambda: counter(srv, "dropped") == lost, what=f"dropped {lost}")
    finally:
        srv.stop()


def test_restarts_after_force_restart_via_the_manager() -> None:
    manager = get_stream_server_manager()
    server = get_stream_server(config=free_config())
    try:
        assert value(server, "stream_hub_restarts_total") == 0
        assert manager.force_restart() is server
        wait_for(lambda: value(server, "stream_hub_restarts_total") == 1, what="restarts 1")
        assert manager.status()["restarts"] == 1
    finally:
        release_stream_server()


def test_publish_to_write_latency_histogram(server: TrainingStreamServer, open_stream: OpenStream) -> None:
    def histogram() -> tuple[list[tuple[float, float]], float, float]:
        found = [s for s in samples(server) if s.name.startswith(LATENCY)]
        buckets = sorted((float(s.labels["le"]), s.value) for s in found if s.name == LATENCY + "_bucket")
        count = next(s.value for s in found if s.name == LATENCY + "_count")
        total = next(s.value for s in found if s.name == LATENCY + "_sum")
        return buckets, count, total

    buckets, count, _ = histogram()
    assert count == 0 and all(n == 0 for _, n in buckets)

    stream = open_stream(server, headers={"Last-Event-ID": str(server.status()["last_seq"])})
    seq = server.log({"loss": 0.5}, step=1, run="lat")
    assert stream.read_until_seq(seq)[-1].seq == seq
    wait_for(lambda: histogram()[1] >= 1, what="a latency observation")
    buckets, count, total = histogram()
    bounds = [le for le, _ in buckets]
    assert bounds == sorted(set(bounds)) and bounds[-1] == math.inf and len(bounds) > 5
    counts = [n for _, n in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert counts[-1] == count >= 1
    assert 0 <= total < 60 * count  # seconds, and not an absolute timestamp


# -- training gauges ------------------------------------------------------------------------


def training(server: TrainingStreamServer, name: str) -> dict[tuple[str, ...], float]:
    """Samples of one training family, keyed by their label values."""
    out = {}
    for s in samples(server):
        if s.name == name:
            out[tuple(s.labels[k] for k in ("run", "metric", "rank") if k in s.labels)] = s.value
    return out


def test_training_gauges_carry_latest_values_steps_and_updates(make_server: Callable[..., Any]) -> None:
    server = make_server()
    before = time.time()
    server.log({"loss": 0.5, "acc": 0.25}, step=1, run="exp1")
    server.log({"loss": math.nan, "grad": math.inf, "low": -math.inf}, step=2, run="exp1")
    server.hub.submit("metric", "dist", 7, {"loss": 0.125}, rank=1)
    last = server.hub.submit("metric", "dist", 9, {"loss": 0.25}, rank=0)
    wait_for(lambda: server.status()["last_seq"] >= last, what="committed")
    text = httpx.get(server.urls["rest"] + "/metrics", timeout=10).text
    assert 'stream_hub_metric{metric="loss",rank="",run="exp1"} NaN' in text
    assert 'stream_hub_metric{metric="grad",rank="",run="exp1"} +Inf' in text
    assert 'stream_hub_metric{metric="low",rank="",run="exp1"} -Inf' in text

    families = scrape(server)
    assert families["stream_hub_metric"].type == "gauge"
    metric = training(server, "stream_hub_metric")
    assert metric[("exp1", "acc", "")] == 0.25 and math.isnan(metric[("exp1", "loss", "")])
    assert metric[("exp1", "grad", "")] == math.inf and metric[("exp1", "low", "")] == -math.inf
    assert metric[("dist", "loss", "0")] == 0.25 and metric[("dist", "loss", "1")] == 0.125
    assert training(server, "stream_hub_run_last_step") == {
        ("exp1", ""): 2,
        ("dist", "0"): 9,
        ("dist", "1"): 7,
    }
    updated = training(server, "stream_hub_run_last_update_seconds")
    assert set(updated) == {("exp1",), ("dist",)}
    assert all(before - 1 <= t <= time.time() + 1 for t in updated.values())
    assert training(server, "stream_hub_run_ended") == {("exp1",): 0, ("dist",): 0}
    assert value(server, "stream_hub_metric_series_dropped_total") == 0

    server.finish("exp1")
    wait_for(lambda: training(server, "stream_hub_run_ended")[("exp1",)] == 1, what="exp1 ended")


def test_training_series_are_capped_newest_runs_first(make_server: Callable[..., Any]) -> None:
    server = make_server(max_prometheus_series=6)
    server.log({"a": 1, "b": 2}, step=1, run="old")  # 5 series: updated, ended, step, a, b
    last = server.log({"c": 3, "d": 4}, step=1, run="new")
    wait_for(lambda: server.status()["last_seq"] >= last, what="committed")
    keys = ("run", "metric", "rank")
    series = {
        (s.name, *(s.labels[k] for k in keys if k in s.labels))
        for s in samples(server)
        if s.labels.get("run")
    }
    assert len(series) == 6
    assert {s for s in series if "new" in s} == {
        ("stream_hub_run_last_update_seconds", "new"),
        ("stream_hub_run_ended", "new"),
        ("stream_hub_run_last_step", "new", ""),
        ("stream_hub_metric", "new", "c", ""),
        ("stream_hub_metric", "new", "d", ""),
    }
    assert ("stream_hub_run_last_update_seconds", "old") in series
    dropped = value(server, "stream_hub_metric_series_dropped_total")
    assert dropped == 4  # old: ended, step, a, b
    assert value(server, "stream_hub_metric_series_dropped_total") == dropped  # counted once each
    help_text = httpx.get(server.urls["rest"] + "/metrics", timeout=10).text
    assert "STREAM_HUB_MAX_PROMETHEUS_SERIES" in help_text
