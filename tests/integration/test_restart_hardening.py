"""Restarts under load, as the soak found them: a loop too busy to stop in
time, connections a loop leaves open, a close step that fails, an eviction
sweep that meets a broken connection. Whatever happens, the server starts
again on the same ports, and nothing of an old loop outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import struct
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed

from stream_hub import TrainingStreamServer, get_stream_server, get_stream_server_manager
from stream_hub.core.hub import MAX_CHUNK_EVENTS

from ..clients import SSEStream, ping, stalled_sse, stalled_ws, strict_json, ws_open
from ..conftest import committed, free_config, wait_for


def established(ports: dict[str, int]) -> int:
    """Server ends of this process's TCP connections on ``ports`` still established."""
    wanted = set(ports.values())
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.laddr and conn.laddr.port in wanted
    )


def serves_everything(server: TrainingStreamServer) -> bool:
    try:
        for name in ("sse", "rest"):
            if httpx.get(f"{server.urls[name]}/health", timeout=5).status_code != 200:
                return False
        with ws_open(server) as ws:
            return ping(ws)["type"] == "pong"
    except (httpx.HTTPError, OSError, ConnectionClosed):
        return False


def block_loop(server: TrainingStreamServer) -> threading.Event:
    """Keep the server's loop busy in a callback (a big ingest, a stuck
    handler) from now until the returned event is set."""
    release, busy = threading.Event(), threading.Event()

    def callback() -> None:
        busy.set()
        release.wait(60)

    loop = server._serving.loop.loop
    assert loop is not None
    loop.call_soon_threadsafe(callback)
    assert busy.wait(10)
    return release


@pytest.fixture
def busy_hub() -> Iterator[tuple[TrainingStreamServer, list[Any]]]:
    """A managed server with a short shutdown_timeout, some history, and
    three stalled SSE and three stalled WebSocket clients replaying it."""
    server = get_stream_server(config=free_config(shutdown_timeout=1.0, send_timeout=60.0))
    seq = 0
    for step in range(2000):
        seq = server.log({f"metric_{k}": 1.0 + k for k in range(40)}, step=step, run="r")
    committed(server, seq)
    sockets: list[Any] = [stalled_sse(server, last_event_id=1) for _ in range(3)]
    sockets += [stalled_ws(server, "?since=1") for _ in range(3)]
    wait_for(lambda: server.client_counts()["sse"] == server.client_counts()["ws"] == 3, what="clients")
    try:
        yield server, sockets
    finally:
        for sock in sockets:
            sock.close()
        get_stream_server_manager().cleanup()


def test_restart_while_the_loop_is_busy_comes_back_on_the_same_ports(
    busy_hub: tuple[TrainingStreamServer, list[Any]],
) -> None:
    """The loop is busy past the whole shutdown_timeout: the stop leaves the
    thread behind instead of failing; it ends as soon as the loop is free, and
    takes its connections with it; the restart serves on the same ports."""
    server, _ = busy_hub
    manager = get_stream_server_manager()
    ports = server.ports
    old = server._serving.loop.thread
    release = block_loop(server)

    def free_once_left_behind() -> None:
        wait_for(lambda: server._serving.loop.left_behind is not None, timeout=30, what="stop gave up")
        release.set()

    helper = threading.Thread(target=free_once_left_behind)
    helper.start()
    try:
        manager.force_restart()
    finally:
        release.set()
        helper.join()
    assert old is not None and not old.is_alive()
    assert server.running and server.ports == ports
    assert serves_everything(server)
    # Nothing of the old loop is left: no tracked connection, no open socket.
    loop = server._serving.loop.loop
    assert all(conn.home is loop for conn in server.clients.live)
    wait_for(lambda: established(ports) == 0, what="the old loop's connections closed")
    # Restarting and stopping go on working.
    manager.force_restart()
    assert server.running and server.ports == ports and serves_everything(server)


