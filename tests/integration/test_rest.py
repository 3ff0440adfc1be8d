"""The REST face against a real server on port 0 and a real httpx client."""

from __future__ import annotations

import csv
import io
import json
import math
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_hub import TrainingStreamServer, get_stream_server, get_stream_server_manager

from ..clients import STATUS_KEYS, STORE_STATUS_KEYS, json_body
from ..conftest import committed, fill, free_config, wait_for

# -- helpers ---------------------------------------------------------------------------------


def get(server: TrainingStreamServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.urls['rest']}{path}", timeout=10, **kwargs)


def post(server: TrainingStreamServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.urls['rest']}{path}", timeout=10, **kwargs)


def error_message(response: httpx.Response) -> str:
    """The message of a 4xx: ours ({"error": ...}) or FastAPI's validation detail."""
    body = json_body(response)
    if "error" in body:
        return str(body["error"])
    detail = body["detail"]
    return "; ".join(d["msg"] for d in detail) if isinstance(detail, list) else str(detail)


def history(server: TrainingStreamServer, **params: Any) -> dict[str, Any]:
    response = get(server, "/api/history", params=params)
    assert response.status_code == 200, response.text
    return json_body(response)


# -- health, status ---------------------------------------------------------------------------


def test_health(server):
    response = get(server, "/health")
    assert response.status_code == 200
    assert json_body(response)["status"] == "ok"


def test_status_has_exactly_the_contract_keys(server):
    seq = server.log({"x": 1})
    committed(server, seq)
    response = get(server, "/api/status")
    assert response.status_code == 200
    status = json_body(response)
    assert set(status) == STATUS_KEYS | {"store", "drops"}  # contract v3: persistent by default
    assert set(status["store"]) == STORE_STATUS_KEYS
    assert status["drops"] == dict.fromkeys(
        ("subscribers", "hub", "forwarder", "store", "curve", "sampled"), 0
    )
    assert set(status["history"]) == {"size", "capacity"}
    assert set(status["clients"]) == {"sse", "ws", "evicted"}  # contract v2: evicted
    assert set(status["events"]) == {"published", "delivered", "dropped", "rejected"}
    assert set(status["ports"]) == {"sse", "ws", "rest"}
    assert set(status["urls"]) == {"sse", "ws", "rest"}
    assert status["running"] is True
    assert status["loop_thread_alive"] is True
    assert status["ports"] == server.ports
    assert status["urls"]["rest"] == server.urls["rest"]
    assert status["last_seq"] == seq
    assert status["history"] == {"size": seq, "capacity": server.config.history_size}
    assert status["events"]["published"] == seq
    assert status["restarts"] == 0
    assert status["ref_count"] == 0  # a standalone server, not the managed one
    assert status["uptime_s"] >= 0
    assert isinstance(status["pid"], int) and isinstance(status["epoch"], str)


# -- runs and latest values --------------------------------------------------------------------


def _runs_fixture(server: TrainingStreamServer) -> int:
    for step in range(5):
        server.log({"loss": 1.0 / (step + 1), "acc": step / 10}, step=step, run="a")
    server.publish("log", {"text": "hi"}, run="a")
    server.log({"x": 7}, step=10, run="b")
    last = server.log({"x": 8}, step=11, run="b")
    committed(server, last)
    return last


def test_runs_list_last_step_metric_names_and_counts(server):
    last = _runs_fixture(server)
    body = json_body(get(server, "/api/runs"))
    assert body["last_seq"] == last
    runs = {r["run"]: r for r in body["runs"]}
    assert set(runs) == {"a", "b"}
    assert runs["a"]["last_step"] == 4
    assert sorted(runs["a"]["metrics"]) == ["acc", "loss"]
    assert runs["a"]["events"] == 6
    assert runs["a"]["metric_events"] == 5
    assert runs["b"]["last_step"] == 11
    assert runs["b"]["metrics"] == ["x"]
    assert runs["b"]["events"] == 2
    assert runs["b"]["last_seq"] == last


def test_latest_metrics_all_runs(server):
    _runs_fixture(server)
    body = json_body(get(server, "/api/metrics/latest"))
    assert set(body["runs"]) == {"a", "b"}
    assert body["runs"]["a"]["metrics"] == {"loss": 0.2, "acc": 0.4}
    assert body["runs"]["a"]["step"] == 4
    assert body["runs"]["b"]["metrics"] == {"x": 8}


def test_latest_metrics_one_run(server):
    _runs_fixture(server)
    body = json_body(get(server, "/api/metrics/latest", params={"run": "b"}))
    assert body["run"] == "b"
    assert body["step"] == 11
    assert body["metrics"] == {"x": 8}


def test_latest_metrics_unknown_run_is_404(server):
    _runs_fixture(server)
    response = get(server, "/api/metrics/latest", params={"run": "nope"})
    assert response.status_code == 404
    assert "nope" in error_message(response)


def test_latest_non_finite_values_are_valid_json(server):
    seq = server.log({"nan": math.nan, "inf": math.inf, "ninf": -math.inf}, step=1, run="n")
    committed(server, seq)
    body = json_body(get(server, "/api/metrics/latest", params={"run": "n"}))
    assert body["metrics"] == {"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity"}


# -- history -----------------------------------------------------------------------------------


