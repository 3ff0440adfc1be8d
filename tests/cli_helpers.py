"""Helpers for tests that run the ``stream-hub`` command and the scripts as real
subprocesses: a clean environment, line readers with deadlines, and a running
``stream-hub serve`` on ports chosen by the kernel.

Every subprocess gets ``STREAM_HUB_PORT_CONFLICT=fail`` and port 0 defaults,
so nothing started here can end a process it finds on a port (this machine is
shared), and ``ENVIRONMENT`` is removed unless a test sets it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .conftest import wait_for

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "stream_hub"]
ZERO_PORTS = ["--sse-port", "0", "--ws-port", "0", "--rest-port", "0"]


def cli_env(**changes: str | None) -> dict[str, str]:
    """The test process's environment without any ``STREAM_HUB_*``/``ENVIRONMENT``,
    plus safe defaults; ``changes`` set (or, with ``None``, remove) variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_HUB_") and k != "ENVIRONMENT"}
    env.update(
        {
            "STREAM_HUB_SSE_PORT": "0",
            "STREAM_HUB_WS_PORT": "0",
            "STREAM_HUB_REST_PORT": "0",
            "STREAM_HUB_PORT_CONFLICT": "fail",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    prefix: Sequence[str] = CLI,
) -> subprocess.CompletedProcess[str]:
    """Run ``prefix + args`` to completion (bounded by ``timeout``), capturing text output."""
    return subprocess.run(
        [*prefix, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env if env is not None else cli_env(),
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A port that was free a moment ago (bound to 0, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Lines:
    """The lines of one pipe of a subprocess, collected by a thread so that tests
    can wait for them with a deadline instead of blocking in ``readline``."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait(self, predicate: Callable[[list[str]], Any], timeout: float = 15.0, what: str = "output") -> Any:
        return wait_for(lambda: predicate(list(self.lines)), timeout, what)

    def first(self, timeout: float = 20.0) -> str:
        return str(self.wait(lambda lines: lines[0] if lines else None, timeout, "first line"))

    def finish(self, timeout: float = 10.0) -> list[str]:
        """All lines, once the pipe has closed (call after the process exited)."""
        self._thread.join(timeout)
        return list(self.lines)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Proc:
    """A running subprocess with both pipes collected."""

    popen: subprocess.Popen[str]
    out: Lines
    err: Lines

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        code = self.popen.wait(timeout=timeout)
        self.out.finish()
        self.err.finish()
        return code

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it lingers."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


@dataclass
class Served(Proc):
    """A ``stream-hub serve`` (or ``demo``) that printed its ready line."""

    ports: dict[str, int] = field(default_factory=dict)

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.ports['rest']}"

    def status(self) -> dict[str, Any] | None:
        """``GET /api/status``, or None while nothing answers."""
        try:
            response = httpx.get(self.rest + "/api/status", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def publish(self, events: list[dict[str, Any]]) -> list[int]:
        response = httpx.post(self.rest + "/api/publish", json={"events": events}, timeout=10)
        assert response.status_code == 200, response.text
        return list(response.json()["seqs"])

    def port_args(self) -> list[str]:
        return [
            "--sse-port",
            str(self.ports["sse"]),
            "--ws-port",
            str(self.ports["ws"]),
            "--rest-port",
            str(self.ports["rest"]),
        ]


class Spawner:
    """Starts subprocesses and ends every one still running at teardown."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(
        self, args: Sequence[str], *, env: dict[str, str] | None = None, prefix: Sequence[str] = CLI
    ) -> Proc:
        popen = subprocess.Popen(
            [*prefix, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env if env is not None else cli_env(),
        )
        proc = Proc(popen, Lines(popen.stdout), Lines(popen.stderr))
        self.procs.append(proc)
        return proc

    def serve(
        self,
        *args: str,
        command: str = "serve",
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = CLI,
        ports: Sequence[str] = ZERO_PORTS,
    ) -> Served:
        """``serve --json`` (or ``demo``) on ``ports``; returns once it printed its ports."""
        proc = self.start([command, *ports, "--json", *args], env=env, prefix=prefix)
        served = Served(proc.popen, proc.out, proc.err)
        self.procs[-1] = served
        try:
            first = proc.out.first()
        except AssertionError:
            raise AssertionError(
                f"{command} printed no ready line; exit code {proc.popen.poll()}; stderr:\n{proc.err.text}"
            ) from None
        ready = json.loads(first)
        served.ports = {name: int(port) for name, port in ready["ports"].items()}
        assert ready["pid"] == proc.pid
        return served

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


def spawner() -> Iterator[Spawner]:
    """Body of the ``spawn`` fixtures (function- or module-scoped)."""
    spawned = Spawner()
    try:
        yield spawned
    finally:
        spawned.close()
