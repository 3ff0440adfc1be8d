"""The client-side commands that talk to a running hub over HTTP:
``stream-hub status``, ``restart`` and ``tail``. Each finds the hub first
(:func:`.common.locate`): no hub, or a foreign program where the hub should
be, is one line and exit 1."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from ..client import FollowError, HubNotFound, follow
from ..client.discovery import FoundHub
from .common import EXIT_ERROR, EXIT_OK, auth_header, client_config, locate

__all__ = ["cmd_restart", "cmd_status", "cmd_tail"]


def cmd_status(args: argparse.Namespace) -> int:
    cfg = client_config(args)
    token = args.token or cfg.read_token
    hub = locate(args, cfg)
    url = hub.urls["rest"] + "/api/status"
    try:
        response = httpx.get(url, headers=auth_header(token), timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(
            f"stream-hub status: the hub at {url} stopped answering ({exc.__class__.__name__})",
            file=sys.stderr,
        )
        return EXIT_ERROR
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
    store = status.get("store")
    if store:
        rows.append(
            ("store", f"{store.get('path')}: {store.get('events')} events, {store.get('bytes')} bytes")
        )
        rows.append(
            (
                "store writes",
                f"{store.get('queued')} waiting, {store.get('dropped')} dropped, "
                f"{store.get('errors')} errors, lag {store.get('lag_s')} s",
            )
        )
    for name, url_ in status.get("urls", {}).items():
        rows.append((f"{name} url", url_))
    moved = _moved(hub, cfg.sse_port, cfg.ws_port, cfg.rest_port)
    if moved:
        rows.append(("found", moved))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return EXIT_OK


def _moved(hub: FoundHub, sse: int, ws: int, rest: int) -> str | None:
    """A word on a hub found away from its configured ports, or None."""
    configured = {"sse": sse, "ws": ws, "rest": rest}
    if not hub.moved or hub.ports == configured:
        return None
    ports = "/".join(str(port) for port in configured.values())
    return f"through the registry: configured for ports {ports}, it moved (another program held them)"


def cmd_restart(args: argparse.Namespace) -> int:
    cfg = client_config(args)
    token = args.token or cfg.admin_token
    url = locate(args, cfg).urls["rest"] + "/api/admin/restart"
    try:
        response = httpx.post(url, headers=auth_header(token), timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(
            f"stream-hub restart: the hub at {url} stopped answering ({exc.__class__.__name__})",
            file=sys.stderr,
        )
        return EXIT_ERROR
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


def cmd_tail(args: argparse.Namespace) -> int:
    """Print the hub's events as they come (:func:`stream_hub.client.follow`
    does the reconnecting and resuming)."""
    cfg = client_config(args)
    token = args.token or cfg.read_token
    try:
        hub: FoundHub | None = locate(args, cfg)
    except HubNotFound:
        if not args.wait:
            raise  # one line, exit 1 (main)
        hub = None  # --wait: for a hub to start, as for one to come back
    if args.run and hub is not None:
        _say_if_runs_unknown(args.run, hub.urls["rest"], token, args.timeout)
    # No URL: follow() finds the hub again before every connection, so a hub
    # that comes back on other ports (a foreign program took its own) is followed too.
    events = follow(
        config=cfg,
        runs=args.run,
        types=args.types,
        since=args.since,
        token=token,
        on_shutdown="wait" if args.wait else "end",
        retry_for=None if args.retry_for <= 0 else args.retry_for,
        connect_timeout=args.timeout,
    )
    seen = 0
    try:
        with events:
            for event in events:
                print(json.dumps(event) if args.json else _format_event(event), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    return EXIT_OK
    except FollowError as exc:
        print(f"stream-hub tail: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    print("-- the hub stopped (clean shutdown); --wait keeps following across stops", file=sys.stderr)
    return EXIT_OK


def _say_if_runs_unknown(runs: list[str], rest: str, token: str | None, timeout: float) -> None:
    """Tell the user (on stderr) when a run they asked for has no events yet,
    so a typo does not look like a quiet run. Silent if REST does not answer."""
    try:
        response = httpx.get(f"{rest}/api/runs", headers=auth_header(token), timeout=min(timeout, 5.0))
        known = [item["run"] for item in response.json()["runs"]] if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return
    if known is None:
        return
    wanted = {name.strip() for item in runs for name in item.split(",") if name.strip()}
    missing = sorted(wanted - set(known))
    if missing:
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") if known else "none yet"
        print(
            f"stream-hub tail: no events from run {', '.join(map(repr, missing))} on this hub yet "
            f"(its runs: {listed}); waiting for them",
            file=sys.stderr,
            flush=True,
        )
