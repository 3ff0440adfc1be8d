"""``stream-hub runs``: the user's runs — the live hub's, found through the
registry, and every run the default store persisted — with their status,
start and end, ranks and event counts (``--json`` for scripts)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx

from ..client import HubNotFound, NotAHub
from ..store.catalog import persisted_runs
from ..store.directory import stores_directory
from .common import EXIT_ERROR, EXIT_OK, auth_header, client_config, locate

__all__ = ["cmd_runs", "live_runs"]


def live_runs(args: argparse.Namespace) -> tuple[list[dict[str, Any]] | None, str]:
    """The live hub's runs (``/api/runs`` items), or None and why not."""
    cfg = client_config(args)
    token = getattr(args, "token", None) or cfg.read_token
    try:
        hub = locate(args, cfg)
    except (HubNotFound, NotAHub) as exc:
        return None, str(exc)
    try:
        r = httpx.get(f"{hub.urls['rest']}/api/runs", headers=auth_header(token), timeout=args.timeout)
        r.raise_for_status()
        runs: list[dict[str, Any]] = r.json()["runs"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return None, f"the hub at {hub.urls['rest']} did not list its runs ({exc})"
    return runs, ""


def _from_live(item: dict[str, Any]) -> dict[str, Any]:
    state = item.get("state") or item.get("ended") or "running"
    return {
        "run": item["run"],
        "status": state,
        "started": item.get("first_ts"),
        "ended": item.get("last_ts") if state not in ("running", "stale") else None,
        "ranks": item.get("ranks", []),
        "events": item.get("events", 0),
        "last_step": item.get("last_step"),
        "rank_last_ts": item.get("rank_last_ts", {}),
        "live": not item.get("persisted", False),
    }


def all_runs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The live hub's runs and the persisted ones it does not hold, newest
    first; and why no hub listed its runs ("" when one did)."""
    rows: dict[str, dict[str, Any]] = {}
    for run in persisted_runs():
        row = rows[run.run] = {**run.describe(), "live": False}
        for detail in ("metrics", "metric_events", "config"):
            del row[detail]
    live, why = live_runs(args)
    for item in live or []:
        if not item.get("persisted"):
            rows[item["run"]] = _from_live(item)
    ordered = sorted(rows.values(), key=lambda r: r.get("ended") or r.get("started") or 0.0, reverse=True)
    return ordered, why


#: A running run's rank is silent when its last metric is this much older than the newest rank's.
SILENT_S = 30.0


def _ranks(row: dict[str, Any]) -> str:
    """The RANKS cell: how many, and those that fell silent while the run runs."""
    ranks = row.get("ranks") or []
    if not ranks:
        return "-"
    seen = {k: v for k, v in (row.get("rank_last_ts") or {}).items() if isinstance(v, (int, float))}
    if row.get("status") != "running" or len(seen) < 2:
        return str(len(ranks))
    newest = max(seen.values())
    silent = sorted((int(k) for k, v in seen.items() if newest - v > SILENT_S))
    return f"{len(ranks)} ({', '.join(map(str, silent))} silent)" if silent else str(len(ranks))


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_runs(args: argparse.Namespace) -> int:
    """Exit 0 with the list; 1 (one line) when no hub answers and nothing
    is persisted: there is nothing to list (contract v3, "Discovery")."""
    rows, no_hub = all_runs(args)
    if not rows and no_hub:
        print(f"stream-hub runs: {no_hub}; nothing persisted in {stores_directory()}", file=sys.stderr)
        return EXIT_ERROR
    if no_hub:
        print("stream-hub runs: no hub answers; these are the persisted runs", file=sys.stderr)
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    if not rows:
        print("no runs yet")
        return EXIT_OK
    table = [("RUN", "STATUS", "STARTED", "ENDED", "RANKS", "EVENTS")]
    for row in rows:
        table.append(
            (
                row["run"],
                row["status"],
                _when(row.get("started")),
                _when(row.get("ended")),
                _ranks(row),
                str(row.get("events", 0)),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return EXIT_OK
