"""The client-side commands that talk to a running hub over HTTP:
``stream-hub status``, ``restart`` and ``tail``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from ..client import FollowError, HubUnreachable, follow
from ..config import StreamConfig, base_urls
from ..errors import ConfigError
from .common import EXIT_ERROR, EXIT_OK, EXIT_UNREACHABLE, auth_header, client_config, service_url

__all__ = ["cmd_restart", "cmd_status", "cmd_tail"]


def cmd_status(args: argparse.Namespace) -> int:
    cfg = client_config(args)
    token = args.token or cfg.read_token
    url = service_url(cfg, "rest") + "/api/status"
    try:
        response = httpx.get(url, headers=auth_header(token), timeout=args.timeout)
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
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    cfg = client_config(args)
    token = args.token or cfg.admin_token
    url = service_url(cfg, "rest") + "/api/admin/restart"
    try:
        response = httpx.post(url, headers=auth_header(token), timeout=args.timeout)
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


def cmd_tail(args: argparse.Namespace) -> int:
    """Print the hub's events as they come (:func:`stream_hub.client.follow`
    does the reconnecting and resuming)."""
    cfg = client_config(args)
    token = args.token or cfg.read_token
    url = service_url(cfg, "sse") + "/events"
    if args.run:
        rest = base_urls(cfg.host, {"rest": _rest_port(args)})["rest"]
        _say_if_runs_unknown(args.run, rest, token, args.timeout)
    events = follow(
        url,
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
    except HubUnreachable as exc:
        print(f"stream-hub tail: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except FollowError as exc:
        print(f"stream-hub tail: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    print("-- the hub stopped (clean shutdown); --wait keeps following across stops", file=sys.stderr)
    return EXIT_OK


def _rest_port(args: argparse.Namespace) -> int:
    """The REST port for tail's hint about unknown runs: a hint only, so a bad
    ``STREAM_HUB_REST_PORT`` falls back to the default instead of stopping tail."""
    if args.rest_port is not None:
        return int(args.rest_port)
    try:
        return StreamConfig.reading(["rest_port"]).rest_port
    except ConfigError:
        return StreamConfig.reading([]).rest_port


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
