"""The ``stream-hub`` command (also ``python -m stream_hub``).

Subcommands: serve, demo, status, restart, tail, ports. Every connection flag
also reads its ``STREAM_HUB_*`` variable; flags win. The servers (serve, demo)
read the whole :class:`StreamConfig`; the client-side commands read only the
fields they use (host, their ports, their token).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from . import __version__
from .config import _DEFAULTS as config_defaults  # every field's default, for _client_config
from .config import StreamConfig
from .errors import StreamHubError

if TYPE_CHECKING:
    from .server import TrainingStreamServer

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNREACHABLE = 2


# -- arguments --------------------------------------------------------------------


def _add_connection_flags(parser: argparse.ArgumentParser, token_help: str | None) -> None:
    """--host, the three ports, --json, and --token unless the command takes none."""
    parser.add_argument("--host", help="address to bind or reach (env STREAM_HUB_HOST, default 127.0.0.1)")
    parser.add_argument("--sse-port", type=int, help="SSE port (env STREAM_HUB_SSE_PORT, default 8888)")
    parser.add_argument("--ws-port", type=int, help="WebSocket port (env STREAM_HUB_WS_PORT, default 8889)")
    parser.add_argument("--rest-port", type=int, help="REST port (env STREAM_HUB_REST_PORT, default 8890)")
    if token_help is not None:
        parser.add_argument("--token", help=token_help)
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
    _add_connection_flags(serve, "admin token for POST /api/admin/restart (env STREAM_HUB_ADMIN_TOKEN)")
    serve.add_argument(
        "--port-conflict",
        choices=["auto", "fail", "free", "next"],
        help="what to do when a port is busy (env STREAM_HUB_PORT_CONFLICT)",
    )

    demo = sub.add_parser(
        "demo",
        help="serve plus simulated training threads",
        description="Serve, and run simulated training threads that log "
        "realistic curves. Open the printed dashboard URL.",
    )
    _add_connection_flags(demo, "admin token (env STREAM_HUB_ADMIN_TOKEN)")
    demo.add_argument("--port-conflict", choices=["auto", "fail", "free", "next"])
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
    _add_connection_flags(status, "read token, if the hub needs one (env STREAM_HUB_READ_TOKEN)")
    status.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")

    restart = sub.add_parser(
        "restart",
        help="force a restart of a running hub",
        description="POST /api/admin/restart with the admin token.",
    )
    _add_connection_flags(restart, "admin token (env STREAM_HUB_ADMIN_TOKEN)")
    restart.add_argument("--timeout", type=float, default=10.0)

    tail = sub.add_parser(
        "tail",
        help="follow the SSE stream in the terminal",
        description="Follow events over SSE; resumes after a dropped connection with Last-Event-ID.",
    )
    _add_connection_flags(tail, "read token (env STREAM_HUB_READ_TOKEN)")
    tail.add_argument("--run", action="append", help="only this run (repeatable)")
    tail.add_argument("--type", action="append", dest="types", help="only this event type")
    tail.add_argument("--since", type=int, default=None, help="replay history after this seq")
    tail.add_argument("--count", type=int, default=None, help="exit after this many events")
    tail.add_argument(
        "--retry-for",
        type=float,
        default=30.0,
        help="give up after this many seconds without a connection (default 30)",
    )

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


# -- settings -------------------------------------------------------------------------

# The flags that set StreamConfig fields of the same name.
_FIELD_FLAGS = ("host", "sse_port", "ws_port", "rest_port", "port_conflict")

# The fields each client-side command reads. It talks to a hub that is already
# configured: the server's own settings (history size, limits, timeouts, ...)
# are none of its business, and a bad STREAM_HUB_HISTORY_SIZE must not stop
# `stream-hub status` from reporting on a running hub.
_CLIENT_FIELDS: dict[str, tuple[str, ...]] = {
    "status": ("host", "rest_port", "read_token"),
    "restart": ("host", "rest_port", "admin_token"),
    "tail": ("host", "sse_port", "read_token"),
    "ports": ("host", "sse_port", "ws_port", "rest_port"),
}


def _flag_values(args: argparse.Namespace, fields: Iterable[str]) -> dict[str, Any]:
    """The fields among ``fields`` that a flag of the same name set on the command line."""
    values = {name: getattr(args, name, None) for name in fields}
    return {name: value for name, value in values.items() if value is not None}


def _config(args: argparse.Namespace, **extra: Any) -> StreamConfig:
    """The whole config of a server (serve, demo): flags, then STREAM_HUB_*, then defaults."""
    values = _flag_values(args, _FIELD_FLAGS)
    values.update(extra)
    return StreamConfig(**values)


def _client_config(args: argparse.Namespace) -> StreamConfig:
    """The config of a client-side command (status, restart, tail, ports).

    The fields it uses come from flags, then ``STREAM_HUB_*``, then defaults,
    validated as usual: a bad one raises :class:`ConfigError` naming it. Every
    other field is given its default, so its variable is never read.
    """
    used = _CLIENT_FIELDS[args.command]
    values = {name: value for name, value in config_defaults.items() if name not in used}
    values.update(_flag_values(args, used))
    return StreamConfig(**values)


def _rest_base(cfg: StreamConfig) -> str:
    host = cfg.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{cfg.rest_port}" if ":" in host else f"http://{host}:{cfg.rest_port}"


def _sse_base(cfg: StreamConfig) -> str:
    host = cfg.host if cfg.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://[{host}]:{cfg.sse_port}" if ":" in host else f"http://{host}:{cfg.sse_port}"


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


# -- serve / demo ---------------------------------------------------------------------


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
    print(f"  REST       {urls['rest']}/api/status   (API docs: {urls['rest']}/docs)")
    print("Press Ctrl-C to stop.", flush=True)


def _cmd_serve(args: argparse.Namespace, demo: bool = False) -> int:
    from .demo import run_demo_threads
    from .manager import get_stream_server, get_stream_server_manager, release_stream_server

    extra = {"admin_token": args.token} if args.token else {}
    cfg = _config(args, **extra)
    threads: list[threading.Thread] = []
    demo_stop: threading.Event | None = None
    with _stop_on_signals() as stop_requested:
        server = get_stream_server(config=cfg)
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


# -- status / restart -----------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    cfg = _client_config(args)
    token = args.token or cfg.read_token
    url = _rest_base(cfg) + "/api/status"
    try:
        response = httpx.get(url, headers=_auth(token), timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(
            f"stream-hub status: no hub answers at {url} ({exc.__class__.__name__}: {exc}).\n"
            "Is it running? Start one with `stream-hub serve`, or pass --rest-port/--host.",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    if response.status_code != 200:
        print(
            f"stream-hub status: {url} answered {response.status_code}: {response.text[:300]}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    status = response.json()
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    rows = [
        ("running", status.get("running")),
        ("pid", status.get("pid")),
        ("uptime", f"{status.get('uptime_s', 0):.1f} s"),
        ("references", status.get("ref_count")),
        ("restarts", status.get("restarts")),
        ("epoch", status.get("epoch")),
        ("last seq", status.get("last_seq")),
        ("history", f"{status['history']['size']} / {status['history']['capacity']}"),
        ("clients", f"SSE {status['clients']['sse']}, WebSocket {status['clients']['ws']}"),
        ("events", ", ".join(f"{k} {v}" for k, v in status["events"].items())),
        ("loop thread", "alive" if status.get("loop_thread_alive") else "DEAD"),
    ]
    for name, url_ in status.get("urls", {}).items():
        rows.append((f"{name} url", url_))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return EXIT_OK


def _cmd_restart(args: argparse.Namespace) -> int:
    cfg = _client_config(args)
    token = args.token or cfg.admin_token
    url = _rest_base(cfg) + "/api/admin/restart"
    try:
        response = httpx.post(url, headers=_auth(token), timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"stream-hub restart: no hub answers at {url} ({exc})", file=sys.stderr)
        return EXIT_UNREACHABLE
    if response.status_code != 202:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        print(f"stream-hub restart: refused ({response.status_code}): {message}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(response.json()) if args.json else "restart requested; the hub restarts in place")
    return EXIT_OK


# -- tail --------------------------------------------------------------------------------


def _format_event(event: dict[str, Any]) -> str:
    head = f"{event.get('seq', '?'):>8} {event.get('type', '?'):<8} {event.get('run') or '-':<10}"
    if event.get("type") == "metric":
        metrics = "  ".join(f"{k}={_short(v)}" for k, v in event.get("metrics", {}).items())
        return f"{head} step {event.get('step')}: {metrics}"
    return f"{head} {json.dumps(event.get('data'))[:200]}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


# Answers that mean "not now" (a hub restarting answers 503): retry, like a drop.
_TRANSIENT_STATUS = frozenset({502, 503, 504})


def _cmd_tail(args: argparse.Namespace) -> int:
    cfg = _client_config(args)
    token = args.token or cfg.read_token
    url = _sse_base(cfg) + "/events"
    params: dict[str, Any] = {}
    if args.run:
        params["run"] = args.run
    if args.types:
        params["types"] = args.types
    last_id: int | None = args.since
    # Sent with Last-Event-ID, so a hub that is a new process (new epoch, seqs
    # from 1 again) replays its history instead of skipping up to our last seq.
    epoch: str | None = None
    seen = 0
    backoff = 0.2
    unreachable_since: float | None = None
    while True:
        headers = _auth(token)
        query = dict(params)
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
            if epoch is not None:
                query["epoch"] = epoch
        problem: str | None = None
        try:
            with httpx.stream(
                "GET", url, params=query, headers=headers, timeout=httpx.Timeout(5.0, read=None)
            ) as response:
                if response.status_code in _TRANSIENT_STATUS:
                    problem = f"{url} answered {response.status_code}"
                elif response.status_code != 200:
                    print(
                        f"stream-hub tail: {url} answered {response.status_code}: {response.read()[:300]!r}",
                        file=sys.stderr,
                    )
                    return EXIT_ERROR
                else:
                    unreachable_since = None
                    backoff = 0.2
                    for line in response.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        event = json.loads(line[6:])
                        if isinstance(event.get("seq"), int):
                            last_id = event["seq"]  # a gap's seq is the last lost one
                        if isinstance(event.get("epoch"), str):
                            epoch = event["epoch"]
                        print(json.dumps(event) if args.json else _format_event(event), flush=True)
                        seen += 1
                        if args.count is not None and seen >= args.count:
                            return EXIT_OK
        except httpx.HTTPError as exc:
            problem = f"{exc.__class__.__name__}: {exc}"
        except KeyboardInterrupt:
            return EXIT_OK
        if problem is not None:
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since > args.retry_for:
                print(f"stream-hub tail: gave up reaching {url}: {problem}", file=sys.stderr)
                return EXIT_UNREACHABLE
        # The stream ended (server restart) or dropped: reconnect and resume.
        print(f"-- reconnecting (resume after {last_id})", file=sys.stderr, flush=True)
        threading.Event().wait(backoff)
        backoff = min(backoff * 2, 3.0)


# -- ports ---------------------------------------------------------------------------------


def _cmd_ports(args: argparse.Namespace) -> int:
    from . import ports as port_tools

    cfg = _client_config(args)
    if args.free:
        if port_tools.is_production():
            print(
                "stream-hub ports --free: refused, ENVIRONMENT=production; stop the holders "
                "by hand (see below)",
                file=sys.stderr,
            )
            print(port_tools.format_ports_report(port_tools.ports_report(cfg)), file=sys.stderr)
            return EXIT_ERROR
        manager = port_tools.PortManager(cfg.host, "auto")
        try:
            manager.resolve({"sse": cfg.sse_port, "ws": cfg.ws_port, "rest": cfg.rest_port})
        except StreamHubError as exc:
            print(f"stream-hub ports --free: {exc}", file=sys.stderr)
            return EXIT_ERROR
    rows = port_tools.ports_report(cfg)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(port_tools.format_ports_report(rows))
    return EXIT_OK


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
        "serve": _cmd_serve,
        "demo": lambda a: _cmd_serve(a, demo=True),
        "status": _cmd_status,
        "restart": _cmd_restart,
        "tail": _cmd_tail,
        "ports": _cmd_ports,
    }
    try:
        return int(handlers[args.command](args))
    except StreamHubError as exc:  # a config or port problem: say it plainly
        print(f"stream-hub {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
