"""Fault injection on the managed server: a dead loop thread, a listener closed
underneath a transport, a port taken by another process during
``force_restart``. The manager notices, logs the cause, restarts in place with
history kept, and clients resume.
"""

from __future__ import annotations

import contextlib
import logging
import select
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed

from stream_hub import (
    PortInUseError,
    StreamHubError,
    TrainingStreamServer,
    get_stream_server,
    get_stream_server_manager,
    release_stream_server,
)

from ..clients import SSEStream, events_until, ping, send_op, ws_open
from ..conftest import free_config, wait_for
from ..processes import port_is_bindable

DETECT_WITHIN = 1.0  # the contract: a fault is noticed within a second


def crash_loop(server: TrainingStreamServer) -> None:
    """Kill the loop thread: SystemExit escapes ``run_forever``."""

    def boom() -> None:
        raise SystemExit("injected fault")

    loop = server._serving.loop.loop
    assert loop is not None
    loop.call_soon_threadsafe(boom)


def history(server: TrainingStreamServer, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.urls['rest']}/api/history", params=params, timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


@contextlib.contextmanager
def subscribed(server: TrainingStreamServer, since: int) -> Iterator[Any]:
    """A WebSocket client, subscribed from ``since``, pinged once."""
    with ws_open(server) as ws:
        send_op(ws, "subscribe", since=since)
        send_op(ws, "ping")
        yield ws


def stream_ends(stream: SSEStream) -> bool:
    """Read to the end of an SSE stream; True once it ends (cleanly or cut off).

    A read timeout (the stream just hangs) propagates and fails the test.
    """
    try:
        while stream.next() is not None:
            pass
    except (httpx.RemoteProtocolError, httpx.ReadError):
        pass
    return True


@pytest.fixture
def managed() -> Iterator[TrainingStreamServer]:
    server = get_stream_server(config=free_config(heartbeat_interval=0.5))
    yield server
    get_stream_server_manager().cleanup()


# -- a dead loop thread ------------------------------------------------------------------


@pytest.mark.parametrize("slow_exit", [False, True], ids=["prompt-exit", "slow-exit"])
def test_dead_loop_thread_is_noticed_logged_and_restarted_in_place(
    managed: TrainingStreamServer, caplog: pytest.LogCaptureFixture, slow_exit: bool
) -> None:
    """slow-exit: the dying thread lingers after reporting the crash (as when
    it finalizes many pending tasks), so the recovery runs while it is alive."""
    server = managed
    if slow_exit:
        report = server._serving.loop.on_crash
        assert report is not None
        exited = threading.Event()

        def report_then_linger(exc: BaseException) -> None:
            report(exc)
            exited.wait(0.5)  # a slow exit, not a wait for a condition

        server._serving.loop.on_crash = report_then_linger
    manager = get_stream_server_manager()
    ports, epoch = server.ports, server.hub.epoch
    proc = psutil.Process()
    fds_serving = proc.num_fds()
    before = [server.log({"x": i}, step=i, run="before") for i in range(10)]
    sse = SSEStream(f"{server.urls['sse']}/events", headers={"Last-Event-ID": "0"}, read_timeout=5)
    with contextlib.ExitStack() as stack:
        stack.callback(sse.close)
        ws = stack.enter_context(subscribed(server, since=0))
        last_sse = sse.read_until_seq(before[-1])[-1].seq
        assert [e["seq"] for e in events_until(ws, before[-1])] == list(range(1, before[-1] + 1))

        # A training thread keeps logging through the crash and the recovery.
        logged: list[int] = []
        errors: list[BaseException] = []

        def trainer() -> None:
            try:
                for step in range(3000):
                    logged.append(server.log({"loss": 1.0 / (step + 1)}, step=step, run="trainer"))
            except BaseException as exc:
                errors.append(exc)

        caplog.set_level(logging.INFO, logger="stream_hub")
        thread = threading.Thread(target=trainer)
        thread.start()
        crash_loop(server)
        wait_for(lambda: server.faults == 1, timeout=DETECT_WITHIN, what="the fault noticed")
        wait_for(
            lambda: server.running and manager.status()["restarts"] == 1,
            timeout=10,
            what="the restart in place",
        )
        thread.join(30)
        assert not errors, errors
        assert manager.server is server
        status = manager.status()
        assert status["running"] and status["loop_thread_alive"] and status["ref_count"] == 1
        assert server.ports == ports and server.hub.epoch == epoch
        assert "SystemExit('injected fault')" in (server.last_fault or "")
        messages = [r.getMessage() for r in caplog.records]
        assert any("event-loop thread died" in m and "injected fault" in m for m in messages), messages
        assert any("recovered from a fault" in m for m in messages), messages

        # Clients of the dead loop see their connection end, and resume exactly.
        assert stream_ends(sse)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)
    after = server.publish("note", {"text": "after the crash"})
    resumed = SSEStream(f"{server.urls['sse']}/events", headers={"Last-Event-ID": str(last_sse)})
    try:
        frames = resumed.read_until_seq(after)
    finally:
        resumed.close()
    assert [f.seq for f in frames] == list(range(last_sse + 1, after + 1))
    assert all(f.event != "gap" for f in frames)
    # Every event the trainer logged is in history, in step order.
    kept = history(server, run="trainer", limit=10_000)
    assert [e["step"] for e in kept["events"] if e["type"] == "metric"] == list(range(3000))
    assert [e["seq"] for e in kept["events"] if e["type"] == "metric"] == logged
    with subscribed(server, since=last_sse) as ws2:
        replay = events_until(ws2, after)
    assert [e["seq"] for e in replay] == list(range(last_sse + 1, after + 1))
    # The dead loop's connections were closed, not leaked.
    wait_for(
        lambda: proc.num_fds() <= fds_serving,
        timeout=5,
        what=f"descriptors back to {fds_serving} (now {proc.num_fds()})",
    )


