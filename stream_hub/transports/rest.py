"""The REST API (FastAPI): health, status, runs, latest values, history,
admin restart and Prometheus metrics; publishing (:mod:`.publish`) and the
dashboard (:mod:`.dashboard`) are added to the same app.

Every endpoint is ``async`` and does no blocking work on the loop; calls
into user code (``get_status()``) run on one thread of their own
(:class:`OffLoopCaller`) with a timeout. Only a hub that serves past runs
(:mod:`.past_runs`) reads files, on the loop's default executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .._version import __version__
from ..core.hub import MAX_HISTORY_BYTES
from ..core.run_index import RunSummary
from ..events import wire_numbers
from .access import AccessCheck
from .dashboard import add_dashboard_routes
from .params import (
    BadRequest,
    ServerView,
    bearer_token,
    error_response,
    json_response,
    parse_list,
    parse_seq,
    token_matches,
)
from .past_runs import PastRuns
from .publish import add_publish_route
from .ranges import RingCurves, range_body
from .run_record import BadCursor, coverage_of, record_events, text_page
from .run_views import NotFound, export_csv, export_jsonl, runs_body, series_body

__all__ = ["create_rest_app"]

logger = logging.getLogger(__name__)

TRAINING_STATUS_TIMEOUT = 2.0
# The most events one /api/status encodes (about 20-40 ms of the loop's time).
STATUS_ENCODE_LIMIT = 10_000


def create_rest_app(
    server: ServerView,
    *,
    restart: Callable[[], None],
    training_status: Callable[[], Callable[[], Any] | None],
    metrics_text: Callable[[], bytes],
    status_caller: OffLoopCaller,
) -> Any:
    """The ASGI app served on the REST port.

    Args:
        restart: starts a force-restart (must not block the loop).
        training_status: returns the training system's ``get_status`` (None:
            absent); asked per request, so a system given later is seen.
        metrics_text: Prometheus exposition of the server's metrics.
        status_caller: runs ``get_status()`` off the loop.
    """
    app = FastAPI(
        title="stream_hub",
        description="Live training metrics: status, runs, latest values, history and ingest.",
        version=__version__,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN into
        # this origin, unchecked; /openapi.json stays for tools that read it.
        docs_url=None,
        redoc_url=None,
    )
    hub = server.hub
    ring_curves = RingCurves(hub)
    past = PastRuns(server.config.series_points) if server.config.past_runs else None

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One error shape for every 4xx: {"error": "..."}; FastAPI's own
        # "detail" list is kept beside it for clients that parse it.
        errors = jsonable_encoder(exc.errors())
        where = [".".join(str(p) for p in e.get("loc", ())[1:]) or "request" for e in errors]
        message = "; ".join(f"{w}: {e.get('msg', 'invalid')}" for w, e in zip(where, errors))
        return JSONResponse({"error": message or "invalid request", "detail": errors}, status_code=422)

    if server.config.cors_origins:
        # Closed by default: only origins named in StreamConfig.cors_origins
        # may call this API from a browser page served elsewhere.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(server.config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )

    def check_read(request: Request) -> JSONResponse | None:
        """Refuse a read without the read token; otherwise commit what is
        pending, so the answer includes every event published before the
        request (the loop may be spacing its commits)."""
        # Header only: ``?token=`` is for EventSource and WebSocket, which
        # cannot set headers; fetch() can, and URLs end up in logs.
        given = bearer_token(request.headers.get("authorization"))
        if not token_matches(given, server.config.read_token):
            return error_response(401, "a read token is required: Authorization: Bearer <token>")
        if not hub.numbered_elsewhere:
            hub.commit()  # what was just logged is in the answer
        return None

    @app.get("/health", tags=["status"])
    async def health() -> dict[str, Any]:
        """200 while serving; says which server answers (and, with a Redis
        backend, whether Redis answers: a replica serves what it has either way)."""
        answer: dict[str, Any] = {
            "status": "ok",
            "service": "stream_hub",
            "pid": os.getpid(),
            "last_seq": hub.head,
        }
        backend = server.backend_state
        if backend is not None:
            answer["backend"] = backend
        return answer

    @app.get("/api/status", tags=["status"])
    async def status(request: Request) -> Response:
        """The server's status dict (same as ``manager.status()``)."""
        denied = check_read(request)
        if denied:
            return denied
        # So the counters include events no client has read yet, in a bounded
        # step: a ring of a million unread events would hold the loop for seconds.
        hub.encode_some(STATUS_ENCODE_LIMIT)
        return json_response(orjson.dumps(server.status()))

    @app.get("/api/runs", tags=["runs"])
    async def runs(
        request: Request,
        offset: int = Query(0, ge=0, description="skip this many runs (paging)"),
        limit: int | None = Query(None, ge=1, description="at most this many runs (default: all)"),
        past_offset: int = Query(0, ge=0, description="persisted runs: skip this many (their own paging)"),
        past_limit: int | None = Query(None, ge=0, description="persisted runs: at most this many"),
        past_match: str | None = Query(
            None, max_length=200, description="persisted runs: only those whose name contains this"
        ),
    ) -> Response:
        """Every run kept: last step, metric names, event counts, ranks, each
        rank's last metric time (``rank_last_ts``), state (running,
        finished, failed, killed or stale) and what was lost of it
        (``dropped``: forwarder, hub, store, curve, sampled); ``evicted``: runs forgotten to
        make room (``max_runs``). A hub serving past runs (``stream-hub
        serve``) lists the persisted runs after the live ones
        (``"persisted": true``); ``total`` counts them all, and ``offset`` and
        ``limit`` page through them. ``past_offset``, ``past_limit`` and
        ``past_match`` choose among the persisted runs alone (a dashboard
        lists every live run and a page of the past ones); ``past_total``:
        how many persisted runs match."""
        denied = check_read(request)
        if denied:
            return denied
        items = runs_body(hub.runs.runs, server.live_runs())
        live_total = len(items)
        past_total = 0
        if past is not None and past_limit != 0:  # (0: the live runs alone, as a dashboard polls them)
            described = await past.described(set(hub.runs.runs))
            if past_match:
                described = [item for item in described if past_match in item["run"]]
            past_total = len(described)
            end = None if past_limit is None else past_offset + past_limit
            items += described[past_offset:end]
        body = {
            "runs": items[offset : None if limit is None else offset + limit],
            "total": live_total + past_total,
            "epoch": hub.epoch,
            "last_seq": hub.head,
            "evicted": hub.runs.runs_evicted,
            "past_total": past_total,
        }
        return json_response(orjson.dumps(body))

    async def find_run(run: str) -> RunSummary | None:
        summary = hub.runs.runs.get(run)
        if summary is None and past is not None:
            summary = await past.summary(run)
        return summary

    def unknown_run(run: str) -> Response:
        return error_response(404, f"unknown run {run!r}", runs=sorted(hub.runs.runs)[:100])

    @app.get("/api/runs/{run:path}/series", tags=["runs"])
    async def series(
        request: Request,
        run: str,
        metric: str | None = Query(None, description="one metric; all of the run's when omitted"),
        rank: int | None = Query(None, ge=0, description="one rank; all of them when omitted"),
        max_points: int = Query(2000, ge=2, le=100_000, description="points per series at most"),
        from_step: int | None = Query(None, description="with metric: only steps from this one"),
        to_step: int | None = Query(None, description="with metric: only steps up to this one"),
        compact: bool = Query(False, description="no mins and maxs for curves of single points"),
    ) -> Response:
        """The whole run's curves, downsampled in bounded memory: one metric or
        all, and for a run with ranks, per rank (``ranks``) or the one asked for.

        With ``from_step``/``to_step`` (and ``metric``): that step range at the
        best resolution the hub holds — the ring's events, in ``max_points``
        buckets with min and max kept, or the series' buckets when the ring
        does not reach back that far (``source``: ``ring`` or ``series``;
        ``next_step``: where the bucket after the last one starts)."""
        denied = check_read(request)
        if denied:
            return denied
        ranged = from_step is not None or to_step is not None
        if ranged and metric is None:
            return error_response(400, "from_step and to_step need a metric")
        if from_step is not None and to_step is not None and from_step > to_step:
            return error_response(400, f"from_step {from_step} is after to_step {to_step}")
        # Read the head first: live events after it are applied on top of the
        # snapshot by clients, so the snapshot must not be older than the head.
        head = hub.head
        summary = await find_run(run)
        if summary is None:
            return unknown_run(run)
        try:
            if ranged and metric is not None:
                first = -(2**63) if from_step is None else from_step
                last = 2**63 - 1 if to_step is None else to_step
                body = range_body(ring_curves, summary, metric, rank, first, last, max_points)
            else:
                body = series_body(summary, metric, rank, max_points, compact)
                if run in hub.runs.runs:
                    ring_curves.prepare(summary)  # a zoom into a long run comes next, often
        except NotFound as exc:
            return error_response(404, str(exc), **exc.extra)
        body["epoch"] = hub.epoch
        body["last_seq"] = head
        return json_response(orjson.dumps(body))

    @app.get("/api/runs/{run:path}/export", tags=["runs"], response_class=Response)
    async def export(
        request: Request,
        run: str,
        format: str = Query("jsonl", pattern="^(csv|jsonl)$", description="csv (metrics) or jsonl (events)"),
        metric: str | None = Query(None, description="csv: only this metric's column"),
    ) -> Response:
        """The run's events at full resolution — its record: the hub's store
        (every epoch of it) or Redis stream, then the ring; a past run's
        files — as JSON lines of every event, or CSV of its metrics.
        ``X-Stream-Hub-Coverage``: ``record``, or ``window`` when the hub
        keeps no record (``store=False``): only the events still in memory,
        the last ``X-Stream-Hub-Window-Events`` of all runs."""
        denied = check_read(request)
        if denied:
            return denied
        if run in hub.runs.runs:
            events, coverage = record_events(hub, run), coverage_of(hub)
        elif past is not None and await past.has(run):
            events, coverage = past.events(run), coverage_of(hub, persisted=True)
        else:
            return unknown_run(run)
        # An ASCII file name for every browser, the run's own in UTF-8 beside it (RFC 6266).
        name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in run)
        if format == "csv":
            body, media, suffix = export_csv(events, metric), "text/csv; charset=utf-8", "csv"
        else:
            body, media, suffix = export_jsonl(events), "application/x-ndjson", "jsonl"
        utf8 = urllib.parse.quote(f"{run}.{suffix}", safe="")
        headers = {
            "Content-Disposition": f"attachment; filename=\"{name}.{suffix}\"; filename*=UTF-8''{utf8}",
            **coverage.headers(),
        }
        return StreamingResponse(body, media_type=media, headers=headers)

    @app.get("/api/logs", tags=["events"])
    async def logs(
        request: Request,
        run: str | None = Query(
            None, description="one run (a live or, with past runs, a persisted one); all when omitted"
        ),
        types: list[str] | None = Query(None, description="event types (default: every text type)"),
        before: str | None = Query(
            None, max_length=64, description="the cursor of the previous answer: older events"
        ),
        limit: int = Query(1000, ge=1, le=10_000),
    ) -> Response:
        """Text events — logs, alerts, any type that is not a metric nor the
        hub's own (status, gap, shutdown, config, run_end) — from the run's
        record (the store, then the ring; a past run's files), newest page
        first, each page oldest first. ``before``: the cursor of the next
        older page (null: the start was reached). ``coverage``: ``record``,
        or ``window`` (no store: only the last ``window_events`` events are
        in memory)."""
        denied = check_read(request)
        if denied:
            return denied
        if run is not None and run not in hub.runs.runs and not (past is not None and await past.has(run)):
            return unknown_run(run)
        try:
            types_ = parse_list(types, "types")
            page = await text_page(hub, past, run, before, limit, types_)
        except (BadRequest, BadCursor) as exc:
            return error_response(400, str(exc))
        page["last_seq"] = hub.head
        page["epoch"] = hub.epoch
        return json_response(orjson.dumps(page))

    @app.get("/api/sources", tags=["runs"])
    async def sources(request: Request) -> Response:
        """The hub's publishers: this process, joined processes, forked children."""
        denied = check_read(request)
        if denied:
            return denied
        return json_response(orjson.dumps({"sources": server.sources()}))

    @app.get("/api/metrics/latest", tags=["runs"])
    async def latest(request: Request, run: str | None = Query(None)) -> Response:
        """Latest value of every metric, for one run or all."""
        denied = check_read(request)
        if denied:
            return denied

        def one(name: str) -> dict[str, Any]:
            s = hub.runs.runs[name]
            return {"run": name, "step": s.last_step, "ts": s.last_ts, "metrics": wire_numbers(s.latest)}

        if run is not None:
            if run not in hub.runs.runs:
                return error_response(404, f"unknown run {run!r}", runs=sorted(hub.runs.runs)[:100])
            return json_response(orjson.dumps(one(run)))
        return json_response(
            orjson.dumps({"runs": {name: one(name) for name in hub.runs.runs}, "last_seq": hub.head})
        )

    @app.get("/api/history", tags=["events"])
    async def history(
        request: Request,
        run: list[str] | None = Query(None, description="runs (repeat or comma-separate)"),
        types: list[str] | None = Query(None, description="event types"),
        since: str | None = Query(None, description="events after this seq (0 = all kept)"),
        limit: int = Query(1000, ge=1, le=10_000),
        epoch: str | None = Query(None, max_length=64),
    ) -> Response:
        """Events kept in history after ``since``; a ``gap`` event first if some left it."""
        denied = check_read(request)
        if denied:
            return denied
        try:
            runs_ = parse_list(run, "run")
            types_ = parse_list(types, "types")
            start = parse_seq(since, "since") or 0
        except BadRequest as exc:
            return error_response(400, str(exc))
        archived = None
        span = hub.history_backfill_range(start, epoch)
        if span is not None and hub.archive is not None:
            archived = await hub.archive.read(span[0], span[1], MAX_HISTORY_BYTES)
        events, more = hub.history(
            start, runs=runs_, types=types_, limit=limit, epoch=epoch, archived=archived
        )
        body = (
            b'{"events":['
            + b",".join(events)
            + b'],"epoch":"'
            + hub.epoch.encode()
            + b'","last_seq":%d,"more":%s}' % (hub.head, b"true" if more else b"false")
        )
        return json_response(body)

    @app.post("/api/admin/restart", tags=["admin"], status_code=202)
    async def admin_restart(request: Request) -> Response:
        """Force a restart (``Authorization: Bearer <admin_token>``)."""
        expected = server.config.admin_token
        if expected is None:
            return error_response(
                403,
                "admin endpoints are disabled: start the server with "
                "StreamConfig(admin_token=...) or STREAM_HUB_ADMIN_TOKEN to enable them",
            )
        if not token_matches(bearer_token(request.headers.get("authorization")), expected):
            return error_response(
                401, "wrong or missing admin token: send Authorization: Bearer <admin_token>"
            )
        restart()
        return json_response(orjson.dumps({"restarting": True, "last_seq": hub.head}), status=202)

    @app.get("/api/training", tags=["status"])
    async def training(request: Request) -> Response:
        """The training system's ``get_status()``, if one was given."""
        denied = check_read(request)
        if denied:
            return denied
        get_status = training_status()
        if get_status is None:
            return error_response(404, "no training system with a get_status() method was given")
        try:
            result = await status_caller.call(get_status, TRAINING_STATUS_TIMEOUT)
        except TimeoutError:
            return error_response(504, f"get_status() did not answer within {TRAINING_STATUS_TIMEOUT} s")
        except CallerBusy:
            return error_response(503, "get_status() has not returned from an earlier request yet")
        except Exception as exc:
            return error_response(502, f"get_status() raised {type(exc).__name__}: {exc}")
        try:
            return json_response(orjson.dumps(result, default=str, option=orjson.OPT_NON_STR_KEYS))
        except TypeError as exc:
            return error_response(502, f"get_status() returned something not JSON-able: {exc}")

    @app.get("/metrics", tags=["status"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus text format."""
        denied = check_read(request)
        if denied:
            return denied
        hub.encode_all()
        return Response(metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    add_publish_route(app, server)
    add_dashboard_routes(app, server)
    return AccessCheck(app, server.access)


class CallerBusy(Exception):
    """The previous call has not returned yet."""


class OffLoopCaller:
    """Calls blocking user code (``get_status()``) on one thread of its own.

    One call at a time: a call that hangs makes the next requests answer at
    once instead of piling up threads. The thread is started on the first
    call and ends after the call it is running when :meth:`close` is called.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._busy = False
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[bool, Any], None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    async def call(self, fn: Callable[[], Any], timeout: float) -> Any:
        """``fn()``'s result (or exception), waited for at most ``timeout`` s.

        Raises:
            TimeoutError: ``fn`` did not return in time (it keeps running).
            CallerBusy: an earlier call is still running.
        """
        if self._busy:
            raise CallerBusy
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def deliver(ok: bool, value: Any) -> None:
            if not future.done():
                future.set_result(value) if ok else future.set_exception(value)

        def done(ok: bool, value: Any) -> None:
            self._busy = False
            try:
                loop.call_soon_threadsafe(deliver, ok, value)
            except RuntimeError:
                pass  # the loop closed while user code ran

        self._busy = True
        self._ensure_thread()
        self._jobs.put((fn, done))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError from None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, done = job
            try:
                result = fn()
            except Exception as exc:
                done(False, exc)
            else:
                done(True, result)

    def close(self, timeout: float) -> bool:
        """Ask the thread to end and join it for at most ``timeout`` s; whether it ended."""
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._jobs.put(None)
        thread.join(timeout)
        return not thread.is_alive()
