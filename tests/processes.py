"""Real processes for the tests, and the ports they hold: the ``stream-hub``
command and the scripts, holders sitting on a port, Python snippets in a
fresh interpreter; free ports, each test process's own.

Every child imports *this* checkout's ``stream_hub`` (it comes first on
``PYTHONPATH``: an editable install may point at another checkout) and runs
with ``STREAM_HUB_PORT_CONFLICT=fail`` and port 0 defaults, so nothing
started here can end a process it finds on a port (this machine is shared);
``ENVIRONMENT`` and other ``STREAM_HUB_*`` variables are removed unless a
test sets them, but for ``STREAM_HUB_HOME``: the session's own data directory
(``conftest.py``), never the user's. Every wait has a deadline; every child still running at
teardown is ended.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = [sys.executable]
CLI = [sys.executable, "-m", "stream_hub"]
ZERO_PORTS = ["--sse-port", "0", "--ws-port", "0", "--rest-port", "0"]

# Listens on argv[1] and ignores SIGTERM given --ignore-sigterm, so only SIGKILL
# ends it. Other argv words only label the command line.
LISTENER = textwrap.dedent(
    """
    import signal, socket, sys
    if "--ignore-sigterm" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    srv = socket.socket()
    # As most servers do (http.server too): otherwise a connection it closed
    # first lingers in TIME_WAIT and keeps the port "in use" after it exits.
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen()
    while True:
        srv.accept()[0].close()
    """
)


# -- ports -------------------------------------------------------------------------------


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections and port-0 binds."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # the Linux default (macOS starts at 49152)


def _worker_ports() -> range:
    """The ports this test process chooses from: below the ephemeral range,
    so no connection of any process is given one between the test choosing
    it and binding it; under pytest-xdist, a slice per worker, so two workers
    never choose the same port."""
    low, high = 10_000, _ephemeral_low()
    if high - low < 4_000:  # a kernel that hands out (nearly) every port: use them all
        low, high = 1_024, 65_536
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    # A worker that replaces a crashed one gets the next name (gw4 of 4): it shares a slice.
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % max(1, workers)
    size = (high - low) // max(1, workers)
    return range(low + worker * size, low + (worker + 1) * size)


_PORTS = _worker_ports()
_random = random.Random()  # its own: tests that seed the module-wide one do not repeat ports
_given: set[int] = set()  # handed out by this process (never twice, as far as the range allows)


def _bindable(port: int, host: str, family: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except (OSError, OverflowError):
            return False
    return True


def free_port(host: str = "127.0.0.1", family: int = socket.AF_INET) -> int:
    """A port that was free a moment ago, and that no other test chooses (see :func:`_worker_ports`)."""
    # At random, as the kernel picks ephemeral ports: two calls rarely give
    # neighbours, which the "next" port policy would take for each other.
    if len(_given) > len(_PORTS) // 2:
        _given.clear()
    for _ in range(1000):
        port = _random.choice(_PORTS)
        if port not in _given and _bindable(port, host, family):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago."""
    return [free_port() for _ in range(n)]


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept connections on ``port``?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def port_is_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """As the next server would: SO_REUSEADDR, bind, listen."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1)
        return True
    except OSError:
        return False
    finally:
        sock.close()


# -- processes ---------------------------------------------------------------------------


# Kept from the test process's environment although they start with STREAM_HUB_.
KEPT = ("STREAM_HUB_HOME",)
# Not kept: the test process's own run, which its multiprocessing children would take.
DROPPED = ("ENVIRONMENT", "_STREAM_HUB_PARENT_RUN")


def child_env(**changes: str | None) -> dict[str, str]:
    """The test process's environment without ``STREAM_HUB_*`` (but
    ``STREAM_HUB_HOME``), ``ENVIRONMENT`` or the parent-run marker, plus safe
    defaults and this checkout first on ``PYTHONPATH``; ``changes`` set (or,
    with ``None``, remove) variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if (k in KEPT or not k.startswith("STREAM_HUB_")) and k not in DROPPED
    }
    env.update(
        {
            "STREAM_HUB_SSE_PORT": "0",
            "STREAM_HUB_WS_PORT": "0",
            "STREAM_HUB_REST_PORT": "0",
            "STREAM_HUB_PORT_CONFLICT": "fail",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
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
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """Run ``prefix + args`` to completion (bounded by ``timeout``), capturing text output."""
    return subprocess.run(
        [*prefix, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env if env is not None else child_env(),
        timeout=timeout,
        check=False,
    )


def run_python(code: str, timeout: float = 60, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) with ``python [args] -c``."""
    return run(["-c", textwrap.dedent(code)], prefix=[*PYTHON, *args], timeout=timeout)


def alive(proc: subprocess.Popen[Any]) -> bool:
    return proc.poll() is None


def wait_listening(proc: subprocess.Popen[Any], port: int, within: float = 15.0) -> None:
    """Poll until ``proc`` accepts on ``port``; waiting on the process between polls."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if accepts(port):
            return
        try:
            proc.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"holder exited early with code {proc.returncode}")
    pytest.fail(f"nothing listened on port {port} within {within} s")


class Lines:
    """The lines of one pipe of a subprocess, collected by a thread so that tests
    can wait for them with a deadline instead of blocking in ``readline``."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._arrived:
                self.lines.append(line.rstrip("\n"))
                self._arrived.notify_all()

    def wait(self, predicate: Callable[[list[str]], Any], timeout: float = 15.0, what: str = "output") -> Any:
        """What ``predicate(lines)`` returns once it is truthy (asked again at every new line)."""
        with self._arrived:
            value = self._arrived.wait_for(lambda: predicate(list(self.lines)), timeout)
        if not value:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        return value

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
    kill_at_teardown: bool = False  # SIGKILL at once instead of SIGTERM first

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
        """Teardown: SIGTERM, then SIGKILL if it lingers (or SIGKILL straight away)."""
        if self.popen.poll() is None:
            if self.kill_at_teardown:
                self.popen.kill()
            else:
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
    """Starts subprocesses and ends every one still running when it closes
    (the ``spawn`` fixtures; also a context manager)."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = CLI,
        stdin: bool = False,
    ) -> Proc:
        """``prefix + args`` with its output read into lines (``stdin``: a pipe for the test to write to)."""
        popen = subprocess.Popen(
            [*prefix, *args],
            stdin=subprocess.PIPE if stdin else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env if env is not None else child_env(),
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

    def holder(self, port: int, *, kind: str = "http", extra: Sequence[str] = ()) -> subprocess.Popen[str]:
        """A process listening on ``port``, returned once it accepts: ``python -m
        http.server`` or (``kind="listener"``) :data:`LISTENER` with ``extra``
        arguments. Killed outright at teardown."""
        if kind == "http":
            args = ["-m", "http.server", str(port), "--bind", "127.0.0.1"]
        else:
            args = ["-c", LISTENER, str(port), *extra]
        proc = self.start(args, prefix=PYTHON)
        proc.kill_at_teardown = True
        wait_listening(proc.popen, port)
        return proc.popen

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()

    def __enter__(self) -> Spawner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
