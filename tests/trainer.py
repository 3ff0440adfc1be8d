"""A training process for the many-processes tests: gets the shared server,
logs one metric event per step, prints one JSON line per milestone.

    python trainer.py --steps N --interval S [--run NAME] [--busy S | --wedge] [--fork-pool K]
                      [--go] [--hold] [--raise | --await-sigterm] [--sigterm-handler]

Settings come from STREAM_HUB_* in the environment (the tests set fixed
ports and a private XDG_RUNTIME_DIR). Lines on stdout:

    {"ready": role, "pid": ..., "ports": ..., "urls": ...}
    {"step": k, "ts": t, "role": role}          (with --trace)
    {"done": n, "role": role, "status": {...}}
    {"logged": n, "role": role}                 (with --await-sigterm, then waits for it)
    {"sigterm": pid}                            (the --sigterm-handler's, when it runs)

How it ends: releasing its server and returning 0 (the default); an
uncaught exception after the last step (``--raise``: exit status 1 through
a traceback, the server never released); or the SIGTERM it waits for
(``--await-sigterm``): SIGTERM's default action, or with ``--sigterm-handler``
a handler of the user's (or the launcher's), set before the server starts,
that exits with 128 + 15.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import threading
import time

from stream_hub import get_stream_server, release_stream_server


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def pool_work(args: tuple[int, int]) -> int:
    worker, count = args
    from stream_hub import get_stream_server_manager

    server = get_stream_server_manager().server
    assert server is not None
    for i in range(count):
        server.log({"w": float(worker), "i": float(i)}, step=worker * 1000 + i, run="pool")
    return count


def exit_on_sigterm(signum: int, frame: object) -> None:
    """The user's own SIGTERM handler: says so, then exits as shells report a signal."""
    emit(sigterm=os.getpid())
    raise SystemExit(128 + signum)


def wait_for_a_signal_to_end_it(**line: object) -> None:
    """Print ``line``, then sleep until a signal's handler ends the process.
    (``signal.pause()`` alone would miss a signal that comes just before it,
    and the test sends SIGTERM as soon as it reads the line. The wakeup fd,
    set before the line, has its byte either way; the handler runs once
    ``select`` returns.)"""
    receive, send = socket.socketpair()
    send.setblocking(False)
    signal.set_wakeup_fd(send.fileno())
    emit(**line)
    while True:
        select.select([receive], [], [])
        receive.recv(1024)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--run", default=None)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument(
        "--busy", type=float, default=0.0, help="serve, then keep the GIL in one long C call for S seconds"
    )
    parser.add_argument(
        "--wedge", action="store_true", help="serve, then keep the GIL asleep in a blocking C call"
    )
    parser.add_argument("--fork-pool", type=int, default=0)
    parser.add_argument("--hold", action="store_true", help="wait for a line on stdin before releasing")
    parser.add_argument("--go", action="store_true", help="wait for a line on stdin before logging")
    ending = parser.add_mutually_exclusive_group()
    ending.add_argument(
        "--raise", dest="raise_", action="store_true", help="end by an uncaught exception after the last step"
    )
    ending.add_argument(
        "--await-sigterm", action="store_true", help="after the last step, say so and wait for SIGTERM"
    )
    parser.add_argument(
        "--sigterm-handler", action="store_true", help="set a SIGTERM handler of the user's before starting"
    )
    args = parser.parse_args()
    if args.sigterm_handler:
        signal.signal(signal.SIGTERM, exit_on_sigterm)
    server = get_stream_server()
    emit(ready=server.role, pid=os.getpid(), ports=server.ports, urls=server.urls)
    if args.busy:
        # One C call that never lets the GIL go (sum over a range): the hub
        # cannot answer, but the process works (its CPU time advances).
        started = time.monotonic()
        sum(range(2_000_000))
        per_second = 2_000_000 / max(1e-6, time.monotonic() - started)
        emit(busy=args.busy)
        sum(range(int(per_second * args.busy)))
        emit(answering=True)
    if args.wedge:
        import ctypes

        emit(wedged=True)
        # PyDLL keeps the GIL across the call: the process sleeps with it held.
        ctypes.PyDLL(None).sleep(600)
    if args.fork_pool:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(args.fork_pool) as pool:
            done = pool.map(pool_work, [(w, args.steps) for w in range(args.fork_pool)])
        emit(pool=sum(done))
    stop = threading.Event()
    if args.go:
        sys.stdin.readline()
    for step in range(args.steps if not args.fork_pool else 0):
        server.log({"loss": 1.0 / (step + 1), "step": float(step)}, step=step, run=args.run)
        if args.trace:
            emit(step=step, ts=time.time(), role=server.role)
        if args.interval:
            stop.wait(args.interval)
    if args.hold:
        sys.stdin.readline()
    if args.await_sigterm:
        wait_for_a_signal_to_end_it(logged=args.steps, role=server.role)
    status = server.status()
    emit(
        done=args.steps,
        role=server.role,
        status={k: status.get(k) for k in ("role", "forwarding", "host", "pid")},
    )
    if args.raise_:
        raise RuntimeError(f"training failed after step {args.steps - 1} (trainer.py --raise)")
    release_stream_server()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