def test_a_loop_thread_stuck_past_the_restart_is_left_behind_and_cleans_up_later(
    busy_hub: tuple[TrainingStreamServer, list[Any]],
) -> None:
    """Still busy once the restart has waited for it: the new loop starts
    beside it; when it runs again it closes its own connections and ends."""
    server, _ = busy_hub
    manager = get_stream_server_manager()
    ports = server.ports
    old = server._serving.loop.thread
    release = block_loop(server)
    try:
        manager.force_restart()
        assert server.running and server.ports == ports
        assert old is not None and old.is_alive()  # still in the long callback
        assert serves_everything(server)
        new_loop = server._serving.loop.loop
        stalled = stalled_sse(server)
        wait_for(lambda: any(c.home is new_loop for c in server.clients.live), what="a new client")
    finally:
        release.set()
    wait_for(lambda: not old.is_alive(), what="the old loop thread ended")
    assert all(conn.home is new_loop for conn in server.clients.live)
    # Closing its channel, the old loop left the new one's socket file alone.
    channel = server._serving.channel
    assert channel is not None and channel.address.startswith("unix:")
    assert os.path.exists(channel.address[len("unix:") :])
    wait_for(lambda: established(ports) <= 1, what="only the new stalled client connected")
    stalled.close()
    manager.force_restart()
    assert server.running and server.ports == ports and serves_everything(server)


def test_stop_that_leaves_the_loop_thread_behind_still_lets_the_server_start() -> None:
    server = TrainingStreamServer(free_config(shutdown_timeout=0.5))
    server.start()
    ports = server.ports
    release = block_loop(server)
    try:
        with pytest.raises(Exception, match="did not exit"):
            server.stop()
        assert not server.running and not server.loop_thread_alive
    finally:
        release.set()
    server.start()
    try:
        assert server.running and serves_everything(server)
        assert server.ports.keys() == ports.keys()
    finally:
        server.stop()


def test_a_failing_close_step_still_stops_the_loop_and_restarts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = get_stream_server(config=free_config(shutdown_timeout=1.0))
    manager = get_stream_server_manager()
    ports = server.ports
    old = server._serving.loop.thread
    real_close = server._transports.close
    calls: list[float] = []

    async def failing_close(deadline: float) -> None:
        calls.append(deadline)
        if len(calls) == 1:
            raise RuntimeError("Event loop is closed")
        await real_close(deadline)

    monkeypatch.setattr(server._transports, "close", failing_close)
    manager.force_restart()
    assert calls and old is not None and not old.is_alive()
    assert server.running and server.ports == ports and serves_everything(server)


def test_a_stalled_client_its_stream_had_not_paused_is_closed_by_the_restart() -> None:
    """The kernel has taken all it will, a little waits in the transport (under
    the high-water mark, so the stream never paused): the stream ends
    normally at the restart, and its close would wait for a flush forever."""
    server = get_stream_server(config=free_config(shutdown_timeout=2.0, send_timeout=60.0))
    manager = get_stream_server_manager()
    ports = server.ports
    sock = stalled_sse(server)  # follows new events, reads nothing
    try:
        wait_for(lambda: server.client_counts()["sse"] == 1, what="the client streaming")
        (conn,) = server.clients.live
        wire = conn.wire
        assert wire is not None
        for _ in range(5000):  # one ~8 kB event at a time, until the kernel stops taking them
            committed(server, server.publish("blob", {"x": "y" * 8000}))
            if wire.get_write_buffer_size():
                break
        wait_for(lambda: wire.get_write_buffer_size(), what="data queued in the transport")
        assert conn.paused_since is None
        manager.force_restart()
        assert conn not in server.clients.live
        wait_for(lambda: established({"sse": ports["sse"]}) == 0, what="its connection closed")
    finally:
        sock.close()


