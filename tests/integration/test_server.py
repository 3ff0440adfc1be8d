"""TrainingStreamServer lifecycle: bind all or none, verified release, no leaks,
clean under -X dev, at exit and across fork."""

from __future__ import annotations

import os
import socket
import textwrap
import threading
import time

import httpx
import psutil
import pytest

from stream_hub import (
    PortInUseError,
    StreamConfig,
    StreamHubError,
    TrainingStreamServer,
    get_stream_server,
    release_stream_server,
)
from stream_hub.ports import is_port_in_use

from ..conftest import free_config
from ..processes import free_ports, run_python


def test_start_binds_the_configured_ports_and_stop_verifies_their_release() -> None:
    sse, ws, rest = free_ports(3)
    server = TrainingStreamServer(
        StreamConfig(sse_port=sse, ws_port=ws, rest_port=rest, port_conflict="fail")
    )
    server.start()
    assert server.ports == {"sse": sse, "ws": ws, "rest": rest}
    assert server.urls["ws"] == f"ws://127.0.0.1:{ws}"
    assert all(is_port_in_use(p) for p in (sse, ws, rest))
    server.stop()
    assert not any(is_port_in_use(p) for p in (sse, ws, rest))
    assert server.ports == {} and not server.loop_thread_alive
    server.stop()  # idempotent


@pytest.mark.parametrize("blocked", ["sse", "ws", "rest"])
def test_a_blocked_port_leaves_nothing_bound(blocked: str) -> None:
    ports = dict(zip(("sse", "ws", "rest"), free_ports(3)))
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", ports[blocked]))
    blocker.listen()
    try:
        server = TrainingStreamServer(
            StreamConfig(
                sse_port=ports["sse"], ws_port=ports["ws"], rest_port=ports["rest"], port_conflict="fail"
            )
        )
        with pytest.raises(PortInUseError) as info:
            server.start()
        assert info.value.port == ports[blocked]
        assert info.value.pid == os.getpid()  # it is this very test holding it
        assert f"in use by this process (pid {os.getpid()})" in str(info.value)
        for name, port in ports.items():
            if name != blocked:
                assert not is_port_in_use(port), f"{name} port left bound"
        assert not server.running and not server.loop_thread_alive
    finally:
        blocker.close()


def test_start_and_stop_take_no_sleep_ticks(server: TrainingStreamServer) -> None:
    # uvicorn's own shutdown path waits 0.1 s at least once; ours must not.
    started = time.perf_counter()
    server.stop()
    elapsed = time.perf_counter() - started
    print(f"stop with verified release: {elapsed * 1000:.1f} ms")
    assert elapsed < 0.1 * 5  # generous: shared CI machine; the benchmark reports the real figure


def test_get_log_release_cycles_leave_fds_and_threads_where_they_started() -> None:
    cfg = free_config()
    process = psutil.Process()

    def cycle() -> None:
        server = get_stream_server(config=cfg)
        server.log({"loss": 1.0}, step=1)
        with httpx.Client() as client:
            assert client.get(server.urls["rest"] + "/health").status_code == 200
            with client.stream("GET", server.urls["sse"] + "/events", params={"last_event_id": 0}) as stream:
                for line in stream.iter_lines():
                    if line.startswith("event: metric"):
                        break
        release_stream_server()

    cycle()  # warm imports and lazily created objects
    fds, threads = process.num_fds(), threading.active_count()
    for _ in range(25):
        cycle()
    assert process.num_fds() == fds
    assert threading.active_count() == threads


def test_dev_mode_cycles_print_no_asyncio_or_resource_warnings() -> None:
    code = """
        import asyncio, json, warnings
        import httpx
        from websockets.sync.client import connect
        from stream_hub import StreamConfig, get_stream_server, release_stream_server, \\
            get_stream_server_manager

        cfg = StreamConfig(sse_port=0, ws_port=0, rest_port=0, port_conflict="fail")
        for i in range(10):
            server = get_stream_server(config=cfg)
            for step in range(20):
                last = server.log({"loss": 1.0 / (step + 1)}, step=step, run="dev")
            with connect(server.urls["ws"] + "/") as ws:
                ws.send(json.dumps({"op": "subscribe", "since": 0}))
                while json.loads(ws.recv(timeout=5))["seq"] < last:
                    pass
                with httpx.stream("GET", server.urls["sse"] + "/events?last_event_id=0") as r:
                    next(r.iter_lines())
                    get_stream_server_manager().force_restart()
                    # the server said goodbye with 1001 on this connection
                    while True:
                        try:
                            event = json.loads(ws.recv(timeout=5))
                        except Exception:
                            break
                assert ws.close_code == 1001, ws.close_code
            server.log({"loss": 0.5}, step=99, run="dev")
            release_stream_server()
        print("done")
    """
    result = run_python(code, 120, "-X", "dev", "-W", "default")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done" in result.stdout
    for phrase in ("Task was destroyed", "never retrieved", "never awaited", "ResourceWarning", "Traceback"):
        assert phrase not in result.stderr, result.stderr[-3000:]


