"""Limits under load and exhaustion: 100 MB of events past clients that never
read leave memory bounded by history; a server whose process runs out of file
descriptors logs it once per interval, and serves again once they come back."""

from __future__ import annotations

import gc
import select
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil

from stream_hub import TrainingStreamServer

from ..clients import stalled_sse, ws_open
from ..conftest import wait_for
from ..processes import PYTHON, REPO, child_env

# -- subscribers that never read ------------------------------------------------------------------


def test_never_reading_clients_do_not_grow_memory(make_server: Callable[..., TrainingStreamServer]) -> None:
    """A never-reading SSE and WebSocket client while 100 MB of events go by:
    the server's memory stays bounded by history, and a reader that comes
    back is told what it missed with a gap."""
    # No store: its queue (bounded in events) would hold the blobs until written,
    # and it would answer the returning reader instead of a gap; this is about clients.
    server = make_server(history_size=100, store=False)
    proc = psutil.Process()
    sse = stalled_sse(server)
    # The sync client's reader thread stops reading once 16 frames are queued.
    conn = ws_open(server, max_size=None).__enter__()
    try:
        wait_for(
            lambda: server.status()["clients"]["sse"] == 1 and server.status()["clients"]["ws"] == 1,
            what="both clients connected",
        )
        blob = "x" * 20_000
        gc.collect()
        rss_before = proc.memory_info().rss
        peak = rss_before
        for i in range(5000):  # 5 000 x 20 KB = 100 MB
            server.publish("blob", {"i": i, "blob": blob})
            if i % 250 == 0:
                wait_for(lambda i=i: server.hub.head >= i, what="commit")
                peak = max(peak, proc.memory_info().rss)
        last = server.publish("blob", {"i": "last"})
        wait_for(lambda: server.hub.head >= last, what="the last commit")
        peak = max(peak, proc.memory_info().rss)
        status = server.status()
        assert status["history"]["size"] <= 100
        growth = (peak - rss_before) / 1e6
        assert growth < 60, f"RSS grew by {growth:.0f} MB for 100 MB published with history_size=100"
        # The stalled SSE client, reading at last, is told what it missed.
        sse.settimeout(5)
        seen = b""
        while b"event: gap" not in seen and len(seen) < 50_000_000:
            part = sse.recv(1 << 20)
            assert part, "the stream ended before any gap"
            seen += part
        assert b'"reason":"behind"' in seen
    finally:
        sse.close()
        conn.close()


# -- running out of file descriptors -----------------------------------------------------------------

FD_SERVER = """
import resource, sys, threading
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
from stream_hub import StreamConfig, TrainingStreamServer
server = TrainingStreamServer(StreamConfig(sse_port=0, ws_port=0, rest_port=0, port_conflict="fail"))
server.start()
print(server.ports["rest"], server.ports["sse"], flush=True)
sys.stdin.readline()
server.stop()
"""


def test_descriptor_exhaustion_is_logged_once_per_interval_and_recovers(tmp_path: Any) -> None:
    err = (tmp_path / "stderr").open("w+")
    proc = subprocess.Popen(
        [*PYTHON, "-c", FD_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        cwd=REPO,
        env=child_env(),
    )
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        rest, sse = (int(p) for p in proc.stdout.readline().split())
        for i in range(400):
            try:
                socks.append(socket.create_connection(("127.0.0.1", rest if i % 2 else sse), timeout=2))
            except OSError:
                break
        # Hold them for a few seconds of refused accepts.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            select.select([], [], [], 0.1)
        for sock in socks:
            sock.close()
        socks.clear()
        # Both exhausted listeners serve again (a stop while one is still in
        # asyncio's one-second accept back-off would race its retry timer).
        for port in (rest, sse):
            wait_for(
                lambda port=port: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200,
                timeout=15,
                what=f"port {port} answering again",
            )
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        for sock in socks:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err.seek(0)
    log = err.read()
    assert log.count("Traceback") == 0, log[-3000:]
    assert log.count("out of system resources") <= 2, log[-3000:]
    assert len(log) < 20_000, f"{len(log)} bytes of stderr"
