"""``POST /api/publish``: events from other processes, over REST.

What a browser may not do here (see :mod:`.access`), and the checks every
ingested event passes before any of a request's events is taken: the same
validation the training thread's ``log``/``publish`` apply, plus the limits
that keep a publisher from growing the server's memory (body size, events per
request, metric name length, ``max_series``).

A body of ``OFF_LOOP_BODY`` bytes or more is decoded and checked on a worker
thread: a 1 MiB body takes 10-30 ms of the GIL to decode and check (10 000
events are checked in Python), which on the loop thread held every other
request and stream that long; on a worker thread the loop gets the GIL back
between the checks (the loop's longest stall about halved). Small bodies, the
usual batch of a few events, stay on the loop, where they cost no thread
hand-off.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..core.intake import Submission
from ..core.run_index import RunIndex
from ..events import (
    encode_data,
    validate_data,
    validate_metrics,
    validate_rank,
    validate_run,
    validate_step,
    validate_ts,
    validate_type,
)
from .access import is_loopback_host
from .params import BadRequest, ServerView, bearer_token, error_response, json_response, token_matches

__all__ = [
    "MAX_INGEST_EVENTS",
    "MAX_METRIC_NAME",
    "OFF_LOOP_BODY",
    "Refused",
    "add_publish_route",
    "check_event",
    "checked",
]

MAX_INGEST_EVENTS = 10_000
MAX_METRIC_NAME = 200
#: Bodies of at least this many bytes are decoded and checked off the loop (see above).
OFF_LOOP_BODY = 64 * 1024


class Refused(ValueError):
    """A publish body that cannot be taken: the status to answer, and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def add_publish_route(app: FastAPI, server: ServerView) -> None:
    """Add ``POST /api/publish`` for ``server`` to ``app``."""
    hub = server.hub
    # Large bodies are checked on this thread, one at a time. Not the loop's
    # default executor: a stop waits for that one, and a parse running then
    # would hold the stop (the loop ends without waiting for this thread).
    checking: list[ThreadPoolExecutor] = []

    def checker() -> ThreadPoolExecutor:
        if not checking:
            checking.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-hub-ingest"))
        return checking[0]

    @app.post("/api/publish", tags=["events"], status_code=200)
    async def publish(request: Request) -> Response:
        """Ingest events from another process.

        Body (``Content-Type: application/json``): one event object, or
        ``{"events": [...]}``. An event is ``{"type": "metric", "run": ...,
        "step": ..., "metrics": {...}}`` or ``{"type": "<word>", "run": ...,
        "data": ...}``; ``ts`` optional. An ``alert``'s data is ``{"level",
        "title", "text", "metric"?}``, its ``source`` ``"user"`` (the hub's
        own alerts are not published here). All events are checked before
        any is published.
        """
        refusal = publish_refusal(server, request)
        if refusal is not None:
            return refusal
        limit = server.config.max_body_size
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return error_response(413, f"body larger than max_body_size ({limit} bytes)")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > limit:
                return error_response(413, f"body larger than max_body_size ({limit} bytes)")
        try:
            if len(raw) < OFF_LOOP_BODY:
                events = checked(raw, hub.runs)
            else:
                events = await asyncio.get_running_loop().run_in_executor(checker(), checked, raw, hub.runs)
        except Refused as exc:
            hub.counters.rejected += 1
            return error_response(exc.status, str(exc))
        del raw
        seqs = hub.submit_many(events)
        if not hub.intake.numbered:  # Redis numbers them (a backend): not known here
            return json_response(orjson.dumps({"accepted": len(seqs), "seqs": None, "last_seq": None}))
        return json_response(orjson.dumps({"accepted": len(seqs), "seqs": seqs, "last_seq": seqs[-1]}))


