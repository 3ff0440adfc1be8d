"""A restart is not a death: a joined process whose host said it restarts
keeps buffering and tries that host again; it never looks for another host
(an election would have it host itself and split the job in two).

A stand-in host on a real Unix socket plays the channel's side: it welcomes
the forwarder, then closes (with or without saying ``restarting``), and from
then on drops every connection at once, as a host does while it restarts.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_hub.core.intake import Intake
from stream_hub.processes.channel import JoinTarget, frame, recv_frame
from stream_hub.processes.joined import Forwarder

from ..conftest import wait_for


class StandInHost:
    """Accepts joiners on a Unix socket; the first one is welcomed, then told
    ``restarting`` (if asked) and dropped; later ones are dropped at once."""

    def __init__(self, path: Path, say_restarting: bool) -> None:
        self.say_restarting = say_restarting
        self.attempts = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(16)
        self.address = f"unix:{path}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.attempts += 1
            with conn:
                if self.attempts > 1:
                    continue  # restarting: nobody home
                recv_frame(conn)  # hello
                conn.sendall(frame({"op": "welcome", "epoch": "e", "pid": 1, "acked": 0, "last_seq": 0}))
                if self.say_restarting:
                    conn.sendall(frame({"op": "restarting", "for": 30}))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are short: not under pytest's long tmp_path.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="shr-") as directory:
        yield Path(directory)


@pytest.mark.parametrize("say_restarting", [True, False])
def test_a_joined_process_never_looks_for_another_host_while_its_host_restarts(
    socket_dir: Path, say_restarting: bool
) -> None:
    host = StandInHost(socket_dir / "hub.sock", say_restarting)
    looked: list[int] = []

    def find_host() -> JoinTarget | None:
        looked.append(1)
        return None

    intake = Intake(lambda batch, count: None, numbered=False)
    target = JoinTarget(host.address, "token", os.getpid(), {"sse": 1, "ws": 2, "rest": 3}, {}, "e")
    forwarder = Forwarder(intake, target, find_host)
    intake.set_sink(forwarder.take, numbered=False)  # as the server routes a joined process
    forwarder.start()
    try:
        intake.log({"loss": 1.0}, step=1)
        # The forwarder reconnects again and again while the host is away.
        wait_for(lambda: host.attempts >= 4, timeout=60, what="reconnect attempts")
        if say_restarting:
            assert looked == []  # it waited for its host: no election
            intake.commit()  # the event waits (in the intake) for the host to come back
            assert forwarder.queued == 1
        else:
            wait_for(lambda: looked, timeout=30, what="an election once the host was lost")
    finally:
        forwarder.close(0.5)
        host.close()
