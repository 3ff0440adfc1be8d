"""A ``stream-hub serve`` subprocess in a registry of its own, and how this
process (and the processes it starts) join it.

The serve process and this one get one fresh, private ``XDG_RUNTIME_DIR``
(0700), so they meet in a per-user registry nothing else on the machine uses:
a process asking for the served hub's ports with ``port_conflict="auto"``
joins it and never disturbs another hub of this user.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["ServedHub", "private_registry"]

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free a moment ago (bound all at once, then closed)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@contextmanager
def private_registry() -> Iterator[str]:
    """A fresh 0700 ``XDG_RUNTIME_DIR`` for this process (and what it starts)."""
    previous = os.environ.get("XDG_RUNTIME_DIR")
    with tempfile.TemporaryDirectory(prefix="stream-hub-bench-") as runtime:
        os.chmod(runtime, 0o700)
        os.environ["XDG_RUNTIME_DIR"] = runtime
        try:
            yield runtime
        finally:
            if previous is None:
                os.environ.pop("XDG_RUNTIME_DIR", None)
            else:
                os.environ["XDG_RUNTIME_DIR"] = previous


class ServedHub:
    """A ``stream-hub serve`` subprocess on fixed free ports, and how to join it.

    A joined process is not told the seq of what it logs (``log()`` returns
    None): the hub's last_seq, read over REST while nothing publishes, is the
    seq before the next event it logs.

    Raises:
        RuntimeError: the serve process exited, or said nothing within
            ``start_timeout`` seconds.
    """

    def __init__(self, runtime_dir: str, start_timeout: float = 60.0) -> None:
        self.errors = ""  # the end of the serve process's stderr, once it has ended
        sse, ws, rest = _free_ports(3)
        self.configured = {"sse_port": sse, "ws_port": ws, "rest_port": rest}
        # STREAM_HUB_HOME stays: a run under the tests keeps to their data directory.
        env = {
            k: v
            for k, v in os.environ.items()
            if (not k.startswith("STREAM_HUB_") or k == "STREAM_HUB_HOME") and k != "ENVIRONMENT"
        }
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env["XDG_RUNTIME_DIR"] = runtime_dir
        self._stderr = open(Path(runtime_dir) / "serve.stderr", "w+")  # closed in _end
        args = [f"--{name.replace('_', '-')}={port}" for name, port in self.configured.items()]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_hub", "serve", "--json", f"--host={HOST}", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        # It prints one JSON line once serving, and flushes it.
        readable, _, _ = select.select([self.proc.stdout], [], [], start_timeout)
        line = self.proc.stdout.readline() if readable else ""
        if not line:
            self._end()
            raise RuntimeError(f"stream-hub serve did not start (exit {self.proc.returncode}): {self.errors}")
        # "auto" may have taken other ports than the configured ones; clients go
        # where it really serves, joiners ask for the configured ones.
        self.ports = {k: int(v) for k, v in json.loads(line)["ports"].items()}
        self._rest = http.client.HTTPConnection(HOST, self.ports["rest"], timeout=10)
        self.polls = 0  # GET /health so far (each costs the hub a few hundred µs of CPU)

    def _get(self, path: str) -> dict[str, Any]:
        """One GET on a kept-alive connection (cheap enough to poll every few ms)."""
        try:
            status, body = self._request(path)
        except (OSError, http.client.HTTPException):
            self._rest.close()  # the server closed the idle connection: once more, anew
            status, body = self._request(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        answer: dict[str, Any] = json.loads(body)
        return answer

    def _request(self, path: str) -> tuple[int, bytes]:
        self._rest.request("GET", path)
        response = self._rest.getresponse()
        return response.status, response.read()

    def last_seq(self) -> int:
        """``/api/status``'s last_seq (it commits what is pending first)."""
        return int(self._get("/api/status")["last_seq"])

    def wait_seq(
        self, target: int, timeout: float, poll: float = 0.002, give_up: Callable[[], bool] | None = None
    ) -> int:
        """Poll until the hub's last_seq reaches ``target``, the serve process
        ends or ``give_up()`` is true (then read once more); the last seq seen.

        Polls ``/health`` (it also says last_seq): ``/api/status`` encodes every
        event on the host's loop first, work the hub would not otherwise do.
        """
        deadline = time.perf_counter() + timeout
        while True:
            self.polls += 1
            seq = int(self._get("/health")["last_seq"])
            if seq >= target or time.perf_counter() > deadline or self.proc.poll() is not None:
                return seq
            if give_up is not None and give_up():
                return int(self._get("/health")["last_seq"])
            _pause(poll)

    def config(self) -> dict[str, Any]:
        """The StreamConfig fields of a process that meets this hub and joins it."""
        return {"host": HOST, "port_conflict": "auto", **self.configured}

    def join(self, shared_memory: bool = True) -> Any:
        """A started TrainingStreamServer of this process, joined to the hub
        (over a shared-memory ring, or with ``shared_memory=False`` the socket)."""
        from stream_hub import StreamConfig, TrainingStreamServer

        server = TrainingStreamServer(StreamConfig(**self.config(), shared_memory=shared_memory))
        server.start()
        if server.role != "joined":
            server.stop()
            raise RuntimeError(f"expected to join the served hub, got role {server.role!r}")
        return server

    def cpu_seconds(self) -> float:
        import psutil

        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self._rest.close()
        self._end()

    def _end(self) -> None:
        """End the serve process; keep the end of what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: serve stops cleanly, ports verified
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.seek(0)
        self.errors = self._stderr.read()[-2000:]
        self._stderr.close()
