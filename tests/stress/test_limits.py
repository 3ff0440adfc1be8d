"""Limits under exhaustion: a server whose process runs out of file
descriptors logs it once per interval, and serves again once they come back."""

from __future__ import annotations

import select
import socket
import subprocess
import time
from typing import Any

import httpx

from ..conftest import wait_for
from ..processes import PYTHON, REPO, child_env

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
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{rest}/health", timeout=2).status_code == 200,
            timeout=15,
            what="the server answering again",
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
