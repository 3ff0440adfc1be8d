"""What REST reads of a run's record — every event of it, for the export,
and the text events (logs, alerts, anything not a metric nor the hub's
own) of a run or of all runs, a page at a time, for the log panel — and how
much of the run that is.

Where the record is: the hub's store (its default file or an explicit
one: every epoch of it), then the ring for what the store may not hold
yet; a Redis stream (the current epoch); for a hub serving past runs, the
persisted files of a run the hub does not have. A hub without any keeps
only its ring: the answer says it is a *window*, the last ``history_size``
events (``Coverage``: the ``X-Stream-Hub-Coverage`` header, the
``coverage`` field of a JSON answer), so a page can tell its user "only
the last N events are in memory".

Text pages go back in time: each answer carries ``before``, the cursor of
the next older page (None: the start was reached). A cursor is ``r<seq>``
(the ring, before that seq), ``s<chunk>-<seq>.<split>`` (the store:
that chunk's events before that seq, then the chunks before it; the
events of the hub's epoch after the split were the ring's) or
``p<index>`` (a persisted run's text events before that one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson

from ..core.archive import Record
from ..core.hub import Hub
from ..store.record import NOT_TEXT
from .past_runs import PastRuns

__all__ = ["Coverage", "coverage_of", "record_events", "text_page"]

#: Events read from the store per page of an export.
EXPORT_PAGE_EVENTS = 20_000
#: Bytes read from a Redis stream per page of an export.
EXPORT_PAGE_BYTES = 4 * 1024 * 1024


class BadCursor(ValueError):
    """A ``before`` cursor that is not one of this kind of answer."""


@dataclass(frozen=True)
class Coverage:
    """How much of a run an answer holds: its whole ``record``, or a
    ``window`` of the newest ``window_events`` events kept in memory."""

    record: bool
    window_events: int

    def headers(self) -> dict[str, str]:
        if self.record:
            return {"X-Stream-Hub-Coverage": "record"}
        return {"X-Stream-Hub-Coverage": "window", "X-Stream-Hub-Window-Events": str(self.window_events)}

    def describe(self) -> dict[str, Any]:
        if self.record:
            return {"coverage": "record"}
        return {"coverage": "window", "window_events": self.window_events}


def coverage_of(hub: Hub, persisted: bool = False) -> Coverage:
    """A run of the hub's (``persisted``: of the past runs' files)."""
    return Coverage(persisted or hub.archive is not None, hub.ring.capacity)


async def record_events(hub: Hub, run: str) -> AsyncIterator[dict[str, Any]]:
    """Every event of ``run`` the hub has, oldest first, at full resolution:
    its record's (the store: every epoch; a Redis stream: this epoch), then
    the ring's. The ring's part is taken first, so that what leaves the ring
    meanwhile is read from the record."""
    epoch, oldest, head = hub.epoch, hub.oldest, hub.head
    archive = hub.archive
    split = archive.split(oldest) if isinstance(archive, Record) else oldest - 1
    ring = [body for _seq, body in hub.ring.newest_json(head + 1, lambda r, _t: r == run, head, after=split)]
    if isinstance(archive, Record):
        after = 0
        while True:
            page, last = await archive.run_events(run, after, EXPORT_PAGE_EVENTS, (epoch, split))
            for _epoch, _seq, _type, _run, body in page:
                yield orjson.loads(body)
            if last == after:
                break
            after = last
    elif archive is not None and oldest > 1:
        first = 1
        while first < oldest:
            archived = await archive.read(first, oldest - 1, EXPORT_PAGE_BYTES)
            if not archived:
                break
            for _seq, _type, event_run, _rank, body in archived:
                if event_run == run:
                    yield orjson.loads(body)
            first = archived[-1][0] + 1
    for body in ring:
        yield orjson.loads(body)


def _text_filter(run: str | None, types: Collection[str] | None) -> Callable[[str | None, str], bool]:
    def wants(event_run: str | None, event_type: str) -> bool:
        if event_type in NOT_TEXT or (types is not None and event_type not in types):
            return False
        return run is None or event_run == run

    return wants


async def text_page(
    hub: Hub,
    past: PastRuns | None,
    run: str | None,
    before: str | None,
    limit: int,
    types: Collection[str] | None,
) -> dict[str, Any]:
    """One page of text events, oldest first: ``{"events", "before",
    "coverage", ...}`` (see the module docstring). ``run`` None: every run
    of the hub (not the past runs').

    Raises:
        BadCursor: ``before`` is not a cursor of this kind of answer.
    """
    wanted = None if types is None else frozenset(types)
    if run is not None and run not in hub.runs.runs and past is not None and await past.has(run):
        index = _cursor_number(before, "p") if before is not None else None
        events, next_index = await past.text_events(run, index, limit, wanted)
        return {
            "events": [orjson.Fragment(body) for body in events],
            "before": None if next_index is None else f"p{next_index}",
            **coverage_of(hub, persisted=True).describe(),
        }
    wants = _text_filter(run, wanted)
    archive = hub.archive
    record = archive if isinstance(archive, Record) else None
    bodies: list[bytes] = []
    position: tuple[int, int] | None = None
    if before is None or before.startswith("r"):
        # The ring's part: its events after the split, newest first.
        bound = hub.head + 1 if before is None else _cursor_number(before, "r")
        split = min(record.split(hub.oldest) if record is not None else hub.oldest - 1, bound - 1)
        found = hub.ring.newest_json(bound, wants, limit, after=split)
        bodies = [body for _seq, body in found]
        if len(found) >= limit:
            return _page(hub, bodies, f"r{found[0][0]}")
        if record is None:
            return _page(hub, bodies, None)
    else:
        where, _, split_text = before[1:].partition(".")
        chunk_text, _, seq_text = where.partition("-")
        if not before.startswith("s") or record is None:
            raise BadCursor(f"before: not a cursor of this answer: {before!r:.60}")
        position = (_cursor_number(chunk_text, ""), _cursor_number(seq_text, ""))
        split = _cursor_number(split_text, "")
    # The record's part: up to the split in this epoch, and every other epoch.
    older, position = await record.text_events(run, position, limit - len(bodies), wanted, (hub.epoch, split))
    bodies = [body for _e, _s, _t, _r, body in older] + bodies
    return _page(hub, bodies, None if position is None else f"s{position[0]}-{position[1]}.{split}")


def _page(hub: Hub, bodies: list[bytes], before: str | None) -> dict[str, Any]:
    # Text pages read a record the store's way only (a Redis stream's: not by run): else the ring's window.
    coverage = Coverage(isinstance(hub.archive, Record), hub.ring.capacity)
    return {"events": [orjson.Fragment(b) for b in bodies], "before": before, **coverage.describe()}


def _cursor_number(text: str, prefix: str) -> int:
    if not text.startswith(prefix) or not text[len(prefix) :].isdigit():
        raise BadCursor(f"before: not a cursor of this answer: {text!r:.60}")
    return int(text[len(prefix) :])