def test_a_restart_drops_clients_that_read_nothing_at_once_and_the_others_get_their_shutdown_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stalled clients (connected, reading nothing, their transports paused)
    are not waited for: the restart drops them as soon as the clients that
    read (following new events) have their shutdown event, instead of waiting
    for its flush deadline (here ~23 s away: shutdown_timeout 30 s)."""
    server = get_stream_server(config=free_config(shutdown_timeout=30.0, send_timeout=600.0))
    manager = get_stream_server_manager()
    caplog.set_level(logging.INFO, logger="stream_hub")
    sockets: list[socket.socket] = []
    got: dict[str, Any] = {}

    def read_sse(stream: SSEStream) -> None:
        with stream:
            while (frame := stream.next()) is not None:
                if frame.event == "shutdown":
                    got["sse"] = frame.json
                    return

    def read_ws() -> None:
        with ws_open(server) as conn:
            opened.set()
            while (event := strict_json(conn.recv(timeout=60)))["type"] != "shutdown":
                pass
            got["ws"] = event

    opened = threading.Event()
    try:
        seq = 0
        for step in range(2000):  # ~1.8 MB of history to replay
            seq = server.log({f"metric_{k}": 1.0 + k for k in range(40)}, step=step, run="r")
        committed(server, seq)
        sockets = [stalled_sse(server, last_event_id=1) for _ in range(5)]
        sockets += [stalled_ws(server, "?since=1") for _ in range(5)]
        wait_for(
            lambda: sum(conn.paused_since is not None for conn in list(server.clients.live)) == 10,
            what="the ten stalled clients paused",
        )
        readers = [
            threading.Thread(target=read_sse, args=(SSEStream(f"{server.urls['sse']}/events"),)),
            threading.Thread(target=read_ws),
        ]
        for reader in readers:
            reader.start()
        assert opened.wait(10)
        wait_for(
            lambda: server.client_counts()["sse"] == server.client_counts()["ws"] == 6,
            what="the two readers counted",
        )
        manager.force_restart()
        for reader in readers:
            reader.join(30)
        assert server.clients.dropped_stalled == 10
        assert got["sse"]["data"]["restart"] is True and got["ws"]["data"]["restart"] is True
        # Nothing waited for the flush deadline: no stream, no connection was left for it.
        messages = [record.getMessage() for record in caplog.records]
        assert not [m for m in messages if "did not end within" in m or "at the flush deadline" in m]
        assert server.running and serves_everything(server)
    finally:
        for sock in sockets:
            sock.close()
        get_stream_server_manager().cleanup()


def test_sse_clients_that_reset_are_not_sent_the_rest_of_a_replay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Clients ask for a long replay and reset the connection at once: each
    stream stops at its first failed write, instead of "sending" the whole
    history into the reset connection without the loop ever yielding."""
    server = TrainingStreamServer(free_config())
    server.start()
    try:
        seq = 0
        for step in range(10_000):
            seq = server.log({"loss": 1.0, "acc": 0.5, "lr": 0.001}, step=step, run="r")
        committed(server, seq)
        caplog.set_level(logging.WARNING, logger="asyncio")
        delivered = server.status()["events"]["delivered"]
        clients = 20
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", server.ports["sse"]))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(b"GET /events?last_event_id=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            sock.close()  # a reset, the request already sent
        assert httpx.get(f"{server.urls['rest']}/health", timeout=10).status_code == 200
        wait_for(lambda: server.client_counts()["sse"] == 0 and not server.clients.live, what="all gone")
        # What a client may have been handed before its reset showed: one chunk.
        assert server.status()["events"]["delivered"] - delivered <= clients * MAX_CHUNK_EVENTS
        writes = [r for r in caplog.records if "socket.send() raised exception" in r.getMessage()]
        assert not writes
    finally:
        server.stop()


