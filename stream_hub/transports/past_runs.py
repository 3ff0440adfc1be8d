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

from ..core.run_index import RunIndex, RunSummary
from ..store.catalog import PersistedRun, persisted_run_events, persisted_run_state, persisted_runs

__all__ = ["LIST_TTL", "PastRuns"]

#: Seconds a read of the persisted runs' list is served again.
LIST_TTL = 5.0
_KEPT_SUMMARIES = 8
_EVENTS_PER_READ = 2000


class PastRuns:
    """The persisted runs, as REST serves them (see the module docstring)."""

    def __init__(self, series_points: int) -> None:
        self.series_points = series_points
        self._listed: list[PersistedRun] = []
        self._listed_at = -LIST_TTL
        self._listing: asyncio.Task[list[PersistedRun]] | None = None
        self._summaries: OrderedDict[str, RunSummary] = OrderedDict()

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
