"""``stream-hub export``: one run's events at full resolution, as CSV (its
metrics) or JSON lines (every event) — from a store file (``--store``), else
from the live hub over REST (``GET /api/runs/{run}/export``) when one runs
and knows the run, else from the runs the default store persisted. All give
the same bytes for the same events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import urllib.parse
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
        _write(args, out, first, events)
    finally:
        conn.close()
    return EXIT_OK


def _from_persisted(args: argparse.Namespace, out: IO[bytes], no_hub: HubNotFound | None = None) -> int:
    """The run as the default store's files hold it (no hub has it;
    ``no_hub``: none answers, said in the message when no file has it either)."""
    from ..store.catalog import persisted_run_events, persisted_runs

    events = persisted_run_events(args.run)
    try:
        first = next(events, None)
    except StoreError:
        first = None
    if first is None:
        known = ", ".join(run.run for run in persisted_runs()[:20]) or "none"
        where = f"{no_hub}; no persisted run" if no_hub is not None else "no run"
        print(f"stream-hub export: {where} {args.run!r} (latest persisted: {known})", file=sys.stderr)
        return EXIT_ERROR
    _write(args, out, first, events)
    return EXIT_OK


def _write(
    args: argparse.Namespace, out: IO[bytes], first: dict[str, Any], rest: Iterator[dict[str, Any]]
) -> None:
    from ..transports.run_views import export_csv, export_jsonl

    async def all_events() -> AsyncIterator[dict[str, Any]]:
        yield first
        for event in rest:
            yield event

    async def write() -> None:
        body = export_csv(all_events(), args.metric) if args.format == "csv" else export_jsonl(all_events())
        async for part in body:
            out.write(part)

    asyncio.run(write())


def _from_hub(args: argparse.Namespace, out: IO[bytes]) -> int:
    cfg = client_config(args)
    token = args.token or cfg.read_token
    try:
        hub = locate(args, cfg)
    except HubNotFound as exc:
        return _from_persisted(args, out, exc)  # no hub: the persisted runs
    url = f"{hub.urls['rest']}/api/runs/{urllib.parse.quote(args.run, safe='')}/export"
    params = {"format": args.format, **({"metric": args.metric} if args.metric else {})}
    try:
        with httpx.stream("GET", url, params=params, headers=auth_header(token), timeout=args.timeout) as r:
            if r.status_code == 404:
                return _from_persisted(args, out)  # a run the live hub does not hold
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
