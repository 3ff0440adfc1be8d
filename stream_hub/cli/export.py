"""``stream-hub export``: one run's events at full resolution, as CSV (its
metrics) or JSON lines (every event) — from a store file (``--store``), or
from a live hub over REST (``GET /api/runs/{run}/export``). Both give the
same bytes for the same events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import httpx

from ..client import HubNotFound
from ..errors import StoreError
from .common import EXIT_ERROR, EXIT_OK, auth_header, client_config, locate

__all__ = ["cmd_export"]


def cmd_export(args: argparse.Namespace) -> int:
    try:
        with _output(args.output) as out:
            if args.store:
                return _from_store(args, out)
            return _from_hub(args, out)
    except BrokenPipeError:
        # Whoever read stdout (head, less) has gone: not an error. Python
        # would complain again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as f:
        yield f


def _from_store(args: argparse.Namespace, out: IO[bytes]) -> int:
    from ..store.offline import open_store, run_events, stored_runs
    from ..transports.run_views import export_csv, export_jsonl

    try:
        conn = open_store(args.store)
    except StoreError as exc:
        print(f"stream-hub export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        events = run_events(conn, args.run)
        first = next(events, None)
        if first is None:
            known = ", ".join(run["run"] for run in stored_runs(conn)) or "none"
            print(f"stream-hub export: no run {args.run!r} in {args.store} (runs: {known})", file=sys.stderr)
            return EXIT_ERROR

        async def all_events() -> AsyncIterator[dict[str, Any]]:
            yield first
            for event in events:
                yield event

        async def write() -> None:
            body = (
                export_csv(all_events(), args.metric) if args.format == "csv" else export_jsonl(all_events())
            )
            async for part in body:
                out.write(part)

        asyncio.run(write())
    finally:
        conn.close()
    return EXIT_OK


def _from_hub(args: argparse.Namespace, out: IO[bytes]) -> int:
    cfg = client_config(args)
    token = args.token or cfg.read_token
    try:
        hub = locate(args, cfg)
    except HubNotFound as exc:
        print(f"stream-hub export: {exc}; to read a store file, pass --store", file=sys.stderr)
        return EXIT_ERROR
    url = f"{hub.urls['rest']}/api/runs/{args.run}/export"
    params = {"format": args.format, **({"metric": args.metric} if args.metric else {})}
    try:
        with httpx.stream("GET", url, params=params, headers=auth_header(token), timeout=args.timeout) as r:
            if r.status_code != 200:
                print(
                    f"stream-hub export: {url} answered {r.status_code}: {r.read()[:300]!r}", file=sys.stderr
                )
                return EXIT_ERROR
            for part in r.iter_bytes():
                out.write(part)
    except httpx.HTTPError as exc:
        print(
            f"stream-hub export: the hub at {url} stopped answering ({exc.__class__.__name__})",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK
