"""``stream_hub.client``: ``follow()`` and ``afollow()`` against real servers on
port 0, over SSE and WebSocket, with no reconnect code in the test: restarts,
clean stops, a hub that comes back, history that left, wrong ports, tokens
and timeouts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from stream_hub import TrainingStreamServer, get_stream_server, get_stream_server_manager
from stream_hub.client import FollowTimeout, HubRefused, HubUnreachable, afollow, follow

from ..conftest import committed, fill, free_config, wait_for
from ..processes import free_port, free_ports

TRANSPORTS = ["sse", "ws"]


def url_of(server: TrainingStreamServer, transport: str) -> str:
    return server.urls["sse"] if transport == "sse" else server.urls["ws"] + "/"


def clients(server: TrainingStreamServer, transport: str) -> int:
    return int(server.status()["clients"][transport])


class Collector:
    """Iterates a ``follow()`` on a thread of its own, keeping every event."""

    def __init__(self, events: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.sub = events
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.sub:
                self.events.append(event)
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "follow() did not end"
        if self.error is not None:
            raise self.error
        return self.events


def assert_each_once(events: list[dict[str, Any]], steps: int, first_seq: int | None = None) -> None:
    """Every seq from the first to the last exactly once and in order, no gap,
    and the metric steps 0..steps-1 once each."""
    seqs = [e["seq"] for e in events]
    start = seqs[0] if first_seq is None else first_seq
    assert seqs == list(range(start, start + len(seqs))), seqs
    assert not [e for e in events if e["type"] == "gap"]
    assert [e["step"] for e in events if e["type"] == "metric"] == list(range(steps))


# -- every event exactly once across two force_restart()s --------------------------------


def _publish_across_two_restarts(server: TrainingStreamServer, steps: int) -> None:
    """Log ``steps`` metrics from one thread while this one restarts the
    server twice through the manager, in the middle of the stream."""
    logged = [0]

    def publish() -> None:
        for step in range(steps):
            server.log({"loss": 1.0 / (step + 1)}, step=step, run="r")
            logged[0] = step + 1
            time.sleep(0.002)

    publisher = threading.Thread(target=publish)
    publisher.start()
    manager = get_stream_server_manager()
    for at in (steps // 3, 2 * steps // 3):
        wait_for(lambda at=at: logged[0] >= at, what=f"{at} steps logged")
        manager.force_restart()
    publisher.join(30)
    assert server.restarts == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_follow_delivers_every_event_once_across_two_restarts(transport: str) -> None:
    server = get_stream_server(config=free_config(heartbeat_interval=1.0))
    collector = Collector(follow(url_of(server, transport), since=0))
    wait_for(lambda: clients(server, transport) == 1, what="follow() connected")
    _publish_across_two_restarts(server, 300)
    committed(server, server.hub.last_seq)
    get_stream_server_manager().cleanup()  # a clean stop: the iteration ends
    events = collector.finish()
    assert_each_once(events, 300, first_seq=1)
    kinds = [e["type"] for e in events if e["type"] != "metric"]
    # The start, two restarts (each: shutdown, then started again), the stop.
    assert kinds == ["status", "shutdown", "status", "shutdown", "status", "shutdown"]
    assert [e["data"]["restart"] for e in events if e["type"] == "shutdown"] == [True, True, False]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_afollow_delivers_every_event_once_across_two_restarts(transport: str) -> None:
    server = await asyncio.to_thread(get_stream_server, config=free_config(heartbeat_interval=1.0))
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in afollow(url_of(server, transport), types="metric"):
            events.append(event)

    task = asyncio.create_task(consume())
    while clients(server, transport) != 1:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(_publish_across_two_restarts, server, 300)
    await asyncio.to_thread(committed, server, server.hub.last_seq)
    await asyncio.to_thread(get_stream_server_manager().cleanup)
    await asyncio.wait_for(task, 15)
    assert [e["step"] for e in events] == list(range(300))
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    assert {e["type"] for e in events} == {"metric"}  # no shutdown, no status: not asked for


# -- following from now ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_from_now_misses_nothing_published_while_disconnected(transport: str, make_server) -> None:
    """``since=None`` starts at the hub's head at connect time, even before
    the first event: what is published while the hub is down still arrives."""
    sse, ws, rest = free_ports(3)
    server = make_server(sse_port=sse, ws_port=ws, rest_port=rest, heartbeat_interval=1.0)
    fill(server, 5)  # history before we connect: not ours
    collector = Collector(follow(url_of(server, transport), types="metric", on_shutdown="wait"))
    wait_for(lambda: clients(server, transport) == 1, what="follow() connected")
    server.stop()
    for step in range(3):  # committed while nothing serves (inline)
        server.log({"x": step}, step=step, run="later")
    server.start()  # the same ports, the same epoch and history
    server.log({"x": 3}, step=3, run="later")
    wait_for(lambda: len(collector.events) == 4, what="4 events")
    assert [(e["run"], e["step"]) for e in collector.events] == [("later", s) for s in range(4)]
    collector.sub.follower.on_shutdown = "end"
    server.stop()
    collector.finish()


# -- clean stops -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_clean_stop_ends_the_iteration(transport: str, make_server) -> None:
    server = make_server(heartbeat_interval=1.0)
    collector = Collector(follow(url_of(server, transport)))
    wait_for(lambda: clients(server, transport) == 1, what="follow() connected")
    seq = server.log({"loss": 1.0}, step=1, run="r")
    wait_for(lambda: collector.events, what="the metric")
    started = time.monotonic()
    server.stop()
    events = collector.finish(timeout=5)
    assert time.monotonic() - started < 3  # no retrying for seconds after a clean stop
    assert [e["type"] for e in events] == ["metric", "shutdown"]
    assert events[0]["seq"] == seq and events[1]["data"] == {"reason": "stop", "restart": False}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_on_shutdown_wait_follows_a_new_hub_process_on_the_same_ports(transport: str, make_server) -> None:
    """A new process is a new epoch: the follower resumes with the epoch of
    its last event, so the hub replays its whole history after a ``gap``."""
    sse, ws, rest = free_ports(3)
    ports = {"sse_port": sse, "ws_port": ws, "rest_port": rest, "heartbeat_interval": 1.0}
    first = make_server(**ports)
    sub = follow(url_of(first, transport), types="metric", on_shutdown="wait")
    collector = Collector(sub)
    wait_for(lambda: clients(first, transport) == 1, what="follow() connected")
    for step in range(10):
        first.log({"x": step}, step=step, run="old")
    wait_for(lambda: len(collector.events) == 10, what="10 events")
    first.stop()
    second = make_server(**ports)  # another hub (a new epoch), seqs from 1 again
    for step in range(3):
        second.log({"x": step}, step=step, run="new")
    wait_for(lambda: len(collector.events) == 14, what="a gap and 3 events from the new hub")
    gap = collector.events[10]
    assert gap["type"] == "gap" and gap["data"]["reason"] == "epoch"
    assert gap["epoch"] == second.hub.epoch != first.hub.epoch
    assert [(e["run"], e["step"]) for e in collector.events[11:]] == [("new", 0), ("new", 1), ("new", 2)]
    assert sub.epoch == second.hub.epoch
    sub.follower.on_shutdown = "end"
    second.stop()
    collector.finish()


# -- gaps and filters ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_stretch_that_left_history_arrives_as_a_gap(transport: str, make_server) -> None:
    server = make_server(history_size=10, store=False)  # no archive: what left the ring is a gap
    seqs = fill(server, 30)
    with follow(url_of(server, transport), since=seqs[4], idle_timeout=5) as sub:
        first = next(sub)
        rest = [next(sub) for _ in range(10)]
    assert first["type"] == "gap" and first["data"]["reason"] == "behind"
    assert (first["data"]["from"], first["data"]["to"]) == (seqs[4] + 1, seqs[-1] - 10)
    assert [e["seq"] for e in rest] == seqs[-10:]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_filters_leave_out_server_events_but_never_a_gap(transport: str, make_server) -> None:
    server = make_server(history_size=10, store=False)  # no archive: what left the ring is a gap
    seqs = fill(server, 20, run="a")
    server.log({"x": 1}, run="b")
    server.publish("note", {"text": "n"}, run="a")
    last = server.log({"x": 2}, run="a")
    committed(server, last)
    with follow(url_of(server, transport), runs="a", types=["metric"], since=seqs[2], idle_timeout=5) as sub:
        gap = next(sub)
        events = []
        while not events or events[-1]["seq"] < last:
            events.append(next(sub))
    assert gap["type"] == "gap" and gap["data"]["reason"] == "behind"
    assert {(e["type"], e["run"]) for e in events} == {("metric", "a")}
    assert [e["seq"] for e in events] == [*range(gap["seq"] + 1, seqs[-1] + 1), last]


# -- errors and timeouts ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_hub_raises_hub_unreachable_after_retry_for(transport: str) -> None:
    url = f"http://127.0.0.1:{free_port()}" if transport == "sse" else f"ws://127.0.0.1:{free_port()}/"
    started = time.monotonic()
    with pytest.raises(HubUnreachable) as caught:
        next(follow(url, retry_for=0.5))
    assert 0.4 < time.monotonic() - started < 5
    message = str(caught.value)
    assert url.rstrip("/") in message and "no hub answered" in message and "after None" not in message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_refused_subscription_raises_at_once(transport: str, make_server) -> None:
    server = make_server(read_token="s3cret-s3cret-s3cret")
    started = time.monotonic()
    with pytest.raises(HubRefused) as caught:
        next(follow(url_of(server, transport)))
    assert time.monotonic() - started < 3
    assert caught.value.status == 401 and "token" in str(caught.value)
    seq = server.log({"x": 1}, run="r")
    with follow(
        url_of(server, transport), since=seq - 1, token="s3cret-s3cret-s3cret", idle_timeout=5
    ) as sub:
        assert next(sub)["seq"] == seq


def test_the_wrong_port_is_named(make_server) -> None:
    server = make_server()
    with pytest.raises(HubRefused) as caught:
        next(follow(server.urls["rest"], retry_for=2))
    assert caught.value.status == 404 and "SSE port" in str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_idle_timeout_raises_follow_timeout(transport: str, make_server) -> None:
    server = make_server(heartbeat_interval=0.2)  # keep-alives do not count as events
    started = time.monotonic()
    with pytest.raises(FollowTimeout) as caught:
        next(follow(url_of(server, transport), idle_timeout=0.6))
    assert 0.5 < time.monotonic() - started < 2.5
    assert "0.6 s" in str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_afollow_idle_timeout_and_close(transport: str, make_server) -> None:
    server = await asyncio.to_thread(make_server, heartbeat_interval=0.2)
    started = time.monotonic()
    with pytest.raises(FollowTimeout):
        async with afollow(url_of(server, transport), idle_timeout=0.5) as sub:
            await sub.__anext__()
    assert time.monotonic() - started < 2.5
    seq = server.log({"x": 1}, run="r")
    async with afollow(url_of(server, transport), since=seq - 1) as sub:
        assert (await sub.__anext__())["seq"] == seq
        assert clients(server, transport) == 1
    await asyncio.to_thread(wait_for, lambda: clients(server, transport) == 0, 5, "connection closed")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_leaving_the_loop_closes_the_connection(transport: str, make_server) -> None:
    server: TrainingStreamServer = make_server()
    seq = server.log({"x": 1}, run="r")
    for event in follow(url_of(server, transport), since=seq - 1):
        assert event["seq"] == seq
        break
    wait_for(lambda: clients(server, transport) == 0, 5, "connection closed")


def test_bad_arguments_raise_at_once() -> None:
    cases: list[Callable[[], Any]] = [
        lambda: follow("127.0.0.1:8888"),
        lambda: follow("ftp://127.0.0.1:8888"),
        lambda: follow("http://127.0.0.1:8888", since=-1),
        lambda: follow("http://127.0.0.1:8888", on_shutdown="stop"),  # type: ignore[arg-type]
        lambda: afollow("http://127.0.0.1:8888", retry_for=0),
    ]
    for case in cases:
        with pytest.raises(ValueError):
            case()
