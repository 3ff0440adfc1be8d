"""The store's file: its schema and the upgrades from older versions, its
connections, and the journal mode its file system allows.

Schema version 2 (``PRAGMA user_version``), the current one::

    meta(key, value)    created; epoch and last_seq when the newest seqs
                        were dropped (the newest chunk says them otherwise)
    epochs(id, epoch)   the epochs whose events the file holds
    chunks(id, epoch, first_seq, last_seq, count, min_ts, max_ts, runs, body)
                        consecutive events of one epoch (``epochs.id``;
                        :mod:`.chunks`); ``id`` grows with time, so the oldest
                        chunks come first; a chunk is as old as its oldest event
    runs(run, epoch, last_seq, last_ts, saved, state, summary)
                        each run's summary and curves (``RunIndex.state()``)
                        as of seq ``saved`` of ``epoch``: the run's events
                        after its ``last_seq`` are not in them

Version 1, the first layout, kept one row per event and no curves::

    meta(key, value)    epoch, last_seq
    events(seq INTEGER PRIMARY KEY, epoch, ts, type, run, rank, body)   body: the event's JSON

Opening an older file for writing upgrades it in place, in one transaction
(:func:`upgrade`): a crash during the upgrade leaves the old file as it was.

Journal mode: WAL (readers never wait for the writer; a process killed at
any moment leaves a consistent file) on local file systems. WAL needs shared
memory between the processes that open the file, which network file systems
(NFS home directories on clusters, SMB, sshfs) do not provide; there the
store warns and uses a rollback journal (``DELETE``).

Owner-only: the events are the user's. Before the writer's connection opens
the file, :func:`make_private` creates it 0600 itself (SQLite would create
it 0644 under the usual umask), and SQLite gives the -wal, -shm and
-journal it creates the file's mode. An existing file, or one of those
beside it, that is open to others is tightened; one that is a symlink or
another user's is refused.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from ..core.intake import FIELDS
from ..core.run_index import DROP_CAUSES, RunIndex
from ..errors import StoreError
from ..private_files import open_private
from . import chunks

__all__ = [
    "INSERT_CHUNK",
    "NETWORK_FILE_SYSTEMS",
    "SCHEMA_VERSION",
    "chunk_row",
    "connect",
    "create",
    "dropped_of",
    "epoch_id",
    "make_private",
    "meta",
    "mount_type",
    "save_runs",
    "set_meta",
    "summary_of",
    "upgrade",
    "version",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: Events per chunk at most (a transaction's events make one or more chunks).
CHUNK_EVENTS = 32_768
#: How long a connection waits for another's lock before an operation fails.
BUSY_TIMEOUT = 10.0

#: File system types (``/proc/mounts``) where WAL is unsafe: no shared memory across hosts.
NETWORK_FILE_SYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "lustre",
        "gpfs",
        "ceph",
        "glusterfs",
        "beegfs",
        "panfs",
        "davfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.ceph",
        "fuse.glusterfs",
        "fuse.davfs2",
    }
)

_V2 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE epochs (id INTEGER PRIMARY KEY, epoch TEXT NOT NULL UNIQUE)",
    "CREATE TABLE chunks (id INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, first_seq INTEGER NOT NULL, "
    "last_seq INTEGER NOT NULL, count INTEGER NOT NULL, min_ts REAL NOT NULL, max_ts REAL NOT NULL, "
    "runs TEXT NOT NULL, body BLOB NOT NULL)",
    "CREATE INDEX chunks_by_seq ON chunks (epoch, last_seq)",
    "CREATE INDEX chunks_by_age ON chunks (min_ts)",
    "CREATE TABLE runs (run TEXT PRIMARY KEY, epoch TEXT NOT NULL, last_seq INTEGER NOT NULL, "
    "last_ts REAL, saved INTEGER NOT NULL, state BLOB NOT NULL, summary BLOB)",
)


# -- the file system --------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """A /proc/mounts field: spaces, tabs, newlines and backslashes are octal escapes."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_type(path: str, mounts: str | None = None) -> str | None:
    """The type of the file system holding ``path`` (the longest mount point
    above it in ``mounts``, by default ``/proc/mounts``); None where there is
    no mount table to read (not Linux)."""
    if mounts is None:
        try:
            with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
                mounts = f.read()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = _unescape(parts[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def journal_mode_for(path: str) -> str:
    """``"wal"``, or ``"delete"`` (with a warning) on a network file system."""
    kind = mount_type(os.path.dirname(os.path.abspath(path)) or ".")
    if kind is not None and kind in NETWORK_FILE_SYSTEMS:
        logger.warning(
            "store %s is on a network file system (%s), where SQLite's WAL mode is unsafe; "
            "using a rollback journal instead (writes are slower and readers wait for them)",
            path,
            kind,
        )
        return "delete"
    return "wal"


# -- connections ------------------------------------------------------------------------------


#: What SQLite keeps beside the file: the WAL, its shared-memory index, the rollback journal.
COMPANIONS = ("-wal", "-shm", "-journal")

_REMEDY = (
    "remove it (its owner or root can), or give this hub a store of your own "
    "(StreamConfig(store=...) / STREAM_HUB_STORE)"
)


def make_private(path: str) -> None:
    """Make the store at ``path`` this user's alone before SQLite opens it
    for writing: created 0600 when absent (so SQLite creates its companions
    0600 too), an existing file and its companions tightened to 0600 if
    open to others.

    Raises:
        StoreError: the file or a companion is a symlink, not a regular
            file, or another user's; or the file cannot be created.
    """
    # SQLite then opens the path itself: swapping the checked file for a
    # symlink in between takes a directory where others may rename our
    # files, i.e. neither private nor sticky (as /tmp is).
    try:
        os.close(open_private(path, os.O_RDWR | os.O_CREAT, what="store", error=StoreError, remedy=_REMEDY))
        for suffix in COMPANIONS:
            try:
                fd = open_private(
                    path + suffix, os.O_RDONLY, what="store file", error=StoreError, remedy=_REMEDY
                )
            except FileNotFoundError:
                continue
            os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from None


def connect(path: str, journal: str | None = None, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the store file in autocommit mode (transactions are
    explicit), usable from one thread at a time, whichever.

    ``journal``: set the journal mode (the writer's connection does;
    readers take the file's). The writer's connection first makes the file
    owner-only (:func:`make_private`).

    Raises:
        StoreError: the file is not an SQLite database, or (writer) a
            symlink or another user's.
    """
    if journal is not None:
        make_private(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from None
    try:
        if journal is not None:
            mode = conn.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
            if mode != journal:
                logger.warning("store %s: journal mode %s instead of %s", path, mode, journal)
            conn.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint less often than every 4 MB: each one syncs the file.
            conn.execute("PRAGMA wal_autocheckpoint=4000")
        if read_only:
            conn.execute("PRAGMA query_only=1")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path} is not a stream_hub store (not an SQLite database: {exc})") from None
    return conn


def version(conn: sqlite3.Connection) -> int:
    """The file's schema version (0: a new, empty file)."""
    value = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if value == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise StoreError("the file is an SQLite database but not a stream_hub store (no schema version)")
    return value


def check_version(path: str, found: int) -> None:
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema version {found}, written by a newer stream_hub; this one "
            f"reads versions up to {SCHEMA_VERSION}: upgrade stream_hub to open it"
        )


def create(conn: sqlite3.Connection) -> None:
    """The current schema in a new, empty file."""
    # Retention can give space back; VACUUM applies the setting to the (empty) file.
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("VACUUM")
    with transaction(conn):
        for statement in _V2:
            conn.execute(statement)
        set_meta(conn, created=time.time())
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


class transaction:
    """``with transaction(conn):`` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def set_meta(conn: sqlite3.Connection, **values: Any) -> None:
    if values:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES " + ", ".join(["(?, ?)"] * len(values)),
            [text for key, value in values.items() for text in (key, str(value))],
        )


# -- upgrades ---------------------------------------------------------------------------------


def upgrade(conn: sqlite3.Connection, path: str, series_points: int, max_series: int) -> None:
    """Bring an older file to the current schema, in place, in one transaction."""
    found = version(conn)
    check_version(path, found)
    if found == SCHEMA_VERSION:
        _add_summary_column(conn)
        return
    if found == 0:
        create(conn)
        return
    steps: dict[int, Callable[[sqlite3.Connection, int, int], None]] = {1: _v1_to_v2}
    started = time.monotonic()
    with transaction(conn):
        for old in range(found, SCHEMA_VERSION):
            logger.info("upgrading store %s from schema version %d to %d", path, old, old + 1)
            steps[old](conn, series_points, max_series)
            conn.execute(f"PRAGMA user_version={old + 1}")
    logger.info(
        "store %s upgraded to schema version %d in %.1f s", path, SCHEMA_VERSION, time.monotonic() - started
    )


def _add_summary_column(conn: sqlite3.Connection) -> None:
    """The runs' ``summary`` (optional in schema 2: a file written before it
    has none; writers that do not know it leave it empty, and readers then
    parse the whole state)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    if "summary" not in columns:
        conn.execute("ALTER TABLE runs ADD COLUMN summary BLOB")


def summary_of(state: dict[str, Any]) -> dict[str, Any]:
    """What a run list needs of a run's saved state (``RunIndex.state()``
    item), without its curves: kept beside the state so that thousands of
    runs list without parsing their curves."""
    tracks = state.get("tracks") or []
    return {
        "run": state["run"],
        "events": state.get("events", 0),
        "metric_events": state.get("metric_events", 0),
        "first_ts": state.get("first_ts"),
        "last_ts": state.get("last_ts"),
        "last_step": state.get("last_step"),
        "ranks": sorted(t["rank"] for t in tracks if t.get("rank") is not None),
        "rank_last_ts": {str(t["rank"]): t.get("last_ts") for t in tracks if t.get("rank") is not None},
        "metrics": sorted({name for t in tracks for name in t.get("series", {})}),
        "ends": [t.get("ended") for t in tracks],
        "config": state.get("config") or {},
        # What was lost of the run per cause, and its alerts (RunSummary.dropped(), alert_summary()).
        "dropped": dropped_of(state),
        "alerts": state.get("alerts") if isinstance(state.get("alerts"), dict) else None,
    }


def dropped_of(state: dict[str, Any]) -> dict[str, int]:
    """A saved state's drops per cause, as ``/api/runs`` says them (zeros
    included; states written before drops were counted have none)."""
    drops = state.get("drops")
    forwarder = state.get("forwarder_drops")
    out = {cause: 0 for cause in DROP_CAUSES}
    if isinstance(drops, dict):
        out.update({str(k): v for k, v in drops.items() if type(v) is int and v > 0})
    if isinstance(forwarder, dict):
        out["forwarder"] = sum(v for v in forwarder.values() if type(v) is int and v > 0)
    return out


def _summary(state: dict[str, Any]) -> bytes:
    return orjson.dumps(summary_of(state))


def _v1_events(conn: sqlite3.Connection) -> Iterator[tuple[str, list[Any]]]:
    """Version 1's events as (epoch, flat batch of consecutive events of that epoch)."""
    cursor = conn.execute("SELECT epoch, body FROM events ORDER BY seq")
    epoch: str | None = None
    flat: list[Any] = []
    while True:
        rows = cursor.fetchmany(4096)
        for row_epoch, body in rows:
            event = orjson.loads(body)
            if (row_epoch != epoch or len(flat) >= CHUNK_EVENTS * FIELDS) and flat:
                assert epoch is not None
                yield epoch, flat
                flat = []
            epoch = row_epoch
            payload = event["metrics"] if event["type"] == "metric" else orjson.dumps(event.get("data"))
            flat += (event["seq"], event["ts"], event["type"], event.get("run"), event.get("step"), payload)
            flat.append(event.get("rank"))
        if not rows:
            break
    if flat and epoch is not None:
        yield epoch, flat


def _v1_to_v2(conn: sqlite3.Connection, series_points: int, max_series: int) -> None:
    """Events become chunks; the curves, which version 1 did not keep, are derived from them."""
    for statement in _V2:
        if not statement.startswith("CREATE TABLE meta"):
            conn.execute(statement)
    index = RunIndex(series_points, max_series=max_series)
    epoch, last = None, 0
    for epoch, flat in _v1_events(conn):
        chunk = chunks.encode(flat)
        conn.execute(INSERT_CHUNK, (epoch_id(conn, epoch), *chunk_row(chunk)))
        it = iter(flat)
        for seq, ts, kind, run, step, payload, rank in zip(it, it, it, it, it, it, it):
            index.observe(
                seq, ts, run, step, kind, chunks.metrics_of(payload) if kind == "metric" else payload, rank
            )
        last = chunk.last_seq
    if epoch is not None:
        states = index.state()
        save_runs(
            conn,
            [
                (
                    s["run"],
                    epoch,
                    s["last_seq"],
                    s["last_ts"],
                    last,
                    orjson.dumps(s),
                    orjson.dumps(summary_of(s)),
                )
                for s in states
            ],
        )
        set_meta(conn, epoch=epoch, last_seq=last)
    conn.execute("DROP TABLE events")


def epoch_id(conn: sqlite3.Connection, epoch: str, create: bool = True) -> int | None:
    """The number of ``epoch`` in this file (given one if new and ``create``)."""
    if create:
        conn.execute("INSERT OR IGNORE INTO epochs (epoch) VALUES (?)", (epoch,))
    row = conn.execute("SELECT id FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
    return None if row is None else int(row[0])


def chunk_row(chunk: chunks.Chunk) -> tuple[Any, ...]:
    """A chunk's columns after its epoch, as :func:`insert_chunks` takes them."""
    return (chunk.first_seq, chunk.last_seq, chunk.count, chunk.min_ts, chunk.max_ts, chunk.runs, chunk.body)


#: One chunk row: its epoch's number, then :func:`chunk_row` (one SQL text: the statement is cached).
INSERT_CHUNK = (
    "INSERT INTO chunks (epoch, first_seq, last_seq, count, min_ts, max_ts, runs, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def save_runs(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Rows of the ``runs`` table (run, epoch, last_seq, last_ts, saved, state
    JSON, summary JSON), a hundred per statement."""
    for start in range(0, len(rows), 100):
        part = rows[start : start + 100]
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(part))
        conn.execute(
            "INSERT OR REPLACE INTO runs (run, epoch, last_seq, last_ts, saved, state, summary) "
            f"VALUES {values}",
            [value for row in part for value in row],
        )
