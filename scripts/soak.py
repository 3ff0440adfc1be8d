"""Soak test: stalled and healthy clients, a hostile publisher and restarts.

    python scripts/soak.py --minutes 10     # the hardening issue's soak
    python scripts/soak.py --minutes 1      # a quick run

Not part of the pytest suite. The processes, the checks and the RSS bound are
described in :mod:`benchmarks.soak`; this command parses its arguments and
runs the soak, or (``--role``, hidden) one of its processes.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.soak.common import MiB, Params, raise_fd_limit  # noqa: E402
from benchmarks.soak.healthy import healthy_main_async  # noqa: E402
from benchmarks.soak.hostile import hostile_main_async  # noqa: E402
from benchmarks.soak.hub import hub_main  # noqa: E402
from benchmarks.soak.orchestrate import analyze, orchestrate  # noqa: E402
from benchmarks.soak.stalled import stalled_main_async  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    # Hubs persist by default (contract v3): a benchmark's runs go to a data
    # directory of its own (its child processes inherit it), never to the user's.
    if not os.environ.get("STREAM_HUB_HOME"):
        os.environ["STREAM_HUB_HOME"] = tempfile.mkdtemp(prefix="stream_hub-bench-")
        atexit.register(shutil.rmtree, os.environ["STREAM_HUB_HOME"], True)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    defaults = Params()
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="how long the load runs")
    parser.add_argument("--rate", type=int, default=defaults.rate, help="training events per second")
    parser.add_argument("--runs", type=int, default=defaults.runs, help="training runs logged round-robin")
    parser.add_argument("--restart-interval", type=float, default=defaults.restart_interval)
    parser.add_argument(
        "--healthy", type=int, default=defaults.healthy, help="healthy clients, half SSE, half WS"
    )
    parser.add_argument("--healthy-procs", type=int, default=defaults.healthy_procs)
    parser.add_argument(
        "--stalled", type=int, default=defaults.stalled, help="stalled clients, half SSE, half WS"
    )
    parser.add_argument("--send-timeout", type=float, default=defaults.send_timeout)
    parser.add_argument("--handshake-timeout", type=float, default=defaults.handshake_timeout)
    parser.add_argument("--shutdown-timeout", type=float, default=defaults.shutdown_timeout)
    parser.add_argument("--history-mib", type=int, default=defaults.history_bytes // MiB)
    parser.add_argument("--blob-interval", type=float, default=defaults.blob_interval)
    parser.add_argument("--slowloris", type=int, default=defaults.slowloris)
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=defaults.idle_seconds,
        help="before the load: how long /health is probed on the idle hub",
    )
    parser.add_argument(
        "--idle-restarts", type=int, default=defaults.idle_restarts, help="before the load: restarts timed"
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's mmap threshold dynamic in the hub (fixed by default, as in stream-hub serve)",
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="leave the garbage collector as it is in the hub (stream-hub serve tunes it)",
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="where the processes' logs go")
    parser.add_argument(
        "--report", type=Path, default=None, metavar="LOG_DIR", help="print the table of a finished run again"
    )
    parser.add_argument(
        "--role",
        default="run",
        choices=["run", "hub", "healthy", "stalled", "hostile"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--params", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role != "run":
        p = Params(**json.loads(args.params))
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if args.role == "hub":
            return hub_main(p)
        raise_fd_limit()
        role_main = {
            "healthy": healthy_main_async,
            "stalled": stalled_main_async,
            "hostile": hostile_main_async,
        }[args.role]
        asyncio.run(role_main(p))
        return 0
    if args.report is not None:
        return analyze(json.loads((args.report / "reports.json").read_text()), args.report)
    p = Params(
        minutes=args.minutes,
        rate=args.rate,
        runs=args.runs,
        restart_interval=args.restart_interval,
        healthy=args.healthy,
        healthy_procs=args.healthy_procs,
        stalled=args.stalled,
        send_timeout=args.send_timeout,
        handshake_timeout=args.handshake_timeout,
        shutdown_timeout=args.shutdown_timeout,
        history_bytes=args.history_mib * MiB,
        blob_interval=args.blob_interval,
        slowloris=args.slowloris,
        default_malloc=args.default_malloc,
        default_gc=args.default_gc,
        idle_seconds=args.idle_seconds,
        idle_restarts=args.idle_restarts,
    )
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="stream-hub-soak-"))
    return orchestrate(p, log_dir)


if __name__ == "__main__":
    sys.exit(main())