def test_history_default_is_everything_in_order(server):
    seqs = fill(server, 10)
    body = history(server)
    assert [e["seq"] for e in body["events"]] == list(range(1, seqs[-1] + 1))
    assert body["events"][0]["type"] == "status"
    assert body["epoch"] == server.status()["epoch"]
    assert body["last_seq"] == seqs[-1]
    assert body["more"] is False


def test_history_since_is_exact(server):
    seqs = fill(server, 10)
    body = history(server, since=seqs[3])
    assert [e["seq"] for e in body["events"]] == seqs[4:]
    assert [e["step"] for e in body["events"]] == list(range(4, 10))


def test_history_limit_and_more_paging(server):
    seqs = fill(server, 25)
    page = history(server, since=0, limit=10)
    assert [e["seq"] for e in page["events"]] == list(range(1, 11))
    assert page["more"] is True
    collected = list(page["events"])
    pages = 1
    while page["more"]:
        page = history(server, since=collected[-1]["seq"], limit=10)
        collected += page["events"]
        pages += 1
        assert pages < 10
    assert [e["seq"] for e in collected] == list(range(1, seqs[-1] + 1))
    assert pages == 3


def test_history_filters(server):
    _runs_fixture(server)
    by_run = history(server, run="a")["events"]
    assert {e["run"] for e in by_run if e["type"] != "status"} == {"a"}
    assert len([e for e in by_run if e["run"] == "a"]) == 6
    by_type = history(server, types="log")["events"]
    assert [(e["type"], e["run"]) for e in by_type] == [("log", "a")]
    both = history(server, run="b", types="metric")["events"]
    assert [e["metrics"] for e in both] == [{"x": 7}, {"x": 8}]
    several = history(server, run=["a", "b"], types="metric")["events"]
    assert len(several) == 7


def test_history_gap_when_since_left_history(make_server):
    server = make_server(history_size=10, store=False)  # no archive: what left the ring is a gap
    seqs = fill(server, 30)
    head, oldest = seqs[-1], seqs[-1] - 9
    events = history(server, since=4)["events"]
    gap, rest = events[0], events[1:]
    assert gap["type"] == "gap"
    assert gap["seq"] == oldest - 1
    assert gap["data"]["lost"] == oldest - 1 - 4
    assert [e["seq"] for e in rest] == list(range(oldest, head + 1))
    # since=0 means "everything still kept": no gap.
    assert [e["type"] for e in history(server, since=0)["events"]] == ["metric"] * 10


@pytest.mark.parametrize(
    "params",
    [
        {"since": "-1"},
        {"since": "abc"},
        {"since": "1.5"},
        {"since": "9" * 40},
        {"limit": "0"},
        {"limit": "abc"},
        {"limit": "-5"},
        {"limit": "100000000"},
        {"epoch": "x" * 100},
    ],
    ids=lambda p: "&".join(f"{k}={v[:10]}" for k, v in p.items()),
)
def test_history_bad_params_are_4xx_with_message(server, params):
    response = get(server, "/api/history", params=params)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    message = error_message(response)
    assert message
    name = next(iter(params))
    assert name in response.text


# -- publish ------------------------------------------------------------------------------------


def test_publish_single_event(server):
    before = fill(server, 1)[-1]  # and the server's "started" event is committed
    response = post(
        server, "/api/publish", json={"type": "metric", "run": "ext", "step": 5, "metrics": {"loss": 0.3}}
    )
    assert response.status_code == 200, response.text
    body = json_body(response)
    assert body["seqs"] == [before + 1]
    assert body["last_seq"] == before + 1
    (event,) = history(server, since=before)["events"]
    assert event["seq"] == before + 1
    assert (event["type"], event["run"], event["step"], event["metrics"]) == (
        "metric",
        "ext",
        5,
        {"loss": 0.3},
    )


def test_publish_event_list(server):
    before = fill(server, 1)[-1]  # and the server's "started" event is committed
    events = [
        {"run": "ext", "step": 1, "metrics": {"loss": 0.5}},  # type defaults to metric
        {"type": "log", "run": "ext", "data": {"text": "hello"}},
        {"type": "metric", "run": "ext2", "metrics": {"acc": 1}, "ts": 1700000000.5},
    ]
    response = post(server, "/api/publish", json={"events": events})
    assert response.status_code == 200, response.text
    body = json_body(response)
    assert body["seqs"] == [before + 1, before + 2, before + 3]
    got = history(server, since=before)["events"]
    assert [e["seq"] for e in got] == body["seqs"]
    assert [e["type"] for e in got] == ["metric", "log", "metric"]
    assert got[0]["metrics"] == {"loss": 0.5}
    assert got[1]["data"] == {"text": "hello"}
    assert got[2]["ts"] == 1700000000.5
    runs = {r["run"] for r in json_body(get(server, "/api/runs"))["runs"]}
    assert {"ext", "ext2"} <= runs


def test_publish_non_numeric_metric_is_422_naming_it(server):
    fill(server, 1)
    before = server.status()
    response = post(server, "/api/publish", json={"metrics": {"ok": 1, "loss": "low"}})
    assert response.status_code == 422
    assert "loss" in error_message(response)
    after = server.status()
    assert after["last_seq"] == before["last_seq"]
    assert after["events"]["rejected"] == before["events"]["rejected"] + 1