def test_process_exits_cleanly_with_the_server_running() -> None:
    code = """
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        from stream_hub import StreamConfig, get_stream_server
        server = get_stream_server(config=StreamConfig(sse_port=0, ws_port=0, rest_port=0))
        server.log({"loss": 1.0})
        print(server.ports["sse"], server.ports["ws"], server.ports["rest"])
        # no release: atexit must stop it
    """
    result = run_python(code, 60, "-X", "dev")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "verified free" in result.stderr
    for port in map(int, result.stdout.split()):
        assert not is_port_in_use(port)


def test_a_forked_child_sends_to_its_parents_hub_and_never_serves() -> None:
    """Contract v2: the child holds no references of its parent's; its server
    (the inherited one, also what get_stream_server() gives it) forwards to
    the parent's hub; the parent is not touched."""
    code = """
        import os, sys, time, httpx
        from stream_hub import StreamConfig, get_stream_server, get_stream_server_manager, \\
            release_stream_server
        cfg = StreamConfig(sse_port=0, ws_port=0, rest_port=0, port_conflict="fail")
        parent = get_stream_server(config=cfg)
        parent.log({"x": 1}, run="parent")
        pid = os.fork()
        if pid == 0:
            ok = True
            mgr = get_stream_server_manager()
            ok &= mgr.ref_count == 0
            child = get_stream_server(config=cfg)
            ok &= child is parent and child.role == "forked" and child.ports == parent.ports
            ok &= child.log({"y": 2}, run="child") is None  # the parent's hub numbers it
            ok &= not child.loop_thread_alive
            release_stream_server()
            mgr.cleanup()
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert get_stream_server_manager().status()["ref_count"] == 1
        assert parent.role == "host"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            runs = {r["run"] for r in httpx.get(parent.urls["rest"] + "/api/runs").json()["runs"]}
            if "child" in runs:
                break
        assert runs == {"parent", "child"}, runs
        parent.log({"x": 3})
        release_stream_server()
        print("parent ok")
    """
    result = run_python(code, 60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parent ok" in result.stdout


# -- hardening: fork, stop, announce -------------------------------------------------------------


def test_a_forked_child_holds_none_of_the_servers_sockets() -> None:
    """The child lets go of the listeners and the client connections: the
    parent restarts (twice) while it lives, without touching it, and a client
    connected at fork time gets the shutdown event and the end of its stream."""
    code = """
        import os, socket, time, psutil
        from stream_hub import StreamConfig, TrainingStreamServer
        server = TrainingStreamServer(StreamConfig(sse_port=0, ws_port=0, rest_port=0))
        server.start()
        ports = set(server.ports.values())
        sse = socket.create_connection(("127.0.0.1", server.ports["sse"]), timeout=10)
        sse.sendall(b"GET /events HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
        while server.status()["clients"]["sse"] != 1:
            time.sleep(0.01)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        child = psutil.Process(pid)
        deadline = time.monotonic() + 10
        while True:
            held = [c for c in child.net_connections("tcp") if c.laddr and c.laddr.port in ports]
            if not held or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert held == [], held
        server.restart()
        server.restart()
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        data = b""
        while True:
            part = sse.recv(65536)
            if not part:
                break
            data += part
        assert b"event: shutdown" in data, data[-500:]
        os.write(w, b"x")
        os.waitpid(pid, 0)
        server.stop()
        print("ok")
    """
    result = run_python(code, 90)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout


def test_events_logged_while_the_server_stops_are_all_stored() -> None:
    for attempt in range(10):
        server = TrainingStreamServer(free_config())
        server.start()
        stop = threading.Event()

        def publish(server: TrainingStreamServer, stop: threading.Event) -> None:
            while not stop.is_set():
                server.log({"x": 1})

        publisher = threading.Thread(target=publish, args=(server, stop))
        publisher.start()
        while server.hub.last_seq < 2000:
            stop.wait(0.001)
        server.stop()
        stop.set()
        publisher.join()
        after = [server.log({"after": i}) for i in range(5)][-1]
        assert server.hub.head == server.hub.last_seq == after, (attempt, server.hub.head, after)
        assert server.status()["last_seq"] == after


def test_stop_timeout_bounds_the_whole_stop_even_with_a_stuck_loop() -> None:
    server = TrainingStreamServer(free_config())
    server.start()
    release = threading.Event()
    loop = server._serving.loop.loop
    assert loop is not None
    loop.call_soon_threadsafe(release.wait, 30)  # user code that blocks the loop
    started = time.monotonic()
    try:
        with pytest.raises(StreamHubError, match="did not exit"):
            server.stop(timeout=1.0)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert elapsed < 2.5, f"stop(timeout=1.0) took {elapsed:.1f} s"
    server.stop()
    assert not server.loop_thread_alive


def test_a_library_user_without_logging_sees_the_dashboard_url_once() -> None:
    code = """
        from stream_hub import StreamConfig, get_stream_server, release_stream_server
        server = get_stream_server(config=StreamConfig(sse_port=0, ws_port=0, rest_port=0))
        print(server.urls["rest"])
        release_stream_server()
    """
    bare = run_python(code)
    assert bare.returncode == 0, bare.stderr[-2000:]
    rest = bare.stdout.split()[0]
    assert bare.stderr.count("stream_hub serving") == 1 and f"dashboard {rest}/" in bare.stderr
    configured = run_python(
        "import logging; logging.basicConfig(level=logging.WARNING)\n" + textwrap.dedent(code)
    )
    assert configured.returncode == 0, configured.stderr[-2000:]
    assert "stream_hub serving" not in configured.stderr
