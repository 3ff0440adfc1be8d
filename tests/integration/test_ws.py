"""The WebSocket face against a real server on port 0 and the real
``websockets`` asyncio client.

A connection is known to be subscribed once it has answered a ping (the server
opens the connection's cursor before it reads any client message), so no test
sleeps waiting for a handler to start.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stream_hub import TrainingStreamServer, job
from stream_hub.runtime.loop import LoopThreadLeftBehind

from ..clients import (
    EVENT_KEYS_DATA,
    EVENT_KEYS_METRIC,
    SSEParser,
    expect_closed,
    ready,
    recv_json,
    recv_until_seq,
    stalled_ws,
    strict_json,
    subscribe,
    ws_connect,
)
from ..conftest import committed, fill, wait_for
from ..processes import port_is_bindable


@pytest.fixture
async def client(server: TrainingStreamServer) -> AsyncIterator[ClientConnection]:
    """A connected, ready WebSocket client following new events."""
    async with ws_connect(server) as ws:
        await ready(ws)
        yield ws


# -- events ----------------------------------------------------------------------------------


async def test_new_events_arrive_one_json_object_per_text_frame(server, client):
    s1 = server.log({"loss": 0.5, "acc": 1}, step=3, run="exp1")
    s2 = server.publish("log", {"text": "hello"}, run="exp1")
    s3 = server.log({"loss": float("nan"), "up": float("inf")})
    metric, note, nonfinite = [await recv_json(client) for _ in range(3)]
    epoch = server.status()["epoch"]
    assert set(metric) == EVENT_KEYS_METRIC
    assert metric == {
        "seq": s1,
        "epoch": epoch,
        "ts": metric["ts"],
        "type": "metric",
        "run": "exp1",
        "step": 3,
        "metrics": {"loss": 0.5, "acc": 1},
    }
    assert abs(metric["ts"] - time.time()) < 5
    assert set(note) == EVENT_KEYS_DATA
    assert (note["seq"], note["type"], note["data"]) == (s2, "log", {"text": "hello"})
    assert nonfinite["seq"] == s3 and nonfinite["run"] == job.current().run  # contract v2
    assert nonfinite["metrics"] == {"loss": "NaN", "up": "Infinity"}


async def test_connection_does_not_replay_history_by_default(server):
    old = fill(server, 5)
    async with ws_connect(server) as ws:
        await ready(ws)
        new = server.log({"x": 1})
        event = await recv_json(ws)
        assert event["seq"] == new > old[-1]


async def test_many_events_in_order(server, client):
    seqs = [server.log({"i": i}, step=i, run="r") for i in range(2000)]
    events = await recv_until_seq(client, seqs[-1])
    assert [e["seq"] for e in events] == seqs
    assert [e["step"] for e in events] == list(range(2000))


# -- subscribe ----------------------------------------------------------------------------------


async def test_subscribe_since_replays_exactly_then_live(server):
    seqs = fill(server, 20)
    async with ws_connect(server) as ws:
        since = seqs[7]
        replay = await subscribe(ws, since=since)  # the first message: nothing was sent before it
        assert [e["seq"] for e in replay] == list(range(since + 1, seqs[-1] + 1))
        assert [e["step"] for e in replay] == list(range(8, 20))
        live = server.log({"i": 99}, step=99, run="r")
        assert (await recv_json(ws))["seq"] == live
        await ready(ws)  # nothing else was queued in between


async def test_subscribe_after_frames_were_sent_never_repeats_them(server, client):
    seqs = fill(server, 20)
    assert [e["seq"] for e in await recv_until_seq(client, seqs[-1])] == seqs
    # Same filters, since in the past: everything after it was already sent.
    assert await subscribe(client, since=seqs[7]) == []
    live = server.log({"i": 99}, step=99, run="r")
    assert (await recv_json(client))["seq"] == live


async def test_widening_a_subscription_in_the_past_announces_a_gap(server):
    async with ws_connect(server) as ws:
        await subscribe(ws, runs=["a"])
        a1 = server.log({"v": 1}, run="a")
        server.log({"v": 1}, run="b")
        b2 = server.log({"v": 2}, run="b")
        a3 = server.log({"v": 3}, run="a")
        assert [e["seq"] for e in await recv_until_seq(ws, a3)] == [a1, a3]
        # b's two events lie before what this connection already got: they
        # cannot come in order any more, so they are announced, not lost silently.
        (gap,) = await subscribe(ws, since=a1 - 1)
        assert gap["type"] == "gap" and gap["data"]["reason"] == "resubscribe"
        assert gap["data"]["lost"] == 2 and gap["data"]["to"] == a3 and b2 < a3
        b5 = server.log({"v": 5}, run="b")
        assert (await recv_json(ws))["seq"] == b5


async def test_subscribe_since_zero_gives_all_history(server):
    seqs = fill(server, 5)
    async with ws_connect(server) as ws:
        replay = await subscribe(ws, since=0)
        assert [e["seq"] for e in replay] == list(range(1, seqs[-1] + 1))
        assert replay[0]["type"] == "status"


async def test_a_client_that_subscribes_right_after_connecting_loses_nothing(server):
    """Live events never overtake the replay the first subscribe asks for:
    a client that records the highest seq it saw can resume from it."""
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.wait(0.001):  # up to a thousand events a second, well within history
            server.log({"i": i}, step=i, run="r")
            i += 1

    seqs = fill(server, 200)
    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        last = seqs[-1] - 150
        for _ in range(5):
            async with ws_connect(server) as ws:
                await ws.send(json.dumps({"op": "subscribe", "since": last}))
                for _ in range(300):
                    event = await recv_json(ws)
                    assert event["type"] == "metric", event
                    assert event["seq"] == last + 1, (event["seq"], last)  # no hole, no repeat
                    last = event["seq"]
    finally:
        stop.set()
        publisher.join()


async def test_gap_on_resume_beyond_history(make_server):
    server = make_server(history_size=10, store=False)  # no archive: what left the ring is a gap
    seqs = fill(server, 30)
    head, oldest = seqs[-1], seqs[-1] - 9
    async with ws_connect(server) as ws:
        gap, *rest = await subscribe(ws, since=3)
        assert gap["type"] == "gap"
        assert gap["seq"] == oldest - 1
        assert gap["data"]["lost"] == oldest - 1 - 3
        assert [e["seq"] for e in rest] == list(range(oldest, head + 1))


async def _mixed(server: TrainingStreamServer) -> int:
    last = 0
    for i in range(5):
        server.log({"v": i}, step=i, run="a")
        server.log({"v": i}, step=i, run="b")
        server.publish("log", {"i": i}, run="a")
        last = server.publish("log", {"i": i}, run="b")
    committed(server, last)
    return last


async def test_runs_filter(server):
    await _mixed(server)
    async with ws_connect(server) as ws:
        events = await subscribe(ws, runs=["a"], since=0)
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        user = [e for e in events if e["type"] in ("metric", "log")]
        assert {e["run"] for e in user} == {"a"}
        assert len(user) == 10
        # Live events of other runs are filtered too.
        server.log({"v": 1}, run="b")
        marker2 = server.log({"v": 2}, run="a")
        assert (await recv_json(ws))["seq"] == marker2


async def test_runs_filter_several_runs(server):
    await _mixed(server)
    server.log({"v": 1}, run="c")
    async with ws_connect(server) as ws:
        events = await subscribe(ws, runs=["a", "c"], since=0)
        runs = [e["run"] for e in events if e["type"] in ("metric", "log")]
        assert sorted(set(runs)) == ["a", "c"]
        assert len(runs) == 10 + 1


async def test_types_filter(server):
    await _mixed(server)
    async with ws_connect(server) as ws:
        events = await subscribe(ws, types=["log"], since=0)
        assert {e["type"] for e in events} == {"log"}
        assert len(events) == 10
        server.log({"v": 1}, run="z")
        marker2 = server.publish("log", {"end": 2}, run="z")
        assert (await recv_json(ws))["seq"] == marker2


async def test_resubscribe_without_filters_follows_everything_again(server, client):
    await client.send(json.dumps({"op": "subscribe", "runs": ["a"]}))
    await ready(client)
    server.log({"v": 1}, run="b")
    a = server.log({"v": 1}, run="a")
    assert (await recv_json(client))["seq"] == a
    await client.send(json.dumps({"op": "subscribe"}))
    await ready(client)
    b = server.log({"v": 2}, run="b")
    assert (await recv_json(client))["seq"] == b


# -- control messages -----------------------------------------------------------------------------


async def test_ping_gets_pong(server, client):
    head = fill(server, 3)[-1]
    await recv_until_seq(client, head)
    await client.send(json.dumps({"op": "ping"}))
    pong = await recv_json(client)
    assert pong["type"] == "pong"
    assert pong.get("last_seq") == head


BAD_MESSAGES = {
    "invalid-json": "{not json",
    "empty-text": "",
    "array": "[1, 2]",
    "string": '"subscribe"',
    "number": "42",
    "null": "null",
    "no-op": "{}",
    "unknown-op": '{"op": "unsubscribe"}',
    "op-not-string": '{"op": 1}',
    "since-string": '{"op": "subscribe", "since": "abc"}',
    "since-negative": '{"op": "subscribe", "since": -1}',
    "since-float": '{"op": "subscribe", "since": 1.5}',
    "since-bool": '{"op": "subscribe", "since": true}',
    "runs-number": '{"op": "subscribe", "runs": 5}',
    "runs-list-of-numbers": '{"op": "subscribe", "runs": [1, 2]}',
    "types-object": '{"op": "subscribe", "types": {"a": 1}}',
    "epoch-number": '{"op": "subscribe", "epoch": 5}',
    "unknown-field": '{"op": "subscribe", "bogus": 1}',
}


@pytest.mark.parametrize("message", list(BAD_MESSAGES.values()), ids=list(BAD_MESSAGES))
async def test_bad_message_gets_error_frame_and_connection_stays_open(server, client, message):
    await client.send(message)
    reply = await recv_json(client)
    assert reply["type"] == "error", reply
    assert isinstance(reply["error"], str) and reply["error"]
    await ready(client)
    # And it still streams.
    seq = server.log({"x": 1})
    assert (await recv_json(client))["seq"] == seq


async def test_binary_frame_gets_error_frame_and_connection_stays_open(server, client):
    await client.send(b'{"op": "ping"}')
    reply = await recv_json(client)
    assert reply["type"] == "error"
    assert "binary" in reply["error"]
    await ready(client)


async def test_bad_subscribe_keeps_previous_subscription(server, client):
    await client.send(json.dumps({"op": "subscribe", "runs": ["a"]}))
    await ready(client)
    await client.send(json.dumps({"op": "subscribe", "runs": ["b"], "since": "x"}))
    assert (await recv_json(client))["type"] == "error"
    server.log({"v": 1}, run="b")
    a = server.log({"v": 1}, run="a")
    assert (await recv_json(client))["seq"] == a


async def test_frame_over_max_message_size_closes_1009(make_server):
    server = make_server(max_message_size=4096)
    async with ws_connect(server) as ws:
        await ready(ws)
        await ws.send("x" * 5000)
        closed = await expect_closed(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1009
    # The server is fine for the next client.
    async with ws_connect(server) as ws:
        await ready(ws)


async def test_frame_under_max_message_size_is_handled(make_server):
    server = make_server(max_message_size=4096)
    async with ws_connect(server) as ws:
        await ws.send(json.dumps({"op": "subscribe", "runs": ["r" * 100] * 30}))
        await ready(ws)


# "//" and "//events": regression, urlsplit() of the request target read them
# as a netloc with an empty path, which was accepted as "/".
@pytest.mark.parametrize("path", ["/events", "/ws", "/api/status", "/x/", "//", "//events"])
async def test_other_paths_are_rejected_with_404(server, path):
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(server, path):
            pass
    assert info.value.response.status_code == 404
    assert server.status()["clients"]["ws"] == 0


async def test_query_string_on_root_is_accepted(server):
    async with ws_connect(server, "/?client=dashboard") as ws:
        await ready(ws)


async def test_read_token_required(make_server):
    server = make_server(read_token="r34d-r34d-r34d-r34d")
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(server):
            pass
    assert info.value.response.status_code == 401
    async with ws_connect(server, "/?token=r34d-r34d-r34d-r34d") as ws:
        await ready(ws)
    async with ws_connect(server, additional_headers={"Authorization": "Bearer r34d-r34d-r34d-r34d"}) as ws:
        await ready(ws)


# -- shutdown -----------------------------------------------------------------------------------


async def test_stop_sends_shutdown_then_closes_1001(make_server):
    server = make_server()
    ports = server.ports
    async with ws_connect(server) as ws, ws_connect(server) as filtered:
        await ready(ws)
        await filtered.send(json.dumps({"op": "subscribe", "types": ["log"], "runs": ["x"]}))
        await ready(filtered)
        seq = server.log({"x": 1})
        assert (await recv_json(ws))["seq"] == seq

        stopping = asyncio.create_task(server.aclose())
        for conn in (ws, filtered):
            shutdown = await recv_json(conn)
            assert shutdown["type"] == "shutdown", shutdown
            assert shutdown["seq"] == seq + 1
            closed = await expect_closed(conn)
            assert closed.rcvd is not None and closed.rcvd.code == 1001
        await asyncio.wait_for(stopping, 10)
    for name, port in ports.items():
        assert port_is_bindable(port), f"{name} port {port} still bound"


async def _sse_client(url: str, connected: asyncio.Event, counter: list[int]) -> list[str]:
    """Read one SSE stream to its end; return the event types seen."""
    seen: list[str] = []
    parser = SSEParser()
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            counter[0] += 1
            if counter[0] == 10:
                connected.set()
            async for line in response.aiter_lines():
                frame = parser.feed(line)
                if frame is not None and frame.event is not None:
                    seen.append(frame.event)
    return seen


async def _ws_client(server: TrainingStreamServer) -> tuple[list[str], int | None]:
    seen: list[str] = []
    async with ws_connect(server) as ws:
        await ready(ws, skip_events=True)  # the test may publish as soon as we are counted
        try:
            while True:
                seen.append((await recv_json(ws, timeout=10))["type"])
        except ConnectionClosed as exc:
            return seen, exc.rcvd.code if exc.rcvd else None


async def test_stop_with_10_sse_and_10_ws_clients_is_prompt(make_server):
    server = make_server()
    ports = server.ports
    connected = asyncio.Event()
    counter = [0]
    url = f"{server.urls['sse']}/events"
    sse_tasks = [asyncio.create_task(_sse_client(url, connected, counter)) for _ in range(10)]
    ws_tasks = [asyncio.create_task(_ws_client(server)) for _ in range(10)]
    await asyncio.wait_for(connected.wait(), 10)
    await asyncio.to_thread(
        wait_for, lambda: server.status()["clients"] == {"sse": 10, "ws": 10, "evicted": 0}, 10, "20 clients"
    )
    seq = server.log({"x": 1})
    committed(server, seq)

    started = time.monotonic()
    await asyncio.wait_for(server.aclose(), 15)
    elapsed = time.monotonic() - started
    print(f"\nstop with 10 SSE + 10 WebSocket clients: {elapsed * 1000:.0f} ms")

    sse_results = await asyncio.wait_for(asyncio.gather(*sse_tasks), 10)
    ws_results = await asyncio.wait_for(asyncio.gather(*ws_tasks), 10)
    for seen in sse_results:
        assert seen[-1] == "shutdown", seen
    for seen, code in ws_results:
        assert seen[-1] == "shutdown", seen
        assert code == 1001
    assert elapsed < 3.0, f"stop took {elapsed:.2f} s"
    assert not server.running
    for name, port in ports.items():
        assert port_is_bindable(port), f"{name} port {port} still bound"


# -- slow and departing clients --------------------------------------------------------------


async def _stalled_client(server: TrainingStreamServer) -> socket.socket:
    """A WebSocket client that never reads, once the server counts it."""
    stalled = await asyncio.to_thread(stalled_ws, server)
    try:
        await asyncio.to_thread(
            wait_for, lambda: server.status()["clients"]["ws"] == 1, 60, "stalled client registered"
        )
    except BaseException:
        stalled.close()
        raise
    return stalled


async def test_client_that_never_reads_does_not_delay_another(make_server):
    server = make_server(history_size=50_000)
    stalled = await _stalled_client(server)
    try:
        async with ws_connect(server, max_size=None) as ws:
            await ready(ws)
            n = 12_000
            delivered_before = server.status()["events"]["delivered"]
            started = time.monotonic()
            seqs = [server.publish("blob", {"blob": "x" * 1000}, run="big") for _ in range(n)]
            events = await recv_until_seq(ws, seqs[-1], timeout=10)
            elapsed = time.monotonic() - started
            assert [e["seq"] for e in events] == seqs
            to_stalled = server.status()["events"]["delivered"] - delivered_before - n
            print(
                f"\n{n} events (~{n // 1000} MB) to the reading WebSocket in {elapsed:.2f} s; "
                f"the stalled one was handed {to_stalled}"
            )
            assert to_stalled < n, "the stalled client was not actually stalled"
            assert server.status()["clients"]["ws"] == 2
            assert elapsed < 10.0
            started = time.monotonic()
            stopping = asyncio.create_task(server.aclose(timeout=1.0))
            closed = await expect_closed(ws, timeout=10)
            await asyncio.wait_for(stopping, 10)
            took = time.monotonic() - started
            print(f"stop(timeout=1.0) with a stalled WebSocket client: {took * 1000:.0f} ms")
            assert closed.rcvd is not None and closed.rcvd.code == 1001
            assert took < 4.0
    finally:
        stalled.close()


async def _stop_with_stalled_websocket(server: TrainingStreamServer) -> tuple[float, bool]:
    """How long ``aclose(timeout=1.0)`` takes with a stalled WebSocket client
    and ~12 MB of history waiting for it, and whether the loop thread exited
    in that time (False: the stop left it behind, as it does when the thread
    gets no CPU before the deadline)."""
    stalled = await _stalled_client(server)
    try:
        seqs = [server.publish("blob", {"blob": "x" * 1000}) for _ in range(12_000)]
        await asyncio.to_thread(
            wait_for, lambda: server.status()["last_seq"] >= seqs[-1], 60, f"seq {seqs[-1]} committed"
        )
        started = time.monotonic()
        try:
            await asyncio.wait_for(server.aclose(timeout=1.0), 30)
        except LoopThreadLeftBehind:
            return time.monotonic() - started, False
        return time.monotonic() - started, True
    finally:
        stalled.close()


async def test_stop_timeout_bounds_stop_with_stalled_websocket(make_server):
    # Regression: this stop took ~2.1 s (timeout, then a fixed extra 1.0 s wait
    # on the cancelled handler stuck in the closing handshake, then abort); it
    # takes ~0.6 s. That wait is in every stop, so every try shows it. A loaded
    # machine only stretches the stop's own work now and then (or starves the
    # loop thread past the deadline: it is left behind), so one of three tries,
    # each on a fresh server, must stop cleanly within the bound.
    tries: list[tuple[float, bool]] = []
    while len(tries) < 3 and not any(took < 1.6 and exited for took, exited in tries):
        # (No store: writing its 12 MB would be part of the stop; this is about the handshake.)
        tries.append(await _stop_with_stalled_websocket(make_server(history_size=50_000, store=False)))
    shown = ", ".join(f"{took:.2f} s" + ("" if exited else " (left behind)") for took, exited in tries)
    assert any(took < 1.6 and exited for took, exited in tries), f"stop(timeout=1.0) took {shown}"


async def test_client_count_returns_to_zero_after_disconnect(server):
    async with ws_connect(server) as a, ws_connect(server) as b:
        await ready(a)
        await ready(b)
        assert server.status()["clients"]["ws"] == 2
    await asyncio.to_thread(
        wait_for, lambda: server.status()["clients"]["ws"] == 0, 5, "client count back to 0"
    )


async def test_max_clients_is_503(make_server):
    server = make_server(max_clients=1)
    async with ws_connect(server) as ws:
        await ready(ws)
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(server):
                pass
        assert info.value.response.status_code == 503
        assert b"max_clients" in info.value.response.body
    await asyncio.to_thread(
        wait_for, lambda: server.status()["clients"]["ws"] == 0, 5, "client count back to 0"
    )
    async with ws_connect(server) as ws:
        await ready(ws)


@pytest.mark.parametrize("size", [10, 125, 126, 1000, 65535, 65536, 300_000])
async def test_event_frame_sizes_across_length_encodings(server, size):
    """The server builds frames by hand: 7-bit, 16-bit and 64-bit payload lengths."""
    rest = f"{server.urls['rest']}/api/publish"

    def publish(pad: int) -> int:
        # A fixed ts makes the event's JSON length predictable to the byte.
        body = {"type": "blob", "data": "y" * pad, "ts": 1700000000.5}
        response = httpx.post(rest, json=body, timeout=10)
        assert response.status_code == 200, response.text
        return int(response.json()["seqs"][0])

    async with ws_connect(server, max_size=None) as ws:
        await ready(ws)
        for _ in range(2):  # both probes have one-digit seqs
            await asyncio.to_thread(publish, 0)
            empty_len = len(await ws.recv())
        pad = max(0, size - empty_len)
        seq = await asyncio.to_thread(publish, pad)
        message = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(message, str)
        event = strict_json(message)
        assert event["seq"] == seq
        assert event["data"] == "y" * pad
        assert len(message.encode()) == max(size, empty_len)
        await ready(ws)


async def test_subscription_in_the_url_resumes_without_duplicates_under_load(make_server) -> None:
    """A resume point in the connect URL is in place before the first frame."""
    server = make_server()
    stop = threading.Event()
    first = [server.log({"x": i}, step=i, run="busy") for i in range(200)]
    since = first[99]

    def publish() -> None:
        step = 200
        while not stop.wait(0.0005):  # steady traffic, well within history
            server.log({"x": step}, step=step, run="busy")
            step += 1

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        url = f"{server.urls['ws']}/?since={since}&runs=busy&types=metric"
        async with connect(url) as ws:
            seqs = []
            while len(seqs) < 500:
                event = json.loads(await ws.recv())
                seqs.append(event["seq"])
                assert event["type"] == "metric" and event["run"] == "busy"
    finally:
        stop.set()
        publisher.join()
    assert seqs[:100] == first[100:]  # exactly the events after `since`, first
    assert seqs == sorted(set(seqs))  # strictly increasing: no duplicates


async def test_bad_url_subscription_is_refused_with_400(make_server) -> None:
    server = make_server()
    for query in ("since=abc", "since=-1", "epoch=not-alnum!"):
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{server.urls['ws']}/?{query}"):
                pass
        assert info.value.response.status_code == 400, query
