"""The client-side commands that talk to a running hub over HTTP:
``stream-hub status``, ``restart`` and ``tail``."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import httpx

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


# Answers that mean "not now" (a hub restarting answers 503): retry, like a drop.
_TRANSIENT_STATUS = frozenset({502, 503, 504})


def cmd_tail(args: argparse.Namespace) -> int:
    cfg = client_config(args)
    token = args.token or cfg.read_token
    url = service_url(cfg, "sse") + "/events"
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
        headers = auth_header(token)
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
