"""How long ``force_restart()`` takes with clients that read nothing, beside an idle one.

    python scripts/bench_restart.py                      # 200 stalled clients, this tree
    python scripts/bench_restart.py --baseline 148d48c   # and a commit's code, side by side

Each side runs in a process of its own: a managed hub (no store) with ~1.8 MB
of history, restarted with no client (idle) and with ``--stalled`` clients
(half SSE, half WebSocket) that resume from seq 1 with a small receive buffer
and never read, so every one of them is paused when the restart begins. The
sides alternate ``--sets`` times (drift in the machine's load hits both
alike); the table gives the medians, the ratio of each side's stalled restart
to its idle one, and the load average. ``--baseline`` runs a git ref's
``stream_hub`` (exported with ``git archive``) in the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scratch import scratch_home  # noqa: E402


def _connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _stalled(ports: dict[str, int], n: int) -> list[socket.socket]:
    """``n`` clients replaying from seq 1 that never read (after the WebSocket handshake)."""
    out = []
    for k in range(n):
        if k % 2 == 0:
            sock = _connect(ports["sse"])
            sock.sendall(b"GET /events?last_event_id=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        else:
            sock = _connect(ports["ws"])
            sock.sendall(
                b"GET /?since=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(1)
                if not chunk:
                    raise RuntimeError("the server closed a WebSocket during its handshake")
                head += chunk
        out.append(sock)
    return out


def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling a condition in a benchmark driver


def worker(args: argparse.Namespace) -> int:
    """One side: restarts timed, as JSON on stdout."""
    from benchmarks.soak.common import raise_fd_limit
    from stream_hub import StreamConfig, get_stream_server, get_stream_server_manager, release_stream_server

    raise_fd_limit()
    config = StreamConfig(
        host="127.0.0.1",
        sse_port=0,
        ws_port=0,
        rest_port=0,
        port_conflict="fail",
        store=False,
        shutdown_timeout=args.shutdown_timeout,
        send_timeout=600.0,  # no eviction: every stalled client is there at the restart
    )
    server = get_stream_server(config=config)
    manager = get_stream_server_manager()
    for step in range(2000):
        server.log({f"metric_{k}": 1.0 + k for k in range(40)}, step=step, run="r")

    def restart() -> float:
        t0 = time.perf_counter()
        manager.force_restart()
        return (time.perf_counter() - t0) * 1000

    restart()  # the first restart warms up what the others reuse
    idle: list[float] = []
    stalled: list[float] = []
    paused: list[int] = []
    for _ in range(args.rounds):
        idle.append(restart())
        sockets = _stalled(server.ports, args.stalled)
        try:
            _until(
                lambda: sum(c.paused_since is not None for c in list(server.clients.live)) >= args.stalled,
                60,
                "every stalled client paused",
            )
            paused.append(sum(c.paused_since is not None for c in list(server.clients.live)))
            stalled.append(restart())
        finally:
            for sock in sockets:
                sock.close()
        _until(lambda: not server.clients.live, 30, "the closed clients gone")
    release_stream_server()
    json.dump({"idle": idle, "stalled": stalled, "paused": paused}, sys.stdout)
    return 0


def run_side(source: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), str(ROOT)])}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    command += ["--stalled", str(args.stalled), "--rounds", str(args.rounds)]
    command += ["--shutdown-timeout", str(args.shutdown_timeout)]
    done = subprocess.run(command, env=env, cwd=source, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"the worker on {source} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def export(ref: str, into: Path) -> Path:
    """``ref``'s tree (its ``stream_hub``), exported into ``into``."""
    archive = subprocess.run(["git", "archive", ref, "stream_hub"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    # Hubs persist by default (contract v3): a benchmark's runs go to a data
    # directory of its own (its child processes inherit it), never to the user's.
    scratch_home()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stalled", type=int, default=200, help="stalled clients, half SSE, half WebSocket")
    parser.add_argument("--rounds", type=int, default=5, help="idle + stalled restarts per set")
    parser.add_argument("--sets", type=int, default=2, help="times the sides alternate")
    parser.add_argument("--shutdown-timeout", type=float, default=1.0)
    parser.add_argument("--baseline", default=None, metavar="REF", help="a git ref to compare with")
    parser.add_argument("--json", type=Path, default=None, help="write every figure there")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    sides: dict[str, Path] = {"this tree": ROOT}
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp:
        if args.baseline:
            sides[args.baseline] = export(args.baseline, Path(tmp))
        results: dict[str, dict[str, list[float]]] = {name: {"idle": [], "stalled": []} for name in sides}
        load = [os.getloadavg()]
        for _ in range(args.sets):
            for name, source in sides.items():
                got = run_side(source, args)
                for key in ("idle", "stalled"):
                    results[name][key] += got[key]
        load.append(os.getloadavg())
    print(
        f"force_restart() with {args.stalled} stalled clients (paused, reading nothing) and idle; "
        f"shutdown_timeout {args.shutdown_timeout:g} s; {args.sets} x {args.rounds} of each per side"
    )
    print(f"load average (1 min) at the start / end: {load[0][0]:.2f} / {load[-1][0]:.2f}", end="")
    print(f" ({os.cpu_count()} CPUs)")
    print(f"{'side':<14}{'idle ms, median / max':>24}{'stalled ms, median / max':>28}{'stalled / idle':>16}")
    for name, figures in results.items():
        idle, stalled = sorted(figures["idle"]), sorted(figures["stalled"])
        ratio = statistics.median(stalled) / max(statistics.median(idle), 1e-9)
        print(
            f"{name:<14}{statistics.median(idle):>15.1f} / {idle[-1]:<6.0f}"
            f"{statistics.median(stalled):>19.1f} / {stalled[-1]:<6.0f}{ratio:>15.1f}x"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"results": results, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
