"""``stream-hub serve`` and ``stream-hub demo``: a hub in the foreground,
stopped cleanly by Ctrl-C or SIGTERM (with simulated training threads for the
demo)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .common import EXIT_ERROR, EXIT_MISSING_EXTRA, EXIT_OK, server_config

if TYPE_CHECKING:
    from ..server import TrainingStreamServer

__all__ = ["cmd_serve"]


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM while the block runs; old handlers restored after.

    Installed before the server starts: a signal that arrives while it starts,
    or just after the ready line was printed, must stop it cleanly rather than
    kill the process with its ports unverified (SIGTERM's default action).
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_ready(args: argparse.Namespace, server: TrainingStreamServer, demo: bool) -> None:
    urls = server.urls
    if args.json:
        print(json.dumps({"ports": server.ports, "urls": urls, "pid": os.getpid()}), flush=True)
        return
    print(f"stream_hub {'demo ' if demo else ''}running (pid {os.getpid()})")
    print(f"  dashboard  {urls['rest']}/")
    print(f"  SSE        {urls['sse']}/events")
    print(f"  WebSocket  {urls['ws']}/")
    print(f"  REST       {urls['rest']}/api/status   (OpenAPI schema: {urls['rest']}/openapi.json)")
    print("Press Ctrl-C to stop.", flush=True)


def cmd_serve(args: argparse.Namespace, demo: bool = False) -> int:
    from ..backend import MissingExtraError
    from ..demo import run_demo_threads
    from ..manager import get_stream_server, get_stream_server_manager, release_stream_server
    from ..runtime.collector import tune_for_serving
    from ..runtime.memory import fix_mmap_threshold

    # This process only serves: freed buffers go back to the kernel (runtime/memory.py).
    fix_mmap_threshold()
    extra: dict[str, Any] = {"admin_token": args.token} if args.token else {}
    extra["replica"] = True  # serving is the point, whatever STREAM_HUB_REPLICA says
    cfg = server_config(args, **extra)
    if not isinstance(cfg.store, str) and cfg.backend is None and not demo:
        # No store given: show what every earlier hub persisted (contract v3, "After the fact").
        cfg = cfg.replace(past_runs=True)
    threads: list[threading.Thread] = []
    demo_stop: threading.Event | None = None
    with _stop_on_signals() as stop_requested:
        try:
            server = get_stream_server(config=cfg)
        except MissingExtraError as exc:  # refused before anything started
            print(f"stream-hub {args.command}: {exc}", file=sys.stderr)
            return EXIT_MISSING_EXTRA
        if server.role == "joined" and not demo:
            status = server.status()
            release_stream_server()
            get_stream_server_manager().cleanup()
            print(
                f"stream-hub serve: a hub already serves these ports (pid {status['host']['pid']}); "
                f"its dashboard is {status['host']['urls'].get('rest')}/. "
                "Training processes join it; nothing else to start.",
                file=sys.stderr,
            )
            return EXIT_ERROR
        # Everything loaded for serving lives as long as this process: full
        # collections need not walk it, and they can be rarer (runtime/collector.py).
        tune_for_serving()
        try:
            _print_ready(args, server, demo)
            if demo:
                threads, demo_stop = run_demo_threads(args.runs, args.steps, args.interval)
                stop_requested.wait(args.duration)
            else:
                stop_requested.wait()
        finally:
            if demo_stop is not None:
                demo_stop.set()
                for thread in threads:
                    thread.join(10)
            ports = server.ports
            release_stream_server()
            get_stream_server_manager().cleanup()
    if not args.json:
        print(f"stopped; ports {', '.join(str(p) for p in ports.values())} are free", flush=True)
    return EXIT_OK
