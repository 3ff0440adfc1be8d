"""Starting and restarting a hub never changes the mode of files the
training process creates meanwhile (its channel's socket used to be bound
under a process-wide umask of 0o177 for a moment: a file a training thread
created then was owner-only)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from stream_hub import StreamConfig, TrainingStreamServer


def test_files_created_while_the_hub_restarts_keep_the_processs_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    stop = threading.Event()
    modes: set[int] = set()
    count = [0]

    def create_files() -> None:  # a training thread writing checkpoints, logs, ...
        while not stop.is_set():
            path = tmp_path / f"f{count[0]}"
            path.write_bytes(b"x")
            modes.add(stat.S_IMODE(path.stat().st_mode))
            path.unlink()
            count[0] += 1

    server = TrainingStreamServer(StreamConfig(sse_port=0, ws_port=0, rest_port=0, port_conflict="fail"))
    writer = threading.Thread(target=create_files, daemon=True)
    try:
        writer.start()
        server.start()
        for _ in range(30):
            server.restart()
    finally:
        stop.set()
        writer.join(10)
        server.stop()
        os.umask(old)
    assert count[0] > 0
    assert modes == {0o644}, f"files created with modes {sorted(oct(m) for m in modes)}"