def publish_refusal(server: ServerView, request: Request) -> JSONResponse | None:
    """Why a publish request must be refused, as the response; None to accept it.

    A browser can post a form to loopback from any page (a "simple" request
    with ``text/plain`` needs no preflight), so publishing needs
    ``application/json`` (which a cross-site page cannot send without CORS)
    and, when a browser sends an Origin, one that is allowed. From another
    machine, publishing needs ``publish_token``; so it does from another
    user's process on a wildcard bind (a loopback bind refuses its connection).
    """
    cfg = server.config
    headers = request.headers
    if not token_matches(bearer_token(headers.get("authorization")), cfg.publish_token):
        return error_response(401, "a publish token is required: Authorization: Bearer <token>")
    peer = request.client.host if request.client else ""
    if cfg.publish_token is None and not is_loopback_host(peer):
        return error_response(
            403,
            f"publishing from another machine ({peer}) needs a publish token: start the server "
            "with StreamConfig(publish_token=...) / STREAM_HUB_PUBLISH_TOKEN and send "
            "Authorization: Bearer <token>",
        )
    if cfg.publish_token is None and not server.access.loopback:
        # A wildcard bind: a loopback bind refused another user's connection already.
        foreign = server.access.foreign_peer(request.scope.get("server"), request.scope.get("client"))
        if foreign is not None:
            return error_response(
                403,
                f"publishing without a publish token is for this hub's own user's processes, not "
                f"{foreign}: set StreamConfig(publish_token=...) / STREAM_HUB_PUBLISH_TOKEN (or "
                "allow_other_users=True)",
            )
    origin = headers.get("origin")
    if not server.access.publish_origin_allowed(origin, headers.get("host")):
        return error_response(
            403, f"publishing from a web page at {origin!r} is not allowed (see cors_origins)"
        )
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        return error_response(
            415, f"send the events as JSON with Content-Type: application/json, not {media!r}"
        )
    return None


def checked(body: bytes | bytearray, runs: RunIndex) -> list[Submission]:
    """The events of a publish body, every one checked, none taken yet.

    Any thread: ``runs`` is only read, to refuse curves past ``max_series``
    (which the committing thread enforces again, curve by curve).

    Raises:
        Refused: 400 for a body that is not JSON, 422 for events that fail a check.
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"body is not valid JSON: {exc}") from None
    try:
        items = ingest_items(payload)
        events = [check_event(item, i) for i, item in enumerate(items)]
        check_series_room(runs, events)
    except (BadRequest, TypeError, ValueError) as exc:
        raise Refused(422, str(exc)) from None
    return events


def check_series_room(runs: RunIndex, events: list[Submission]) -> None:
    """Refuse a publish that would add metric curves past ``max_series``."""
    new: dict[tuple[str, int | None], set[str]] = {}
    for event_type, run, _step, payload, _ts, rank in events:
        if event_type == "metric" and run is not None:
            new.setdefault((run, rank), set()).update(payload)
    added = sum(runs.new_series(run, names, rank) for (run, rank), names in new.items())
    if added and runs.series_count + added > runs.max_series:
        raise BadRequest(
            f"this would add {added} metric curves, past the server's limit of {runs.max_series} "
            f"(max_series; {runs.series_count} in use): use fewer distinct run or metric names"
        )


def ingest_items(payload: Any) -> list[Any]:
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


def check_event(item: Any, index: int) -> Submission:
    """One ingested event, checked: ``(type, run, step, payload, ts, rank)``."""
    where = f"event {index}"
    if not isinstance(item, dict):
        raise BadRequest(f"{where}: expected a JSON object")
    unknown = set(item) - {"type", "run", "step", "metrics", "data", "ts", "rank"}
    if unknown:
        raise BadRequest(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    event_type = item.get("type", "metric")
    try:
        run = validate_run(item.get("run"))
        step = validate_step(item.get("step"))
        ts = validate_ts(item.get("ts"))
        rank = validate_rank(item.get("rank"))
        if event_type == "metric":
            if "metrics" not in item:
                raise TypeError('a metric event needs "metrics": {name: number}')
            metrics = validate_metrics(item["metrics"])
            long = next((name for name in metrics if len(name) > MAX_METRIC_NAME), None)
            if long is not None:
                raise TypeError(
                    f"metric names may have at most {MAX_METRIC_NAME} characters: {long[:60]!r}..."
                )
            return ("metric", run, step, metrics, ts, rank)
        validate_type(event_type)
        # An alert's, a histogram's or an image's fields checked (an alert's
        # source is the user's, never the hub's).
        data = validate_data(event_type, item.get("data"))
        # Encoded now: what cannot be stored is refused here, not dropped later.
        return (event_type, run, step, encode_data(data), ts, rank)
    except (TypeError, ValueError) as exc:  # ValueError: a step or int JSON cannot carry
        raise BadRequest(f"{where}: {exc}") from None
