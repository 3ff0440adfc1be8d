"""The ``stream-hub`` command (also ``python -m stream_hub``).

Subcommands: serve, demo (:mod:`.serve`), status, restart, tail
(:mod:`.remote`), export (:mod:`.export`), runs (:mod:`.runs`), ports
(:mod:`.ports`). Every
connection flag also reads its ``STREAM_HUB_*`` variable; flags win (see
:mod:`.common`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import StreamHubError
from .common import EXIT_ERROR, EXIT_OK, add_setting_flags, add_token_flags, take_secrets
from .export import cmd_export
from .ports import cmd_ports
from .remote import cmd_restart, cmd_status, cmd_tail
from .runs import cmd_runs
from .serve import cmd_serve

__all__ = ["main"]


# The settings that serve and demo take as flags besides the connection ones.
_SERVER_SETTINGS = (
    "port_conflict",
    "backend",
    "namespace",
    "store",
    "store_max_events",
    "store_max_days",
    "store_max_bytes",
    "allow_other_users",
    "alert_webhook",
)


def _add_connection_flags(parser: argparse.ArgumentParser, token: tuple[str, str] | None) -> None:
    """--host, the three ports, --json, and --token/--token-file unless the
    command takes no token (``token``: what it is, and its setting)."""
    add_setting_flags(parser, "host", "sse_port", "ws_port", "rest_port")
    if token is not None:
        add_token_flags(parser, token[1], token[0])
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-hub",
        description="Stream live training metrics over SSE, WebSocket and REST.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser(
        "serve",
        help="run the hub in the foreground (Ctrl-C stops it)",
        description="Run the hub standalone; other processes publish through "
        "POST /api/publish. Ctrl-C or SIGTERM stops it cleanly.",
    )
    _add_connection_flags(serve, ("admin token for POST /api/admin/restart", "admin_token"))
    add_setting_flags(serve, *_SERVER_SETTINGS)

    demo = sub.add_parser(
        "demo",
        help="serve plus simulated training threads",
        description="Serve, and run simulated training threads that log "
        "realistic curves. Open the printed dashboard URL.",
    )
    _add_connection_flags(demo, ("admin token", "admin_token"))
    add_setting_flags(demo, *_SERVER_SETTINGS)
    demo.add_argument("--runs", type=int, default=3, help="training threads (default 3)")
    demo.add_argument("--steps", type=int, default=3000, help="steps per run (default 3000)")
    demo.add_argument(
        "--interval", type=float, default=0.05, help="seconds per simulated step (default 0.05)"
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)"
    )

    status = sub.add_parser(
        "status",
        help="ask a running hub for its status",
        description="Query GET /api/status of a running hub.",
    )
    _add_connection_flags(status, ("read token, if the hub needs one", "read_token"))
    status.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")

    restart = sub.add_parser(
        "restart",
        help="force a restart of a running hub",
        description="POST /api/admin/restart with the admin token.",
    )
    _add_connection_flags(restart, ("admin token", "admin_token"))
    restart.add_argument("--timeout", type=float, default=10.0)

    tail = sub.add_parser(
        "tail",
        help="follow the hub's events in the terminal",
        description="Follow events over SSE (stream_hub.client.follow): reconnects and resumes "
        "after drops and restarts without missing or repeating an event; a stretch the hub no "
        "longer has is shown as a gap. Ends when the hub stops cleanly, unless --wait.",
    )
    _add_connection_flags(tail, ("read token", "read_token"))
    tail.add_argument("--run", action="append", help="only this run (repeatable)")
    tail.add_argument("--type", action="append", dest="types", help="only this event type (repeatable)")
    tail.add_argument("--since", type=int, default=None, help="replay history after this seq (0: all of it)")
    tail.add_argument("--count", type=int, default=None, help="exit after this many events")
    tail.add_argument(
        "--wait", action="store_true", help="when the hub stops cleanly, wait for it to come back"
    )
    tail.add_argument(
        "--retry-for",
        type=float,
        default=30.0,
        help="give up after this many seconds without a hub (default 30; 0: never)",
    )
    tail.add_argument("--timeout", type=float, default=10.0, help="seconds one connection attempt may take")

    export = sub.add_parser(
        "export",
        help="one run's events as CSV or JSON lines, from a store file or a live hub",
        description="Export a run at full resolution: from a store file (--store), or from "
        "the live hub over REST (GET /api/runs/{run}/export). CSV has one column per metric; "
        "JSON lines have every event.",
    )
    _add_connection_flags(export, ("read token, if the hub needs one", "read_token"))
    export.add_argument("--store", metavar="PATH", help="read this store file instead of a live hub")
    export.add_argument("--run", required=True, help="the run to export")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="default: csv")
    export.add_argument("--metric", help="csv: only this metric's column")
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.add_argument("--timeout", type=float, default=60.0, help="seconds per read from a hub")

    runs = sub.add_parser(
        "runs",
        help="list runs: the live hub's and every persisted one",
        description="List the user's runs — the live hub's (found through the registry) and every "
        "run the default store persisted under STREAM_HUB_HOME — with status, start, end, ranks "
        "and events, newest first.",
    )
    _add_connection_flags(runs, ("read token, if the hub needs one", "read_token"))
    runs.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a hub (default 3)")

    ports = sub.add_parser(
        "ports",
        help="show (and optionally free) the three ports",
        description="Show whether each configured port is free, who holds "
        "it, and whether that looks like a stream_hub server.",
    )
    _add_connection_flags(ports, None)
    ports.add_argument(
        "--free", action="store_true", help="free busy ports (development only; refused in production)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        for noisy in ("httpx", "websockets.server", "uvicorn.error"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    handlers = {
        "serve": cmd_serve,
        "demo": lambda a: cmd_serve(a, demo=True),
        "status": cmd_status,
        "restart": cmd_restart,
        "tail": cmd_tail,
        "export": cmd_export,
        "runs": cmd_runs,
        "ports": cmd_ports,
    }
    try:
        for warning in take_secrets(args):
            print(f"stream-hub {args.command}: warning: {warning}", file=sys.stderr, flush=True)
        return int(handlers[args.command](args))
    except StreamHubError as exc:  # a config or port problem: say it plainly
        print(f"stream-hub {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
