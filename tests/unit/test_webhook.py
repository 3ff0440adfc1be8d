"""The alert webhook (stream_hub/webhook.py) against a real HTTP server on
a free port, started here in a thread: what is posted, the bounded queue,
failures counted and logged at most once a minute, never blocking the caller."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stream_hub.webhook import AlertWebhook

from ..conftest import wait_for


class Receiver:
    """A real HTTP server on a free port that records each POST and answers
    ``status``; while ``hold`` is clear, it holds each answer back."""

    def __init__(self, status: int = 204) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.status = status
        self.hold = threading.Event()
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.posts.append((dict(self.headers.items()), body))
                receiver.hold.wait(10)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hooks/s3cret-path"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _headers, body in self.posts]

    def close(self) -> None:
        self.hold.set()
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def alert(i: int) -> dict[str, Any]:
    return {"type": "alert", "seq": i, "data": {"level": "warning", "title": f"t{i}", "text": "x"}}


def test_alerts_are_posted_as_json_in_order_from_a_thread_of_its_own(receiver: Receiver) -> None:
    hook = AlertWebhook(receiver.url)
    assert hook._thread is None  # nothing runs before the first alert
    for i in range(5):
        hook.offer(alert(i))
    assert hook.flush(10)
    assert [a["seq"] for a in receiver.alerts()] == [0, 1, 2, 3, 4]
    assert hook.status() == {"sent": 5, "failed": 0, "dropped": 0, "queued": 0}
    assert hook._thread is not None and hook._thread.name == "stream-hub-alert-webhook"


def test_a_slow_receiver_never_blocks_the_caller_and_the_queue_is_bounded(receiver: Receiver) -> None:
    receiver.hold.clear()
    hook = AlertWebhook(receiver.url, limit=2)
    hook.offer(alert(0))
    wait_for(lambda: len(receiver.posts) == 1, what="the first post under way")
    began = time.monotonic()
    for i in range(1, 5):
        hook.offer(alert(i))  # two wait, two are dropped
    assert time.monotonic() - began < 0.5
    assert hook.status() == {"sent": 0, "failed": 0, "dropped": 2, "queued": 2}
    assert not hook.flush(0.05)
    receiver.hold.set()
    assert hook.flush(10)
    assert [a["seq"] for a in receiver.alerts()] == [0, 1, 2]
    assert hook.status()["sent"] == 3


def test_failures_are_counted_and_logged_once_a_minute_without_the_urls_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = Receiver(status=503)
    try:
        hook = AlertWebhook(refused.url)
        with caplog.at_level(logging.WARNING, logger="stream_hub.webhook"):
            for i in range(3):
                hook.offer(alert(i))
            assert hook.flush(10)
    finally:
        refused.close()
    assert hook.status() == {"sent": 0, "failed": 3, "dropped": 0, "queued": 0}
    [warning] = [r.getMessage() for r in caplog.records if r.name == "stream_hub.webhook"]
    assert "answered 503" in warning and "s3cret" not in warning and "127.0.0.1" in warning


def test_a_receiver_that_never_answers_times_out(receiver: Receiver) -> None:
    receiver.hold.clear()
    hook = AlertWebhook(receiver.url, timeout=0.2)
    hook.offer(alert(0))
    assert hook.flush(10)
    assert hook.status()["failed"] == 1


def test_nobody_listening_is_a_failure_not_a_crash() -> None:
    dead = Receiver()
    url = dead.url
    dead.close()
    hook = AlertWebhook(url, timeout=1.0)
    hook.offer(alert(0))
    hook.offer(alert(1))
    assert hook.flush(10)
    assert hook.status()["failed"] == 2
