"""Several training threads sharing one stream server, the way training code uses it.

    python scripts/demo_training.py [--runs 3] [--steps 2000] [--interval 0.05]

Each thread calls get_stream_server() (one reference), log() every step, and
release_stream_server() when its run ends; the server stops with the last one.
Open the printed dashboard URL to watch.
"""

from __future__ import annotations

import argparse
import logging

from stream_hub import get_stream_server, release_stream_server
from stream_hub.demo import run_demo_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    server = get_stream_server()  # the script's own reference, to print the URLs first
    print(
        f"dashboard: {server.urls['rest']}/   SSE: {server.urls['sse']}/events   "
        f"WebSocket: {server.urls['ws']}/",
        flush=True,
    )
    threads, stop = run_demo_threads(args.runs, args.steps, args.interval)
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        release_stream_server()  # the last reference: the server stops, ports verified free
    print("all runs finished; the server stopped with the last release")


if __name__ == "__main__":
    main()
