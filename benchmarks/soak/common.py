"""What every process of the soak shares: its parameters, the JSON lines
they talk in, reconnect backoff, the file-descriptor limit."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository
KiB = 1024
MiB = 1024 * 1024
HOST = "127.0.0.1"
METRICS = ("loss", "acc", "lr", "grad_norm")


@dataclasses.dataclass
class Params:
    """Everything a soak run is made of (sent to every child process as JSON)."""

    minutes: float = 10.0
    rate: int = 500
    runs: int = 4
    restart_interval: float = 5.0
    healthy: int = 200
    healthy_procs: int = 2
    stalled: int = 200
    send_timeout: float = 2.0
    handshake_timeout: float = 3.0
    shutdown_timeout: float = 1.0
    history_size: int = 10_000
    history_bytes: int = 32 * MiB
    max_series: int = 10_000
    blob_interval: float = 3.0
    slowloris: int = 6
    default_malloc: bool = False
    default_gc: bool = False
    # Before the load: /health probed for idle_seconds, then idle_restarts restarts.
    idle_seconds: float = 20.0
    idle_restarts: int = 10
    # Filled in by the orchestrator for the clients.
    ports: dict[str, int] = dataclasses.field(default_factory=dict)
    index: int = 0


def emit(message: dict[str, Any], lock: threading.Lock | None = None) -> None:
    """One JSON line on stdout: how every child talks to the orchestrator."""
    line = json.dumps(message, separators=(",", ":")) + "\n"
    if lock is None:
        sys.stdout.write(line)
        sys.stdout.flush()
        return
    with lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def backoff(failures: int) -> float:
    """Reconnect delay: 5 ms doubling to 250 ms, with jitter (a restart takes well under a second)."""
    return min(0.25, 0.005 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)


def raise_fd_limit(wanted: int = 16384) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def stdin_queue(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[dict[str, Any] | None]:
    """Commands from the orchestrator (JSON lines on stdin) as an asyncio queue."""
    commands: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(commands.put_nowait, None)

    threading.Thread(target=pump, name="soak-stdin", daemon=True).start()
    return commands