def test_publish_is_all_or_nothing(server):
    before = fill(server, 1)[-1]  # and the server's "started" event is committed
    response = post(
        server, "/api/publish", json={"events": [{"metrics": {"a": 1}}, {"metrics": {"b": [1, 2]}}]}
    )
    assert response.status_code == 422
    assert "event 1" in error_message(response) and "'b'" in error_message(response)
    assert server.status()["last_seq"] == before
    assert history(server, since=before)["events"] == []


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"metrics": {"x": 1}', b"\xff\xfe"])
def test_publish_invalid_json_is_400(server, body):
    response = post(server, "/api/publish", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "JSON" in error_message(response)


# "status": regression, it was publishable although the contract lists it as
# a server event.
@pytest.mark.parametrize("event_type", ["gap", "shutdown", "error", "status"])
def test_publish_reserved_type_is_422(server, event_type):
    response = post(server, "/api/publish", json={"type": event_type, "data": {}})
    assert response.status_code == 422
    assert "reserved" in error_message(response)


@pytest.mark.parametrize(
    "body",
    [
        {"events": []},
        {"events": "x"},
        [1],
        {"metrics": {"x": 1}, "bogus": 1},
        {"type": "log", "run": 5},
        {"metrics": {"x": 1}, "step": "ten"},
        {"type": "metric"},
        {"metrics": {"x": 1}, "ts": "now"},
        {"type": "no spaces allowed"},
    ],
    ids=[
        "empty-list",
        "events-not-list",
        "item-not-object",
        "unknown-field",
        "run-not-str",
        "step-not-int",
        "metric-without-metrics",
        "ts-not-number",
        "bad-type-name",
    ],
)
def test_publish_bad_event_is_422_with_message(server, body):
    response = post(server, "/api/publish", json=body)
    assert response.status_code == 422, response.text
    assert error_message(response)


def test_a_large_publish_body_is_checked_off_the_loop_with_the_same_answers(server):
    """Bodies of OFF_LOOP_BODY bytes and more are decoded and checked on a
    worker thread: accepted, refused (all or nothing) and counted alike."""
    from stream_hub.transports.publish import OFF_LOOP_BODY

    before = fill(server, 1)[-1]
    events = [{"run": "big", "step": i, "metrics": {"loss": 1.0 / (i + 1)}} for i in range(2000)]
    body = json.dumps({"events": events}).encode()
    assert len(body) >= OFF_LOOP_BODY
    response = post(server, "/api/publish", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert json_body(response)["seqs"] == list(range(before + 1, before + 2001))
    rejected = server.status()["events"]["rejected"]
    events[1999]["metrics"] = {"loss": "low"}
    bad = json.dumps({"events": events}).encode()
    response = post(server, "/api/publish", content=bad, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "event 1999" in error_message(response)
    response = post(server, "/api/publish", content=bad[:-1], headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "JSON" in error_message(response)
    status = server.status()
    assert status["last_seq"] == before + 2000
    assert status["events"]["rejected"] == rejected + 2


def test_publish_body_over_max_body_size_is_413(make_server):
    server = make_server(max_body_size=1024)
    big = json.dumps({"type": "log", "data": {"blob": "x" * 2000}}).encode()
    json_type = {"Content-Type": "application/json"}
    response = post(server, "/api/publish", content=big, headers=json_type)
    assert response.status_code == 413
    assert "max_body_size" in error_message(response)

    # Streamed without a Content-Length: counted as it arrives.
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 256):
            yield big[i : i + 256]

    response = post(server, "/api/publish", content=chunks(), headers=json_type)
    assert response.status_code == 413
    # Just under the limit is fine.
    small = json.dumps({"type": "log", "data": {"blob": "x" * 900}}).encode()
    assert len(small) <= 1024
    assert post(server, "/api/publish", content=small, headers=json_type).status_code == 200


def test_publish_token(make_server):
    server = make_server(publish_token="pub-pub-pub-pub-pub")
    event = {"metrics": {"x": 1}}
    missing = post(server, "/api/publish", json=event)
    assert missing.status_code == 401
    assert "token" in error_message(missing)
    wrong = post(server, "/api/publish", json=event, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = post(server, "/api/publish", json=event, headers={"Authorization": "Bearer pub-pub-pub-pub-pub"})
    assert right.status_code == 200
    # Reading needs no token unless read_token is set.
    assert get(server, "/api/history").status_code == 200


def test_read_token_guards_reads_but_not_health(make_server):
    server = make_server(read_token="r34d-r34d-r34d-r34d")
    assert get(server, "/health").status_code == 200
    for path in ("/api/status", "/api/runs", "/api/history", "/api/metrics/latest", "/metrics"):
        assert get(server, path).status_code == 401, path
        authorized = {"Authorization": "Bearer r34d-r34d-r34d-r34d"}
        assert get(server, path, headers=authorized).status_code == 200, path
        # ?token= is only for EventSource and WebSocket, which cannot set headers
        assert get(server, path, params={"token": "r34d-r34d-r34d-r34d"}).status_code == 401, path


# -- admin restart -------------------------------------------------------------------------------


def test_admin_restart_refused_without_admin_token(server):
    response = post(server, "/api/admin/restart", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    message = error_message(response)
    assert "admin_token" in message and "STREAM_HUB_ADMIN_TOKEN" in message
    assert server.status()["restarts"] == 0


def test_admin_restart_with_token_restarts_managed_server():
    server = get_stream_server(config=free_config(admin_token="s3cret-s3cret-s3cret"))
    ports = server.ports
    seqs = fill(server, 5)
    epoch = server.status()["epoch"]

    assert post(server, "/api/admin/restart").status_code == 401
    wrong = post(server, "/api/admin/restart", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert server.restarts == 0

    response = post(server, "/api/admin/restart", headers={"Authorization": "Bearer s3cret-s3cret-s3cret"})
    assert response.status_code == 202
    assert json_body(response)["restarting"] is True
    wait_for(lambda: server.restarts == 1 and server.running, what="restart finished")

    status = json_body(httpx.get(f"http://127.0.0.1:{ports['rest']}/api/status", timeout=10))
    assert status["restarts"] == 1
    assert status["running"] is True
    assert status["ports"] == ports
    assert status["ref_count"] == 1
    assert status["epoch"] == epoch
    kept = history(server, since=0)["events"]
    kept_seqs = [e["seq"] for e in kept]
    assert set(seqs) <= set(kept_seqs)
    assert [e["type"] for e in kept if e["seq"] > seqs[-1]][:2] == ["shutdown", "status"]


# -- training system ---------------------------------------------------------------------------


class FakeTraining:
    def __init__(
        self, result: Any = None, gate: threading.Event | None = None, error: Exception | None = None
    ) -> None:
        self.result = result
        self.gate = gate
        self.error = error
        self.calls = 0

    def get_status(self) -> Any:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        if self.error is not None:
            raise self.error
        return self.result


def test_training_status_is_returned():
    training = FakeTraining({"epoch": 3, "loss": 0.25, "phase": "train"})
    server = get_stream_server(training_system=training, config=free_config())
    response = get(server, "/api/training")
    assert response.status_code == 200
    assert json_body(response) == {"epoch": 3, "loss": 0.25, "phase": "train"}
    assert training.calls == 1


def test_training_404_without_training_system(server):
    response = get(server, "/api/training")
    assert response.status_code == 404
    assert "get_status" in error_message(response)


def test_training_get_status_that_raises_is_not_500():
    server = get_stream_server(training_system=FakeTraining(error=RuntimeError("boom")), config=free_config())
    response = get(server, "/api/training")
    assert 500 < response.status_code < 600 and response.status_code != 500
    assert "boom" in error_message(response)


def test_training_get_status_that_hangs_is_504_and_loop_stays_free():
    gate = threading.Event()
    try:
        server = get_stream_server(training_system=FakeTraining({"ok": 1}, gate=gate), config=free_config())
        result: list[httpx.Response] = []
        started = time.monotonic()
        caller = threading.Thread(target=lambda: result.append(get(server, "/api/training")))
        caller.start()
        wait_for(lambda: server.training_system.calls == 1, what="get_status called")
        # The loop keeps serving while get_status hangs.
        assert get(server, "/health").status_code == 200
        assert not result, "/health should answer while get_status() still hangs"
        caller.join(15)
        elapsed = time.monotonic() - started
        assert result, "no answer from /api/training"
        response = result[0]
        assert response.status_code == 504
        assert "get_status" in error_message(response)
        assert 1.0 <= elapsed < 10.0, elapsed
    finally:
        gate.set()


def _status_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "stream-hub-get-status"]


def test_training_status_calls_share_one_thread_that_stop_joins():
    training = FakeTraining({"ok": 1})
    threads: set[threading.Thread] = set()
    training.get_status = lambda: threads.add(threading.current_thread()) or {"ok": 1}  # type: ignore[method-assign]
    server = get_stream_server(training_system=training, config=free_config())
    for _ in range(20):
        assert get(server, "/api/training").status_code == 200
    assert len(threads) == 1  # not a thread per request
    (thread,) = threads
    get_stream_server_manager().cleanup()
    assert not thread.is_alive()  # joined when the server stopped


def test_a_hanging_get_status_makes_later_requests_answer_at_once():
    gate = threading.Event()
    try:
        server = get_stream_server(training_system=FakeTraining({"ok": 1}, gate=gate), config=free_config())
        assert get(server, "/api/training").status_code == 504
        busy = get(server, "/api/training")
        assert busy.status_code == 503 and "get_status" in error_message(busy)
        assert len(_status_threads()) == 1
    finally:
        gate.set()
    wait_for(lambda: get(server, "/api/training").status_code == 200, what="get_status free again")


# -- docs, metrics, dashboard -------------------------------------------------------------------


def test_openapi_schema_without_the_cdn_docs(server):
    spec = get(server, "/openapi.json")
    assert spec.status_code == 200
    paths = json_body(spec)["paths"]
    for path in (
        "/health",
        "/api/status",
        "/api/runs",
        "/api/metrics/latest",
        "/api/history",
        "/api/publish",
        "/api/admin/restart",
        "/metrics",
    ):
        assert path in paths, path
    for page in ("/docs", "/redoc"):  # they load Swagger UI and ReDoc from a CDN: not served
        assert get(server, page).status_code == 404


def test_prometheus_metrics(server):
    seq = server.log({"x": 1})
    committed(server, seq)
    response = get(server, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert "stream_hub_events_published" in families
    published = families["stream_hub_events_published"]
    assert published.type == "counter"
    assert published.samples[0].value == server.status()["events"]["published"] == seq
    assert "stream_hub_clients" in families


def test_dashboard_is_html(server):
    response = get(server, "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()


def test_unknown_path_is_404_not_500(server):
    assert get(server, "/api/nope").status_code == 404


def test_parameter_validation_errors_have_the_same_shape_as_ours(server):
    for query in ("limit=0", "limit=abc", "epoch=" + "x" * 80):
        response = get(server, "/api/history?" + query)
        assert response.status_code == 422
        body = response.json()
        assert isinstance(body["error"], str) and body["error"].split(":")[0] in ("limit", "epoch")
        assert isinstance(body["detail"], list)  # FastAPI's list, kept for its clients


def test_training_system_given_by_a_later_reference_is_served():
    server = get_stream_server(config=free_config())
    assert get(server, "/api/training").status_code == 404

    class Trainer:
        def get_status(self):
            return {"epoch": 3}

    assert get_stream_server(training_system=Trainer()) is server
    assert get(server, "/api/training").json() == {"epoch": 3}


# -- what publishers send, and what the server keeps ----------------------------------------------


def test_publish_keeps_a_snapshot_of_the_data_and_refuses_non_json_in_the_caller(server):
    data = {"text": "epoch 3 done", "tags": ["a"]}
    seq = server.publish("log", data, run="r")
    data["text"] = "MUTATED"
    data["tags"].append("b")
    with pytest.raises(TypeError):
        server.publish("log", {"bad": {1, 2}}, run="r")
    committed(server, seq)
    (event,) = history(server, since=seq - 1)["events"]
    assert event["data"] == {"text": "epoch 3 done", "tags": ["a"]}


@pytest.mark.parametrize("ts", [1e300, -1e300, -1.0, 1e11])
def test_publish_ts_outside_unix_time_is_422(server, ts):
    response = post(server, "/api/publish", json={"run": "r", "ts": ts, "metrics": {"x": 1}})
    assert response.status_code == 422 and "ts" in error_message(response)


def test_nested_metrics_are_flattened_with_slashes(server):
    seq = server.log({"train": {"loss": 0.5, "grad": {"norm": 2}}, "lr": 0.1}, step=1, run="nest")
    response = post(
        server, "/api/publish", json={"run": "nest", "step": 2, "metrics": {"val": {"loss": 0.7}}}
    )
    assert response.status_code == 200, response.text
    committed(server, response.json()["last_seq"])
    first, second = history(server, since=seq - 1)["events"]
    assert first["metrics"] == {"train/loss": 0.5, "train/grad/norm": 2, "lr": 0.1}
    assert second["metrics"] == {"val/loss": 0.7}
    with pytest.raises(TypeError):
        server.log({"train": {"loss": "high"}})


def test_series_past_max_series_are_refused_over_rest_and_counted_in_process(make_server):
    server = make_server(max_series=4)
    assert (
        post(server, "/api/publish", json={"run": "a", "metrics": {"m1": 1, "m2": 2, "m3": 3}}).status_code
        == 200
    )
    # The refusal reads the curves, which take a publish when it is committed (on the loop).
    wait_for(lambda: server.hub.runs.series_count == 3, what="the first publish's curves")
    refused = post(server, "/api/publish", json={"run": "b", "metrics": {"m1": 1, "m2": 2}})
    assert refused.status_code == 422 and "max_series" in error_message(refused)
    # Known series still take points.
    assert post(server, "/api/publish", json={"run": "a", "metrics": {"m1": 5}}).status_code == 200
    # In-process, training is never interrupted: the event streams, the curve is not kept.
    seq = server.log({"m4": 4, "m5": 5, "m6": 6}, run="a")
    committed(server, seq)
    assert server.hub.runs.series_count == 4
    assert server.hub.runs.points_dropped == 2
    metrics = get(server, "/metrics").text
    assert "stream_hub_series_points_dropped_total 2.0" in metrics
    (event,) = history(server, since=seq - 1)["events"]
    assert event["metrics"] == {"m4": 4, "m5": 5, "m6": 6}


def test_history_is_bounded_in_bytes_as_well_as_events(make_server):
    server = make_server(history_size=10_000, history_bytes=2 * 1024 * 1024)
    blob = "x" * 50_000
    seqs = [server.publish("blob", {"b": blob}, run="big") for _ in range(200)]  # ~30 MB of frames
    committed(server, seqs[-1])
    body = history(server, since=1, limit=10_000)
    kept = [e["seq"] for e in body["events"] if e["type"] == "blob"]
    assert kept == list(range(kept[0], seqs[-1] + 1)) and len(kept) < 200
    assert server.hub.ring.bytes <= 2 * 1024 * 1024
    gap = body["events"][0]  # what left early is announced
    assert gap["type"] == "gap" and gap["data"]["to"] == kept[0] - 1
    assert server.status()["history"]["size"] == len(kept)


def test_export_gives_every_event_of_a_run_as_jsonl_or_its_metrics_as_csv(server):
    seqs = [server.log({"loss": 1.0 / (i + 1), "acc": i / 10}, step=i, run="exp") for i in range(5)]
    server.log({"other": 1.0}, run="elsewhere")
    note = server.publish("log", {"message": "done"}, run="exp")
    committed(server, note)
    jsonl = get(server, "/api/runs/exp/export", params={"format": "jsonl"})
    assert jsonl.status_code == 200 and jsonl.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [e["seq"] for e in events] == [*seqs, note] and {e["run"] for e in events} == {"exp"}
    table = get(server, "/api/runs/exp/export", params={"format": "csv"})
    assert table.status_code == 200 and 'filename="exp.csv"' in table.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(table.text)))
    assert rows[0] == ["seq", "ts", "step", "rank", "loss", "acc"]
    assert [int(r[0]) for r in rows[1:]] == seqs and [float(r[4]) for r in rows[1:]] == [
        1.0,
        0.5,
        1 / 3,
        0.25,
        0.2,
    ]
    one = list(
        csv.reader(
            io.StringIO(get(server, "/api/runs/exp/export", params={"format": "csv", "metric": "acc"}).text)
        )
    )
    assert one[0] == ["seq", "ts", "step", "rank", "acc"]
    assert get(server, "/api/runs/nope/export").status_code == 404
    assert get(server, "/api/runs/exp/export", params={"format": "xml"}).status_code == 422


# -- a step range of a curve at the ring's resolution ------------------------------------------------


def series_range(server: TrainingStreamServer, run: str, **params: Any) -> dict[str, Any]:
    response = get(server, f"/api/runs/{run}/series", params=params)
    assert response.status_code == 200, response.text
    return json_body(response)


def test_a_step_range_comes_from_the_ring_at_full_resolution(make_server):
    server = make_server(history_size=10_000, series_points=100)
    values = [math.sin(i / 50) + (i % 7) / 10 for i in range(3000)]
    values[1500] = float("nan")
    for i, v in enumerate(values):
        server.log({"loss": v, "acc": i / 3000}, step=i, run="exp")
    seq = server.log({"acc": 1.0}, step=3000, run="exp")  # an event without the metric
    committed(server, seq)
    whole = series_range(server, "exp", metric="loss")
    assert len(whole["steps"]) <= 100 and whole["points_seen"] == 3000

    # Few enough points: every one of them, exactly (read from events not yet encoded).
    exact = series_range(server, "exp", metric="loss", from_step=1490, to_step=1509, max_points=50)
    assert exact["source"] == "ring" and exact["steps"] == list(range(1490, 1510))
    # NaN is null here, as in every curve REST serves.
    assert exact["values"][:10] == values[1490:1500] and exact["values"][10] is None
    assert exact["mins"][10] is None and exact["maxs"][0] == values[1490] and len(exact["ts"]) == 20

    # More: equal-width buckets, each its first step, last value, finite min and max.
    get(server, "/api/status")  # encodes every event: now values are read from their JSON
    coarse = series_range(server, "exp", metric="loss", from_step=1000, to_step=2999, max_points=400)
    assert coarse["source"] == "ring" and len(coarse["steps"]) == 400
    for k, start in enumerate(coarse["steps"]):
        assert start == 1000 + 5 * k
        chunk = [v for v in values[start : start + 5] if math.isfinite(v)]
        assert coarse["mins"][k] == min(chunk) and coarse["maxs"][k] == max(chunk)
        assert coarse["values"][k] == values[start + 4]

    # The series' own buckets are as fine as that: no need for the ring.
    assert series_range(server, "exp", metric="loss", from_step=0, to_step=2999, max_points=150)[
        "source"
    ] == ("series")


def test_a_step_range_the_ring_no_longer_holds_comes_from_the_series(make_server):
    server = make_server(history_size=500, series_points=100)
    for i in range(3001):
        seq = server.log({"loss": float(i)}, step=i, run="exp")
        if i % 250 == 0:  # no batch larger than the ring (the curve would get a sample of it)
            committed(server, seq)
    committed(server, seq)
    recent = series_range(server, "exp", metric="loss", from_step=2800, to_step=2900)
    assert recent["source"] == "ring" and recent["steps"] == list(range(2800, 2901))
    old = series_range(server, "exp", metric="loss", from_step=100, to_step=400)
    assert old["source"] == "series" and old["steps"] and "ts" not in old
    assert all(100 - 32 <= s <= 400 for s in old["steps"])  # the buckets that hold the range
    # The ring moves on: what left it is not served from it any more.
    for i in range(3001, 4001):
        seq = server.log({"loss": float(i)}, step=i, run="exp")
        if i % 250 == 0:
            committed(server, seq)
    committed(server, seq)
    assert series_range(server, "exp", metric="loss", from_step=2800, to_step=2900)["source"] == "series"
    moved = series_range(server, "exp", metric="loss", from_step=3700, to_step=3710)
    assert moved["source"] == "ring" and moved["values"] == [float(i) for i in range(3700, 3711)]


def bucket_of(curve: dict[str, Any], step: int) -> int:
    """The index of the bucket of ``curve`` that holds ``step``."""
    return max(i for i, first in enumerate(curve["steps"]) if first <= step)


def test_a_spike_logged_fast_is_in_its_bucket_at_every_resolution_and_range(make_server):
    # Issue 23.1: a hosting process logging far faster than its loop commits
    # (a ring of 100: every commit overloads it) kept a sample of the events
    # in the whole-run curve, and a spike was missing at every zoom.
    server = make_server(history_size=100, series_points=200)
    spike, dip, n = 40_000, 77_777, 100_000
    for step in range(n):
        loss = 60.0 if step == spike else -5.0 if step == dip else 1.0 + (step % 13) / 100
        seq = server.log({"loss": loss, "lr": 3e-4}, step=step, run="fast")
    committed(server, seq)
    for max_points in (2000, 500, 100, 37, 5):
        whole = series_range(server, "fast", metric="loss", max_points=max_points)
        assert len(whole["steps"]) <= max_points
        assert whole["maxs"][bucket_of(whole, spike)] == 60.0, max_points
        assert whole["mins"][bucket_of(whole, dip)] == -5.0, max_points
    for first, last in ((0, n - 1), (30_000, 50_000), (39_000, 41_000), (39_990, 40_010), (spike, spike)):
        for max_points in (1000, 50, 3):
            part = series_range(
                server, "fast", metric="loss", from_step=first, to_step=last, max_points=max_points
            )
            assert part["source"] == "series"  # the ring holds only the newest 100
            assert part["maxs"][bucket_of(part, spike)] == 60.0, (first, last, max_points)

    described = next(r for r in json_body(get(server, "/api/runs"))["runs"] if r["run"] == "fast")
    assert described["metric_events"] == n  # every event counted, whether the curve got it or not
    assert described["dropped"]["sampled"] > 0  # and the curve says it was given a sample
    status = json_body(get(server, "/api/status"))
    assert status["drops"]["sampled"] >= described["dropped"]["sampled"]


def test_a_step_range_of_a_run_with_ranks_is_per_rank(server):
    events = [
        {"run": "job", "rank": r, "step": s, "metrics": {"loss": r * 100 + s}}
        for s in range(50)
        for r in (0, 1)
    ]
    response = post(server, "/api/publish", json={"events": events})
    assert response.status_code == 200, response.text
    committed(server, response.json()["last_seq"])
    both = series_range(server, "job", metric="loss", from_step=10, to_step=12)
    assert set(both["ranks"]) == {"0", "1"}
    assert both["ranks"]["1"]["steps"] == [10, 11, 12] and both["ranks"]["1"]["values"] == [110, 111, 112]
    one = series_range(server, "job", metric="loss", rank=0, from_step=48)
    assert one["rank"] == 0 and one["values"] == [48, 49]


def test_a_step_range_needs_a_metric_and_an_order(server):
    committed(server, server.log({"loss": 1.0}, step=1, run="exp"))
    assert get(server, "/api/runs/exp/series", params={"from_step": 0}).status_code == 400
    assert (
        get(
            server, "/api/runs/exp/series", params={"metric": "loss", "from_step": 5, "to_step": 1}
        ).status_code
        == 400
    )
    assert get(server, "/api/runs/exp/series", params={"metric": "nope", "from_step": 0}).status_code == 404
    assert get(server, "/api/runs/exp/series", params={"metric": "loss", "from_step": "x"}).status_code == 422


def test_a_long_run_is_read_out_of_the_ring_ahead_of_a_zoom(make_server, monkeypatch, caplog):
    from stream_hub.transports import ranges

    monkeypatch.setattr(ranges, "WARM_POINTS", 1000)
    monkeypatch.setattr(ranges, "WARM_INDEX_SLICE", 700)
    monkeypatch.setattr(ranges, "WARM_VALUE_SLICE", 300)
    server = make_server(history_size=20_000, series_points=50)
    values = [math.cos(i / 30) for i in range(5000)]
    for i, v in enumerate(values):
        server.log({"loss": v, "acc": -v}, step=i, run="long")
    committed(server, server.log({"loss": 0.0, "acc": 0.0}, step=5000, run="long"))
    # The whole curve is 50 buckets of 5000 points: the server starts reading
    # the ring in slices, between other requests; answers stay exact meanwhile.
    assert len(series_range(server, "long", metric="loss")["steps"]) <= 50
    for first in range(0, 5000, 500):
        part = series_range(server, "long", metric="acc", from_step=first, to_step=first + 99)
        assert part["source"] == "ring" and part["values"] == [-v for v in values[first : first + 100]]
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_compact_curves_leave_out_mins_and_maxs_of_single_points(make_server):
    server = make_server(series_points=16)
    for i in range(5):
        server.log({"short": float(i)}, step=i, run="exp")
    for i in range(100):
        seq = server.log({"long": float(i)}, step=i, run="exp")
    committed(server, seq)
    full = series_range(server, "exp")["series"]
    assert set(full["short"]) >= {"mins", "maxs"} and full["short"]["points_seen"] == 5
    compact = series_range(server, "exp", compact="true")["series"]
    assert "mins" not in compact["short"] and compact["short"]["values"] == full["short"]["values"]
    assert compact["long"] == full["long"]  # buckets of several points keep their range


# -- values JSON can carry (issue 22 M6) ----------------------------------------------------------


def test_values_json_cannot_carry_never_reach_history_and_every_face_keeps_serving(server):
    from ..clients import SSEStream, strict_json, ws_open

    first = server.log({"loss": 0.5}, step=1, run="wide")
    # Refused in the caller's thread, naming what is wrong.
    with pytest.raises(ValueError, match="step"):
        server.log({"loss": 0.5}, step=2**63, run="wide")
    with pytest.raises(ValueError, match="'huge'"):
        server.log({"loss": 0.5, "huge": 10**400}, step=2, run="wide")
    with pytest.raises(TypeError, match="64-bit"):
        server.publish("note", {"count": 2**64}, run="wide")
    # ... and over REST, with a 422 naming the field.
    bodies = [
        {"run": "wide", "step": 2**63, "metrics": {"loss": 0.5}},
        {"run": "wide", "step": -(2**63) - 1, "metrics": {"loss": 0.5}},
        {"type": "note", "run": "wide", "step": 2**63, "data": {}},
    ]
    for body in bodies:
        response = post(server, "/api/publish", json=body)
        assert response.status_code == 422, response.text
        assert "step" in error_message(response)
    # 2**64 and beyond arrive as floats (JSON has no wider ints): a float step is refused.
    response = post(
        server,
        "/api/publish",
        content=b'{"run": "wide", "step": 18446744073709551616, "metrics": {"loss": 0.5}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    # An int metric beyond 64 bits that a float holds is sent as a float, both ways.
    wide = server.log({"loss": 0.25, "count": 2**70}, step=2**63 - 1, run="wide")
    response = post(
        server,
        "/api/publish",
        content=b'{"run": "wide", "step": 3, "metrics": {"count": 9223372036854775808}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    last = json_body(response)["last_seq"]
    committed(server, last)

    events = history(server, since=first - 1, types="metric")["events"]
    assert [e["seq"] for e in events] == [first, wide, last]
    assert events[1]["step"] == 2**63 - 1 and events[1]["metrics"] == {"loss": 0.25, "count": float(2**70)}
    assert events[2]["metrics"] == {"count": float(2**63)}
    for path in (
        "/api/status",
        "/api/runs",
        "/api/runs/wide/series?metric=count",
        "/api/runs/wide/export?format=jsonl",
        "/api/runs/wide/export?format=csv",
        "/api/metrics/latest",
        "/metrics",
    ):
        response = get(server, path)
        assert response.status_code == 200, (path, response.text)
    assert server.status()["events"]["rejected"] == len(bodies) + 1
    with SSEStream(server.urls["sse"] + "/events", params={"last_event_id": first - 1}) as stream:
        assert [f.json["seq"] for f in stream.read_until_seq(last) if f.event == "metric"] == [
            first,
            wide,
            last,
        ]
    with ws_open(server, f"?since={first - 1}&types=metric") as conn:
        got = [strict_json(conn.recv(timeout=5))["seq"] for _ in range(3)]
    assert got == [first, wide, last]


# -- max_runs (issue 22 M1) -------------------------------------------------------------------------


def test_the_1001st_run_is_tracked_by_default(server):
    # One 48 KB publish used to fill the fixed cap of 1000 runs for good.
    events = [{"run": f"r{i}", "step": 1, "metrics": {"x": 1.0}} for i in range(1001)]
    response = post(server, "/api/publish", json={"events": events})
    assert response.status_code == 200, response.text
    committed(server, json_body(response)["last_seq"])
    body = json_body(get(server, "/api/runs"))
    assert {f"r{i}" for i in range(1001)} <= {r["run"] for r in body["runs"]}
    assert body["evicted"] == 0
    assert server.config.max_runs == 10_000


def test_past_max_runs_new_runs_are_tracked_and_the_oldest_finished_forgotten(make_server):
    server = make_server(max_runs=3)
    server.log({"x": 1.0}, step=1, run="running")
    server.log({"x": 1.0}, step=1, run="done")
    server.finish("done")
    server.log({"x": 2.0}, step=2, run="running")
    seq = server.log({"x": 1.0}, step=1, run="third")
    committed(server, seq)
    seq = server.log({"loss": 0.5}, step=1, run="fourth")
    committed(server, seq)
    body = json_body(get(server, "/api/runs"))
    assert sorted(r["run"] for r in body["runs"]) == ["fourth", "running", "third"]
    assert body["evicted"] == 1
    series = get(server, "/api/runs/fourth/series", params={"metric": "loss"})
    assert series.status_code == 200 and json_body(series)["values"] == [0.5]
    families = {f.name: f for f in text_string_to_metric_families(get(server, "/metrics").text)}
    assert families["stream_hub_runs_evicted"].samples[0].value == 1
    assert families["stream_hub_runs"].samples[0].value == 3
    latest = {s.labels["run"] for s in families["stream_hub_metric"].samples if s.labels["metric"] == "loss"}
    assert latest == {"fourth"}


@pytest.mark.parametrize("name", ["sweep/lr=3e-4", "with space", "ünïcode-ρ", "a/b/c", "trailing/"])
def test_any_run_name_works_in_every_run_endpoint(make_server, name: str) -> None:
    # Issue #23.3: a name with "/" (a sweep's trial) was listed, then 404 everywhere else.
    server = make_server()
    last = 0
    for step in range(5):
        last = server.log({"loss": 1.0 / (step + 1)}, step=step, run=name)
    committed(server, last)
    rest = server.urls["rest"]
    quoted = urllib.parse.quote(name, safe="")
    assert name in {r["run"] for r in httpx.get(f"{rest}/api/runs", timeout=10).json()["runs"]}
    series = httpx.get(f"{rest}/api/runs/{quoted}/series", params={"metric": "loss"}, timeout=10)
    assert series.status_code == 200, series.text
    assert series.json()["run"] == name and series.json()["points_seen"] == 5
    export = httpx.get(f"{rest}/api/runs/{quoted}/export", params={"format": "csv"}, timeout=10)
    assert export.status_code == 200, export.text
    assert len(export.text.strip().splitlines()) == 6  # header and five steps
    missing = httpx.get(f"{rest}/api/runs/{quoted}x/series", timeout=10)
    assert missing.status_code == 404
