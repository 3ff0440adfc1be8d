"""The REST face (FastAPI): health, status, runs, latest values, history,
ingest from other processes, admin restart, Prometheus metrics and the
dashboard.

Every endpoint is ``async`` and does no blocking work on the loop, so no
thread pool is ever started; calls into user code (``get_status()``) run on a
daemon thread with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..events import (
    encode_data,
    validate_metrics,
    validate_run,
    validate_step,
    validate_ts,
    validate_type,
)
from ..runs import RunIndex
from .access import HostCheck, is_loopback_host
from .common import BadRequest, ServerView, bearer_token, parse_list, parse_seq, token_matches

__all__ = ["create_rest_app"]

logger = logging.getLogger(__name__)

TRAINING_STATUS_TIMEOUT = 2.0
MAX_INGEST_EVENTS = 10_000
MAX_METRIC_NAME = 200


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _dashboard_files() -> dict[str, tuple[bytes, str]]:
    """The dashboard's static files, read once into memory."""
    types = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
        ".png": "image/png",
        ".ico": "image/x-icon",
    }
    files: dict[str, tuple[bytes, str]] = {}
    try:
        root = resources.files("stream_hub") / "dashboard"
        for entry in root.iterdir():
            name = entry.name
            suffix = name[name.rfind(".") :] if "." in name else ""
            if entry.is_file() and suffix in types:
                files[name] = (entry.read_bytes(), types[suffix])
    except (FileNotFoundError, NotADirectoryError):  # pragma: no cover - broken install
        logger.warning("dashboard files are missing from the installed package")
    return files


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
        version="0.1.0",
    )
    hub = server.hub
    dashboard = _dashboard_files()

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
            return _error(401, "a read token is required: Authorization: Bearer <token>")
        hub.commit()
        return None

    @app.get("/health", tags=["status"])
    async def health() -> dict[str, Any]:
        """200 while serving; says which server answers."""
        return {"status": "ok", "service": "stream_hub", "pid": os.getpid(), "last_seq": hub.head}

    @app.get("/api/status", tags=["status"])
    async def status(request: Request) -> Response:
        """The server's status dict (same as ``manager.status()``)."""
        denied = check_read(request)
        if denied:
            return denied
        hub.encode_all()  # so the counters include events no client has read yet
        return _json(orjson.dumps(server.status()))

    @app.get("/api/runs", tags=["runs"])
    async def runs(request: Request) -> Response:
        """Every run seen: last step, metric names, event counts."""
        denied = check_read(request)
        if denied:
            return denied
        body = {
            "runs": [s.describe() for s in hub.runs.runs.values()],
            "epoch": hub.epoch,
            "last_seq": hub.head,
        }
        return _json(orjson.dumps(body))

    @app.get("/api/runs/{run}/series", tags=["runs"])
    async def series(
        request: Request,
        run: str,
        metric: str | None = Query(None, description="one metric; all of the run's when omitted"),
        max_points: int = Query(2000, ge=2, le=100_000, description="points per series at most"),
    ) -> Response:
        """The whole run's curve of a metric, downsampled in bounded memory."""
        denied = check_read(request)
        if denied:
            return denied
        # Read the head first: live events after it are applied on top of the
        # snapshot by clients, so the snapshot must not be older than the head.
        head = hub.head
        summary = hub.runs.runs.get(run)
        if summary is None:
            return _error(404, f"unknown run {run!r}", runs=sorted(hub.runs.runs)[:100])
        if metric is not None:
            s = summary.series.get(metric)
            if s is None:
                return _error(404, f"run {run!r} has no metric {metric!r}", metrics=sorted(summary.series))
            body: dict[str, Any] = {
                "run": run,
                "metric": metric,
                **s.snapshot(max_points),
                "points_seen": s.seen,
            }
        else:
            body = {
                "run": run,
                "series": {name: s.snapshot(max_points) for name, s in summary.series.items()},
            }
        body["epoch"] = hub.epoch
        body["last_seq"] = head
        return _json(orjson.dumps(body))

    @app.get("/api/metrics/latest", tags=["runs"])
    async def latest(request: Request, run: str | None = Query(None)) -> Response:
        """Latest value of every metric, for one run or all."""
        denied = check_read(request)
        if denied:
            return denied

        def one(name: str) -> dict[str, Any]:
            s = hub.runs.runs[name]
            return {"run": name, "step": s.last_step, "ts": s.last_ts, "metrics": _wire(s.latest)}

        if run is not None:
            if run not in hub.runs.runs:
                return _error(404, f"unknown run {run!r}", runs=sorted(hub.runs.runs)[:100])
            return _json(orjson.dumps(one(run)))
        return _json(
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
            return _error(400, str(exc))
        events, more = hub.history(start, runs=runs_, types=types_, limit=limit, epoch=epoch)
        body = (
            b'{"events":['
            + b",".join(events)
            + b'],"epoch":"'
            + hub.epoch.encode()
            + b'","last_seq":%d,"more":%s}' % (hub.head, b"true" if more else b"false")
        )
        return _json(body)

    @app.post("/api/publish", tags=["events"], status_code=200)
    async def publish(request: Request) -> Response:
        """Ingest events from another process.

        Body (``Content-Type: application/json``): one event object, or
        ``{"events": [...]}``. An event is ``{"type": "metric", "run": ...,
        "step": ..., "metrics": {...}}`` or ``{"type": "<word>", "run": ...,
        "data": ...}``; ``ts`` optional. All events are checked before any is
        published.
        """
        refusal = _publish_refusal(server, request)
        if refusal is not None:
            return refusal
        limit = server.config.max_body_size
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, f"body larger than max_body_size ({limit} bytes)")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > limit:
                return _error(413, f"body larger than max_body_size ({limit} bytes)")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            hub.counters.rejected += 1
            return _error(400, f"body is not valid JSON: {exc}")
        del raw
        try:
            items = _ingest_items(payload)
            checked = [_check_event(item, i) for i, item in enumerate(items)]
            _check_series_room(hub.runs, checked)
        except (BadRequest, TypeError) as exc:
            hub.counters.rejected += 1
            return _error(422, str(exc))
        del payload, items
        seqs = hub.submit_many(checked)
        return _json(orjson.dumps({"seqs": seqs, "last_seq": seqs[-1]}))

    @app.post("/api/admin/restart", tags=["admin"], status_code=202)
    async def admin_restart(request: Request) -> Response:
        """Force a restart (``Authorization: Bearer <admin_token>``)."""
        expected = server.config.admin_token
        if expected is None:
            return _error(
                403,
                "admin endpoints are disabled: start the server with "
                "StreamConfig(admin_token=...) or STREAM_HUB_ADMIN_TOKEN to enable them",
            )
        if not token_matches(bearer_token(request.headers.get("authorization")), expected):
            return _error(401, "wrong or missing admin token: send Authorization: Bearer <admin_token>")
        restart()
        return _json(orjson.dumps({"restarting": True, "last_seq": hub.head}), status=202)

    @app.get("/api/training", tags=["status"])
    async def training(request: Request) -> Response:
        """The training system's ``get_status()``, if one was given."""
        denied = check_read(request)
        if denied:
            return denied
        get_status = training_status()
        if get_status is None:
            return _error(404, "no training system with a get_status() method was given")
        try:
            result = await status_caller.call(get_status, TRAINING_STATUS_TIMEOUT)
        except TimeoutError:
            return _error(504, f"get_status() did not answer within {TRAINING_STATUS_TIMEOUT} s")
        except CallerBusy:
            return _error(503, "get_status() has not returned from an earlier request yet")
        except Exception as exc:
            return _error(502, f"get_status() raised {type(exc).__name__}: {exc}")
        try:
            return _json(orjson.dumps(result, default=str, option=orjson.OPT_NON_STR_KEYS))
        except TypeError as exc:
            return _error(502, f"get_status() returned something not JSON-able: {exc}")

    @app.get("/metrics", tags=["status"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus text format."""
        denied = check_read(request)
        if denied:
            return denied
        hub.encode_all()
        return Response(metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = dashboard.get("index.html")
        if page is None:
            return HTMLResponse("<h1>stream_hub</h1><p>Dashboard files are missing.</p>")
        return Response(page[0], media_type=page[1])

    @app.get("/dashboard/{name}", include_in_schema=False)
    async def dashboard_file(name: str) -> Response:
        entry = dashboard.get(name)
        if entry is None:
            return _error(404, f"no dashboard file {name!r}")
        return Response(entry[0], media_type=entry[1], headers={"Cache-Control": "no-cache"})

    return HostCheck(app, server.access)


def _publish_refusal(server: ServerView, request: Request) -> JSONResponse | None:
    """Why a publish request must be refused, as the response; None to accept it.

    A browser can post a form to loopback from any page (a "simple" request
    with ``text/plain`` needs no preflight), so publishing needs
    ``application/json`` (which a cross-site page cannot send without CORS)
    and, when a browser sends an Origin, one that is allowed. From another
    machine, publishing needs ``publish_token``.
    """
    cfg = server.config
    headers = request.headers
    if not token_matches(bearer_token(headers.get("authorization")), cfg.publish_token):
        return _error(401, "a publish token is required: Authorization: Bearer <token>")
    peer = request.client.host if request.client else ""
    if cfg.publish_token is None and not is_loopback_host(peer):
        return _error(
            403,
            f"publishing from another machine ({peer}) needs a publish token: start the server "
            "with StreamConfig(publish_token=...) / STREAM_HUB_PUBLISH_TOKEN and send "
            "Authorization: Bearer <token>",
        )
    origin = headers.get("origin")
    if not server.access.publish_origin_allowed(origin, headers.get("host")):
        return _error(403, f"publishing from a web page at {origin!r} is not allowed (see cors_origins)")
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        return _error(415, f"send the events as JSON with Content-Type: application/json, not {media!r}")
    return None


def _check_series_room(runs: RunIndex, events: list[Event]) -> None:
    """Refuse a publish that would add metric curves past ``max_series``."""
    new: dict[str, set[str]] = {}
    for event_type, run, _step, payload, _ts in events:
        if event_type == "metric" and run is not None:
            new.setdefault(run, set()).update(payload)
    added = sum(runs.new_series(run, names) for run, names in new.items())
    if added and runs.series_count + added > runs.max_series:
        raise BadRequest(
            f"this would add {added} metric curves, past the server's limit of {runs.max_series} "
            f"(max_series; {runs.series_count} in use): use fewer distinct run or metric names"
        )


def _wire(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if type(value) is float and value != value:
            value = "NaN"
        elif type(value) is float and value in (float("inf"), float("-inf")):
            value = "Infinity" if value > 0 else "-Infinity"
        out[key] = value
    return out


def _ingest_items(payload: Any) -> list[Any]:
    if isinstance(payload, dict) and "events" in payload:
        items = payload["events"]
        if not isinstance(items, list):
            raise BadRequest('"events" must be a list of event objects')
    elif isinstance(payload, list):
        items = payload
    else:
        items = [payload]
    if not items:
        raise BadRequest("no events given")
    if len(items) > MAX_INGEST_EVENTS:
        raise BadRequest(f"at most {MAX_INGEST_EVENTS} events per request")
    return items


Event = tuple[str, str, "int | None", Any, "float | None"]


def _check_event(item: Any, index: int) -> Event:
    """One ingested event, checked: ``(type, run, step, payload, ts)``."""
    where = f"event {index}"
    if not isinstance(item, dict):
        raise BadRequest(f"{where}: expected a JSON object")
    unknown = set(item) - {"type", "run", "step", "metrics", "data", "ts"}
    if unknown:
        raise BadRequest(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    event_type = item.get("type", "metric")
    try:
        run = validate_run(item.get("run"))
        step = validate_step(item.get("step"))
        ts = validate_ts(item.get("ts"))
        if event_type == "metric":
            if "metrics" not in item:
                raise TypeError('a metric event needs "metrics": {name: number}')
            metrics = validate_metrics(item["metrics"])
            long = next((name for name in metrics if len(name) > MAX_METRIC_NAME), None)
            if long is not None:
                raise TypeError(
                    f"metric names may have at most {MAX_METRIC_NAME} characters: {long[:60]!r}..."
                )
            return ("metric", run, step, metrics, ts)
        validate_type(event_type)
        # Encoded now: what cannot be stored is refused here, not dropped later.
        return (event_type, run, step, encode_data(item.get("data")), ts)
    except TypeError as exc:
        raise BadRequest(f"{where}: {exc}") from None


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