def test_dead_loop_thread_without_references_is_left_stopped() -> None:
    """A standalone server (no manager) reports a dead loop as not running."""
    server = TrainingStreamServer(free_config())
    server.start()
    try:
        crash_loop(server)
        wait_for(lambda: not server.loop_thread_alive, timeout=DETECT_WITHIN, what="loop death seen")
        assert server.status()["running"] is False
        assert server.status()["loop_thread_alive"] is False
        assert server.faults == 1
        seq = server.log({"x": 1})  # the training thread is never affected
        assert seq > 0
    finally:
        server.stop()
    assert server.ports == {}


# -- a listener closed underneath ------------------------------------------------------------


def _close_listener(server: TrainingStreamServer, name: str) -> None:
    loop = server._serving.loop.loop
    assert loop is not None
    if name == "ws":
        ws_server = server._transports.ws.ws_server
        assert ws_server is not None
        loop.call_soon_threadsafe(ws_server.server.close)
    else:
        listener = server._transports.http[name].server
        assert listener is not None
        loop.call_soon_threadsafe(listener.close)


def _serves(server: TrainingStreamServer, name: str) -> bool:
    try:
        if name == "ws":
            with ws_open(server) as ws:
                return ping(ws)["type"] == "pong"
        return httpx.get(f"{server.urls[name]}/health", timeout=5).status_code == 200
    except (httpx.HTTPError, OSError, ConnectionClosed):
        return False


@pytest.mark.parametrize("name", ["sse", "ws", "rest"])
def test_closed_listener_is_restarted_within_a_second(
    managed: TrainingStreamServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = managed
    ports = server.ports
    seq = server.log({"x": 1}, run="kept")
    assert _serves(server, name)
    caplog.set_level(logging.INFO, logger="stream_hub")
    _close_listener(server, name)
    wait_for(lambda: server.faults == 1, timeout=DETECT_WITHIN, what=f"the closed {name} listener noticed")
    wait_for(lambda: server.running and server.restarts == 1, timeout=10, what="the restart in place")
    assert server.last_fault == f"{name} listener stopped serving"
    assert any(
        f"{name} listener stopped serving" in r.getMessage() and r.levelno == logging.ERROR
        for r in caplog.records
    )
    assert server.ports == ports
    for face in ("sse", "ws", "rest"):
        assert _serves(server, face), f"{face} does not serve after the restart"
    events = history(server, run="kept")["events"]
    assert [e["seq"] for e in events if e["type"] == "metric"] == [seq]
    assert get_stream_server_manager().ref_count == 1


# -- a port taken during force_restart -----------------------------------------------------

# Says "trying", then tries to bind (and listen on) the port in a tight loop;
# says "bound" once it holds it, then holds it until its stdin closes.
GRABBER = textwrap.dedent(
    """
    import socket, sys
    port = int(sys.argv[1])
    print("trying", flush=True)
    while True:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
            break
        except OSError:
            s.close()
    print("bound", flush=True)
    sys.stdin.read()
    """
)


def _said(grabber: subprocess.Popen[str], word: str) -> bool:
    assert grabber.stdout is not None
    ready, _, _ = select.select([grabber.stdout], [], [], 0)
    return bool(ready) and grabber.stdout.readline().strip() == word


@pytest.mark.parametrize("retry", ["get_stream_server", "force_restart"])
def test_port_taken_during_force_restart_leaves_a_consistent_manager(
    managed: TrainingStreamServer, retry: str
) -> None:
    server = managed
    manager = get_stream_server_manager()
    ports = server.ports
    kept = server.log({"x": 1}, run="kept")
    grabber = subprocess.Popen(
        [sys.executable, "-c", GRABBER, str(ports["rest"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        error: StreamHubError | None = None
        bound = False
        # The grabber must win the race for the port between our stop and our
        # start; each attempt that it loses is an ordinary restart. Restarts
        # take a few ms: they begin once it runs, not while Python starts.
        wait_for(lambda: _said(grabber, "trying"), timeout=10, what="the grabber running")
        for _ in range(50):
            try:
                manager.force_restart()
            except StreamHubError as exc:
                error = exc
                break
        assert error is not None, "the grabber never took the port during a restart"
        bound = wait_for(lambda: _said(grabber, "bound"), timeout=5, what="the grabber holding the port")
        assert bound
        assert str(ports["rest"]) in str(error)
        if isinstance(error, PortInUseError):
            assert error.port == ports["rest"]
            assert error.pid in (grabber.pid, None)
        # Consistent: count kept, not running, nothing half-bound.
        status = manager.status()
        assert manager.ref_count == 1 and status["ref_count"] == 1
        assert not manager.is_server_running() and status["running"] is False
        for name in ("sse", "ws"):
            assert port_is_bindable(ports[name]), f"{name} port {ports[name]} left bound"
        # While the port is still taken, a retry fails the same way and changes nothing.
        with pytest.raises(PortInUseError):
            get_stream_server()
        assert manager.ref_count == 1 and not manager.is_server_running()
    finally:
        assert grabber.stdin is not None
        grabber.stdin.close()
        grabber.wait(10)
        assert grabber.stdout is not None
        grabber.stdout.close()
    if retry == "get_stream_server":
        again = get_stream_server()
        expected_refs = 2
    else:
        again = manager.force_restart()
        expected_refs = 1
    assert again is server and server.running and server.ports == ports
    assert manager.ref_count == expected_refs
    events = history(server, run="kept")["events"]
    assert [e["seq"] for e in events if e["type"] == "metric"] == [kept]
    for _ in range(expected_refs):
        release_stream_server()
    assert not manager.is_server_running()
