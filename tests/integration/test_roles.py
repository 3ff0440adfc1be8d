"""``server.role`` is a real role from start to stop: across restarts, a
fork and a hand-over from another process it never reads ``None`` (the
contract's "Role"); ``None`` only before start and after stop.

A sampler thread reads ``server.role`` as fast as it can while the server
changes; every value it saw is checked.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import httpx
import pytest

from stream_hub import StreamConfig, TrainingStreamServer

from ..conftest import wait_for
from ..processes import Spawner, free_ports
from .test_processes import done, hub_env, release, start


class RoleSampler:
    """Reads ``server.role`` in a tight loop on its own thread; keeps each change."""

    def __init__(self, server: TrainingStreamServer) -> None:
        self.server = server
        self.seen: list[str | None] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last: object = object()
        while not self._stop.is_set():
            role = self.server.role
            self.reads += 1
            if role != last:
                self.seen.append(role)
                last = role

    def __enter__(self) -> RoleSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        reads = self.reads  # let it read the final state at least once more
        wait_for(lambda: self.reads > reads + 1, what="the sampler reading the final state")
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def server() -> Iterator[TrainingStreamServer]:
    server = TrainingStreamServer(StreamConfig(sse_port=0, ws_port=0, rest_port=0, port_conflict="fail"))
    try:
        yield server
    finally:
        server.stop()


def test_a_host_is_host_through_every_restart_and_none_only_outside_start_and_stop(
    server: TrainingStreamServer,
) -> None:
    assert server.role is None
    with RoleSampler(server) as sampler:
        wait_for(lambda: sampler.reads > 0, what="the sampler running")
        server.start()
        for _ in range(3):
            server.restart()
            server.log({"loss": 1.0})
        server.stop()
    assert sampler.seen == [None, "host", None], sampler.seen
    assert server.role is None and server.status()["role"] == "stopped"


def test_a_forked_child_of_a_host_is_forked_at_once_and_names_its_parent_as_host(
    server: TrainingStreamServer,
) -> None:
    server.start()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the role the at-fork hook left, then leave at once
        try:
            os.write(write, f"{server.role} {server.status()['host']['pid']}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child_role = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # It names its parent as its hub's host, not itself.
    assert child_role == f"forked {os.getpid()}"
    assert server.role == "host"


def test_a_joined_process_is_joined_then_host_through_a_hand_over(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, ready = start(spawn, hub_env(ports), "--steps", "10", "--interval", "0", "--run", "a", "--hold")
    assert ready["ready"] == "host"
    sse, ws, rest = ports
    config = StreamConfig(sse_port=sse, ws_port=ws, rest_port=rest, port_conflict="auto", stale_timeout=1.5)
    server = TrainingStreamServer(config)
    try:
        with RoleSampler(server) as sampler:
            wait_for(lambda: sampler.reads > 0, what="the sampler running")
            server.start()
            assert server.role == "joined"
            server.log({"loss": 2.0}, step=1, run="b")
            release(host)
            done(host)
            wait_for(lambda: server.role == "host", timeout=30, what="this process hosting")
            health = httpx.get(f"{ready['urls']['rest']}/health", timeout=5).json()
            assert health["pid"] == os.getpid()
            server.stop()
        assert sampler.seen == [None, "joined", "host", None], sampler.seen
    finally:
        server.stop()
