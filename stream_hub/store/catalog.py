"""The persisted runs: every run the default store's files hold, read
without a hub (``stream-hub runs``, ``stream-hub export`` with no hub, and
``stream-hub serve``, which lists them beside its live ones).

Each file of the default store (:mod:`.directory`) holds the runs its hub
hosted. A run's summary is its saved curves' state (``RunIndex.state()``);
a run found in several files (a job whose hub changed files, a name given
again after its claim expired) is the one saved last, and its events are
read from every file that holds some. Files are read with read-only
connections: a live hub's file is read while it writes (WAL readers never
wait for the writer).

Listing reads one small row per run per file (its ``summary``, kept beside
the saved state with its curves), so thousands of runs list without parsing
their curves; a run's curves are read when asked for. (A file written
before runs had a summary is listed from the states, more slowly.)
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import StoreError
from .directory import live_store_files, store_files
from .offline import open_store, run_events
from .sqlite import dropped_of, summary_of

__all__ = ["PersistedRun", "persisted_run_events", "persisted_run_state", "persisted_runs"]

logger = logging.getLogger(__name__)

_SUMMARIES_ONLY = "SELECT summary, CASE WHEN summary IS NULL THEN state END FROM runs"


@dataclass
class PersistedRun:
    """One run as the default store's files hold it."""

    run: str
    events: int
    metric_events: int
    first_ts: float | None
    last_ts: float | None
    last_step: int | None
    ranks: list[int]
    status: str  # finished, failed, killed; running (its hub lives) or stale (no run_end came)
    metrics: list[str]
    files: list[str]
    config: dict[str, Any]
    rank_last_ts: dict[str, float | None]
    #: What was lost of the run per cause (``/api/runs``' ``dropped``).
    dropped: dict[str, int] = field(default_factory=dict)
    #: Its alerts (``count``, worst ``level``, latest ``title``); None without any.
    alerts: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "status": self.status,
            "started": self.first_ts,
            "ended": self.last_ts if self.status != "running" else None,
            "ranks": self.ranks,
            "rank_last_ts": self.rank_last_ts,
            "events": self.events,
            "metric_events": self.metric_events,
            "last_step": self.last_step,
            "metrics": self.metrics,
            "config": self.config,
            "files": self.files,
            "dropped": self.dropped,
            "alerts": self.alerts,
        }


def _status(ends: list[str | None], live: bool) -> str:
    if ends and None not in ends:
        return next(state for state in ("killed", "failed", "finished") if state in ends)
    return "running" if live else "stale"


def _connect(path: str) -> sqlite3.Connection | None:
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None


def persisted_runs(directory: Path | None = None, live_files: set[str] | None = None) -> list[PersistedRun]:
    """Every run the default store holds, newest first. ``live_files``: the
    files live hubs write (their runs without an end are ``running``; found
    from the files' locks when not given)."""
    found: dict[str, PersistedRun] = {}
    files = store_files(directory)
    if live_files is None:
        live_files = live_store_files(f.path for f in files)
    for f in files:
        conn = _connect(f.path)
        if conn is None:
            continue
        try:
            try:
                rows = conn.execute(_SUMMARIES_ONLY).fetchall()
            except sqlite3.OperationalError:  # written before runs had a summary: parse the states
                rows = [(None, state) for (state,) in conn.execute("SELECT state FROM runs")]
        except sqlite3.Error as exc:  # not a store yet (being created), damaged: skip it
            logger.debug("persisted runs: %s skipped (%s)", f.path, exc)
            continue
        finally:
            conn.close()
        for summary_json, state_json in rows:
            try:
                summary = orjson.loads(summary_json) if summary_json else summary_of(orjson.loads(state_json))
            except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
                logger.debug("persisted runs: a run of %s skipped (%s)", f.path, exc)
                continue
            run = summary["run"]
            item = PersistedRun(
                run=run,
                events=int(summary.get("events") or 0),
                metric_events=int(summary.get("metric_events") or 0),
                first_ts=summary.get("first_ts"),
                last_ts=summary.get("last_ts"),
                last_step=summary.get("last_step"),
                ranks=list(summary.get("ranks") or []),
                status=_status(summary.get("ends") or [], f.path in live_files),
                metrics=list(summary.get("metrics") or []),
                files=[f.path],
                config=dict(summary.get("config") or {}),
                rank_last_ts=dict(summary.get("rank_last_ts") or {}),
                # Summaries written before they carried these: the drops unknown (zeros).
                dropped=summary.get("dropped") or dropped_of({}),
                alerts=summary.get("alerts") if isinstance(summary.get("alerts"), dict) else None,
            )
            known = found.get(run)
            if known is None:
                found[run] = item
                continue
            # The same run in several files: the latest saved state wins, the files add up.
            newer, older = (item, known) if (item.last_ts or 0) >= (known.last_ts or 0) else (known, item)
            newer.files = sorted(set(known.files) | set(item.files))
            newer.events = known.events + item.events
            newer.dropped = {c: known.dropped.get(c, 0) + item.dropped.get(c, 0) for c in newer.dropped}
            newer.alerts = _alerts_added(newer.alerts, older.alerts)
            if older.first_ts is not None and (newer.first_ts is None or older.first_ts < newer.first_ts):
                newer.first_ts = older.first_ts
            found[run] = newer
    return sorted(found.values(), key=lambda r: r.last_ts or 0.0, reverse=True)


def _alerts_added(newer: dict[str, Any] | None, older: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run's alerts over two files: the counts add up, the newer file's title wins, the worst level."""
    if not newer or not older:
        return newer or older
    levels = ("info", "warning", "error")
    worst = max(
        newer.get("level"), older.get("level"), key=lambda lv: levels.index(lv) if lv in levels else -1
    )
    return {**newer, "count": int(newer.get("count") or 0) + int(older.get("count") or 0), "level": worst}


def persisted_run_state(run: str, directory: Path | None = None) -> dict[str, Any] | None:
    """The saved state (curves included) of ``run``: the newest saved in
    any file, None if no file holds it."""
    best: tuple[float, dict[str, Any]] | None = None
    for f in store_files(directory):
        conn = _connect(f.path)
        if conn is None:
            continue
        try:
            row = conn.execute("SELECT last_ts, state FROM runs WHERE run = ?", (run,)).fetchone()
        except sqlite3.Error:
            continue
        finally:
            conn.close()
        if row is not None and (best is None or (row[0] or 0.0) >= best[0]):
            best = (row[0] or 0.0, orjson.loads(row[1]))
    return None if best is None else best[1]


def persisted_run_events(run: str, directory: Path | None = None) -> Iterator[dict[str, Any]]:
    """Every persisted event of ``run``, file after file (oldest file
    first), each file's in its order.

    Raises:
        StoreError: no file of the default store holds ``run``.
    """
    files = [f.path for f in store_files(directory) if _holds(f.path, run)]
    if not files:
        raise StoreError(f"no persisted run {run!r}")
    for path in files:
        conn = open_store(path)
        try:
            yield from run_events(conn, run)
        finally:
            conn.close()


def _holds(path: str, run: str) -> bool:
    conn = _connect(path)
    if conn is None:
        return False
    with contextlib.closing(conn):
        try:
            if conn.execute("SELECT 1 FROM runs WHERE run = ?", (run,)).fetchone() is not None:
                return True
            quoted = orjson.dumps(run).decode()
            return (
                conn.execute("SELECT 1 FROM chunks WHERE instr(runs, ?) > 0 LIMIT 1", (quoted,)).fetchone()
                is not None
            )
        except sqlite3.Error:
            return False