@pytest.mark.parametrize("face", ["sse", "ws"])
def test_connections_accepted_as_a_restart_begins_are_closed_by_it(
    face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of connections waits in the listener's backlog while the loop is
    busy, and is accepted in the very iteration the restart starts closing the
    listener: each is closed by the stop, none is left to the garbage collector."""
    server = get_stream_server(config=free_config(shutdown_timeout=2.0))
    manager = get_stream_server_manager()
    ports = server.ports
    port = ports[face]
    # Known once the restart has handed its shutdown to the (busy) loop.
    scheduled = threading.Event()
    schedule = asyncio.run_coroutine_threadsafe

    def scheduling(coro: Any, loop: asyncio.AbstractEventLoop) -> Any:
        future = schedule(coro, loop)
        scheduled.set()
        return future

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", scheduling)
    release = block_loop(server)
    clients: list[socket.socket] = []
    restart = threading.Thread(target=manager.force_restart)
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", port))
            request = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            if face == "ws":
                request = (
                    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
            sock.sendall(request)
            clients.append(sock)
        restart.start()
        wait_for(scheduled.is_set, what="the shutdown handed to the loop")
    finally:
        release.set()
    restart.join(30)
    assert server.running and server.ports == ports
    for sock in clients:
        sock.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert not [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    wait_for(lambda: established(ports) == 0, what="every connection of the burst closed")


def test_clients_that_stop_reading_are_evicted_before_the_kernel_holds_megabytes() -> None:
    """~1.8 MB of history, far less than the ~4 MiB Linux lets a socket's send
    buffer grow to: with the buffer capped, both stalled clients still pause,
    and are evicted after send_timeout."""
    server = TrainingStreamServer(free_config(send_timeout=0.3))
    server.start()
    sockets: list[socket.socket] = []
    try:
        seq = 0
        for step in range(1500):
            seq = server.log({f"metric_{k}": 1.0 + k for k in range(40)}, step=step, run="r")
        committed(server, seq)
        sockets = [stalled_sse(server, last_event_id=1), stalled_ws(server, "?since=1")]
        wait_for(lambda: server.clients.evicted == 2, what="both stalled clients evicted")
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


class _BrokenWire:
    """A transport whose abort fails (as on a loop that has closed)."""

    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True
        raise RuntimeError("Event loop is closed")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def get_write_buffer_size(self) -> int:
        return 0


class _Conn:
    def __init__(self, paused_since: float | None) -> None:
        self.wire: Any = _BrokenWire()
        self.paused_since = paused_since
        self.home: asyncio.AbstractEventLoop | None = None


def test_eviction_goes_on_after_a_connection_that_cannot_be_closed() -> None:
    server = TrainingStreamServer(free_config(send_timeout=0.3, heartbeat_interval=0.5))
    server.start()
    try:
        loop = server._serving.loop.loop
        assert loop is not None
        broken = _Conn(paused_since=0.0)  # paused since the clock began: evicted first
        loop.call_soon_threadsafe(server.clients.add, broken, None)
        wait_for(lambda: broken.wire.closing, what="the broken connection's eviction tried")
        seq = 0
        for _ in range(1200):  # ~5 MB: past the kernel's send buffer, so the client pauses
            seq = server.publish("blob", {"x": "y" * 4000})
        committed(server, seq)
        with contextlib.closing(stalled_sse(server, last_event_id=1)):
            wait_for(lambda: server.clients.evicted >= 2, what="the stalled client evicted")
        loop.call_soon_threadsafe(server.clients.discard, broken, None)
    finally:
        server.stop()


def test_connections_of_a_closed_loop_are_forgotten() -> None:
    server = TrainingStreamServer(free_config(send_timeout=0.3))
    server.start()
    closed = asyncio.new_event_loop()
    closed.close()
    try:
        stale = _Conn(paused_since=0.0)
        stale.home = closed
        server.clients.live.add(stale)
        wait_for(lambda: stale not in server.clients.live, what="the stale entry dropped")
        assert not stale.wire.closing  # not touched: its loop is gone
    finally:
        server.stop()
