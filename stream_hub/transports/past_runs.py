"""The runs earlier hubs persisted, served beside the live ones by a hub
with ``past_runs`` (``stream-hub serve`` with no store flag): in
``/api/runs``, and their curves and events when asked for by name.

Everything here reads SQLite files, so it runs on worker threads, never on
the loop. The list is read again at most every :data:`LIST_TTL` seconds
(thousands of runs list in a fraction of a second, but a dashboard polls);
a few runs' curves are kept once read (their files no longer change).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from ..core.run_index import RunIndex, RunSummary
from ..store.catalog import PersistedRun, persisted_run_events, persisted_run_state, persisted_runs
from ..store.record import NOT_TEXT

__all__ = ["LIST_TTL", "PastRuns"]

#: Seconds a read of the persisted runs' list is served again.
LIST_TTL = 5.0
_KEPT_SUMMARIES = 8
_KEPT_TEXTS = 8
_EVENTS_PER_READ = 2000


class PastRuns:
    """The persisted runs, as REST serves them (see the module docstring)."""

    def __init__(self, series_points: int) -> None:
        self.series_points = series_points
        self._listed: list[PersistedRun] = []
        self._listed_at = -LIST_TTL
        self._listing: asyncio.Task[list[PersistedRun]] | None = None
        self._summaries: OrderedDict[str, RunSummary] = OrderedDict()
        self._texts: OrderedDict[str, list[tuple[str, bytes]]] = OrderedDict()

    async def runs(self) -> list[PersistedRun]:
        """Every persisted run, newest first (read again after :data:`LIST_TTL`)."""
        if time.monotonic() - self._listed_at >= LIST_TTL:
            if self._listing is None or self._listing.done():
                self._listing = asyncio.ensure_future(asyncio.to_thread(persisted_runs))
            listing = self._listing
            self._listed = await asyncio.shield(listing)
            self._listed_at = time.monotonic()
        return self._listed

    async def described(self, skip: set[str]) -> list[dict[str, Any]]:
        """The runs of :meth:`runs` not in ``skip`` (the live ones), in the
        shape of ``/api/runs`` items, with ``"persisted": true``."""
        out: list[dict[str, Any]] = []
        for run in await self.runs():
            if run.run in skip:
                continue
            out.append(
                {
                    "run": run.run,
                    "last_step": run.last_step,
                    "metrics": run.metrics,
                    "events": run.events,
                    "metric_events": run.metric_events,
                    "first_ts": run.first_ts,
                    "last_ts": run.last_ts,
                    "last_seq": None,
                    "ranks": run.ranks,
                    "rank_last_ts": run.rank_last_ts,
                    "ended": run.status if run.status in ("finished", "failed", "killed") else None,
                    "config": run.config,
                    "alerts": run.alerts,
                    "dropped": run.dropped,
                    "state": run.status if run.status != "running" else "running",
                    "persisted": True,
                }
            )
        return out

    async def summary(self, run: str) -> RunSummary | None:
        """``run``'s curves as its newest persisted state holds them (None: none)."""
        summary = self._summaries.get(run)
        if summary is not None:
            self._summaries.move_to_end(run)
            return summary
        state = await asyncio.to_thread(persisted_run_state, run)
        if state is None:
            return None
        index = RunIndex(self.series_points, max_runs=1)
        index.restore([state])
        summary = index.runs.get(run)
        if summary is None:
            return None
        self._summaries[run] = summary
        while len(self._summaries) > _KEPT_SUMMARIES:
            self._summaries.popitem(last=False)
        return summary

    async def has(self, run: str) -> bool:
        return any(r.run == run for r in await self.runs())

    async def events(self, run: str) -> AsyncIterator[dict[str, Any]]:
        """Every persisted event of ``run``, read on a worker thread a batch at a time.

        Raises:
            StoreError: no file holds ``run`` (from the first read).
        """
        source: Iterator[dict[str, Any]] = persisted_run_events(run)

        def some() -> list[dict[str, Any]]:
            out = []
            for event in source:
                out.append(event)
                if len(out) >= _EVENTS_PER_READ:
                    break
            return out

        while True:
            batch = await asyncio.to_thread(some)
            if not batch:
                return
            for event in batch:
                yield event

    async def text_events(
        self, run: str, before: int | None, limit: int, types: frozenset[str] | None
    ) -> tuple[list[bytes], int | None]:
        """The newest ``limit`` text events of ``run`` (not metrics, not the
        hub's own; of ``types`` when given) before the ``before``-th of them
        (None: the newest), oldest first; and the index to page on from
        (None: the first was reached). A run's text events are read once
        (every event of it looked at, on a worker thread) and kept for a few runs."""
        texts = self._texts.get(run)
        if texts is None:
            texts = await asyncio.to_thread(_text_of, run)
            self._texts[run] = texts
            while len(self._texts) > _KEPT_TEXTS:
                self._texts.popitem(last=False)
        else:
            self._texts.move_to_end(run)
        chosen = [(i, body) for i, (kind, body) in enumerate(texts) if types is None or kind in types]
        end = len(chosen) if before is None else sum(1 for i, _b in chosen if i < before)
        page = chosen[max(0, end - limit) : end]
        first = page[0][0] if page else None
        more = end - limit > 0
        return [body for _i, body in page], first if more else None


def _text_of(run: str) -> list[tuple[str, bytes]]:
    """(type, JSON) of every text event of a persisted run, oldest first."""
    return [
        (event["type"], orjson.dumps(event))
        for event in persisted_run_events(run)
        if event.get("type") not in NOT_TEXT
    ]
