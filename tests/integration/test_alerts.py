"""The hub watches for you (issue 23, item 6), end to end on a real server:
its own alerts (a NaN, a failed run, a silent publisher) and the user's
(``server.alert``, ``POST /api/publish``) on SSE, WebSocket and REST, and
the alert webhook against a real local HTTP server. The rules themselves are
tested in tests/unit/test_watch.py."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from stream_hub import TrainingStreamServer
from stream_hub.core.watch import Rules

from ..clients import SSEStream, events_until, send_op, until_pong, ws_open
from ..conftest import committed, free_config, wait_for
from ..unit.test_webhook import Receiver

MakeServer = Callable[..., TrainingStreamServer]
OpenStream = Callable[..., SSEStream]


def next_alert(stream: SSEStream) -> dict[str, Any]:
    while True:
        frame = stream.next()
        assert frame is not None, "the stream ended before an alert"
        if frame.event == "alert":
            return frame.json


def history_alerts(server: TrainingStreamServer) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{server.urls['rest']}/api/history", params={"types": "alert", "since": 0}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["events"])


def run_info(server: TrainingStreamServer, run: str) -> dict[str, Any]:
    runs = httpx.get(f"{server.urls['rest']}/api/runs", timeout=10).json()["runs"]
    return dict(next(r for r in runs if r["run"] == run))


# -- the hub's own -------------------------------------------------------------------------------------


def test_a_nan_metric_is_alerted_by_the_hub_on_every_transport(
    server: TrainingStreamServer, open_stream: OpenStream
) -> None:
    stream = open_stream(server, params={"types": "alert"})
    with ws_open(server) as conn:
        send_op(conn, "subscribe", types=["alert"])
        until_pong(conn)
        for step in range(5):
            server.log({"loss": 1.0 / (step + 1)}, step=step, run="exp")
        seq = server.log({"loss": math.nan, "acc": 0.5}, step=5, run="exp")
        for step in range(6, 9):
            server.log({"loss": math.nan}, step=step, run="exp")  # still NaN: no new alert
        last = server.log({"loss": 0.1}, step=9, run="exp")
        committed(server, last)
        alert = next_alert(stream)
        [from_ws] = [e for e in events_until(conn, alert["seq"]) if e["type"] == "alert"]
    assert alert == from_ws
    # Committed after the batch that held the NaN (the events logged with it may share it).
    assert seq < alert["seq"] <= last + 1 and alert["run"] == "exp" and alert["step"] == 5
    assert alert["data"] == {
        "level": "error",
        "title": "loss is NaN",
        "text": "loss of run 'exp' is NaN at step 5; not said again until it is finite",
        "metric": "loss",
        "source": "hub",
    }
    assert history_alerts(server) == [alert]
    assert run_info(server, "exp")["alerts"] == {"count": 1, "level": "error", "title": "loss is NaN"}


def test_a_failed_run_is_alerted(server: TrainingStreamServer, open_stream: OpenStream) -> None:
    stream = open_stream(server, params={"types": "alert", "run": "exp"})
    server.log({"loss": 0.5}, step=41, run="exp")
    server.finish("exp", "failed")
    alert = next_alert(stream)
    assert alert["data"]["title"] == "run failed" and alert["data"]["level"] == "error"
    assert alert["step"] == 41 and alert["data"]["source"] == "hub"


@pytest.fixture
def quick_silence() -> Iterator[TrainingStreamServer]:
    """A started server whose silence rule fires after half a second (60 s and
    10x the usual interval are more than a test can wait; checks every 1/8 s)."""
    server = TrainingStreamServer(free_config())
    server.hub.watch.rules = Rules(silence_floor=0.5, silence_factor=1.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_silent_publisher_is_alerted_while_its_process_lives(
    quick_silence: TrainingStreamServer, open_stream: OpenStream
) -> None:
    server = quick_silence
    stream = open_stream(server, params={"types": "alert"})
    for step in range(3):
        server.log({"loss": 1.0}, step=step, run="quiet")  # this process lives on, and logs no more
    server.log({"loss": 1.0}, step=0, run="done")
    server.finish("done")  # an ended run is not silent
    alert = next_alert(stream)
    assert alert["run"] == "quiet" and alert["data"]["title"] == "run silent"
    assert alert["data"]["level"] == "warning" and "while its process lives" in alert["data"]["text"]
    server.log({"loss": 1.0}, step=3, run="quiet")  # logging again: a later silence is a new one
    again = next_alert(stream)
    assert again["run"] == "quiet" and again["seq"] > alert["seq"]
    assert [a["run"] for a in history_alerts(server)] == ["quiet", "quiet"]


# -- the user's --------------------------------------------------------------------------------------------


def test_server_alert_publishes_a_users_alert(server: TrainingStreamServer, open_stream: OpenStream) -> None:
    stream = open_stream(server, params={"types": "alert"})
    seq = server.alert("throughput low", "200 samples/s, 1200 expected", run="exp", metric="throughput")
    alert = next_alert(stream)
    assert alert["seq"] == seq and alert["run"] == "exp"
    assert alert["data"] == {
        "level": "warning",
        "title": "throughput low",
        "text": "200 samples/s, 1200 expected",
        "metric": "throughput",
        "source": "user",
    }
    server.alert("checkpoint saved", "", level="info")
    assert next_alert(stream)["run"] == server.hub.intake.default_run


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"level": "critical"}, ValueError, "info, warning, error"),
        ({"title": ""}, ValueError, "title"),
        ({"title": "x" * 201}, ValueError, "200 characters"),
        ({"text": None}, TypeError, "text must be a str"),
        ({"metric": 3}, TypeError, "metric"),
        ({"run": ""}, TypeError, "run must be"),
    ],
)
def test_a_bad_alert_raises_in_the_caller(
    server: TrainingStreamServer, kwargs: dict[str, Any], error: type, words: str
) -> None:
    args: dict[str, Any] = {"title": "t", "text": "x", **kwargs}
    head = server.hub.last_seq
    with pytest.raises(error, match=words):
        server.alert(**args)
    assert server.hub.last_seq == head


def test_a_published_alert_is_the_users_never_the_hubs(
    server: TrainingStreamServer, open_stream: OpenStream
) -> None:
    url = f"{server.urls['rest']}/api/publish"
    stream = open_stream(server, params={"types": "alert"})
    claimed = {"type": "alert", "run": "r", "data": {"title": "t", "text": "x", "source": "hub"}}
    refused = httpx.post(url, json=claimed, timeout=10)
    assert refused.status_code == 422 and 'source is "user"' in refused.json()["error"]
    for bad in ({"title": "t", "text": "x", "level": "fatal"}, {"title": "t"}, "boom"):
        answer = httpx.post(url, json={"type": "alert", "run": "r", "data": bad}, timeout=10)
        assert answer.status_code == 422, (bad, answer.text)
    ok = httpx.post(url, json={"type": "alert", "run": "r", "data": {"title": "t", "text": "x"}}, timeout=10)
    assert ok.status_code == 200, ok.text
    alert = next_alert(stream)
    assert alert["seq"] == ok.json()["last_seq"]
    assert alert["data"] == {"level": "warning", "title": "t", "text": "x", "source": "user"}
    with pytest.raises(TypeError, match='source is "user"'):
        server.publish("alert", {"title": "t", "text": "x", "source": "hub"})


# -- the webhook ---------------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_each_alert_is_posted_to_the_webhook_as_json(make_server: MakeServer, receiver: Receiver) -> None:
    server = make_server(alert_webhook=receiver.url)
    assert server.webhook_status() == {"sent": 0, "failed": 0, "dropped": 0, "queued": 0}
    server.log({"loss": math.inf}, step=3, run="exp")
    server.alert("note", "from the user", level="info", run="exp")
    wait_for(lambda: len(receiver.posts) == 2, what="two posts")
    # In commit order: the hub's alert follows the batch that raised it, which may hold the user's.
    by_source = {alert["data"]["source"]: alert for alert in receiver.alerts()}
    hub_alert, user_alert = by_source["hub"], by_source["user"]
    headers = receiver.posts[0][0]
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"].startswith("stream_hub/")
    assert hub_alert["type"] == "alert" and hub_alert["run"] == "exp" and hub_alert["step"] == 3
    assert hub_alert["data"]["title"] == "loss is +inf" and hub_alert["data"]["source"] == "hub"
    assert hub_alert["text"].startswith("[error] exp: loss is +inf — ")
    assert user_alert["data"]["title"] == "note" and user_alert["step"] is None
    assert [a["seq"] for a in receiver.alerts()] == sorted(a["seq"] for a in receiver.alerts())
    wait_for(lambda: (server.webhook_status() or {}).get("sent") == 2, what="both counted as sent")


def test_a_failing_webhook_is_counted_and_logged_without_its_secret(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(status=500)
    try:
        server = make_server(alert_webhook=receiver.url)
        with caplog.at_level(logging.WARNING, logger="stream_hub.webhook"):
            for i in range(3):
                server.alert(f"a{i}", "x")
            wait_for(lambda: (server.webhook_status() or {}).get("failed") == 3, what="three failures")
        assert len(receiver.posts) == 3  # each tried once, none retried
        warnings = [r.getMessage() for r in caplog.records if r.name == "stream_hub.webhook"]
        assert len(warnings) == 1, warnings  # rate-limited: one per minute
        assert "answered 500" in warnings[0] and "s3cret" not in warnings[0]
        status = server.status()
        assert status["running"]  # the hub serves on, whatever the webhook does
    finally:
        receiver.close()
