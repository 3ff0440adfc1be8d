"""The durable store with real files and real processes: a process killed
with SIGKILL and ``stream-hub serve --store`` serving what it logged in its
epoch, the next process continuing it, resumes served from the store, one
writer per file, the upgrade of an older file, the journal on network file
systems, retention, export, a full disk, and processes sharing a store
through their hub (hand-over and a killed host).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_hub import TrainingStreamServer
from stream_hub.errors import StoreError, StoreLockedError
from stream_hub.store import chunks
from stream_hub.store import sqlite as store_sqlite
from stream_hub.store.sqlite import SCHEMA_VERSION

from ..clients import STATUS_KEYS, STORE_STATUS_KEYS, SSEStream
from ..conftest import free_config, wait_for
from ..processes import PYTHON, Spawner, child_env, free_ports, run
from .test_processes import done, hub_env, release, start

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: How long an event may wait before it is durable: the store's promise.
FLUSH_BOUND = 1.0


# -- reading a store file as the tests see it -------------------------------------------------


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def stored(db: Path) -> list[dict[str, Any]]:
    """Every event in the file (all epochs), oldest first, as the wire has them."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT e.epoch, c.body FROM chunks c JOIN epochs e ON e.id = c.epoch ORDER BY c.id"
        )
        return [
            orjson.loads(chunks.event_json(seq, epoch, ts, kind, run, step, payload, rank))
            for epoch, body in rows
            for seq, ts, kind, run, step, rank, payload in chunks.rows(chunks.decode(body))
        ]
    finally:
        conn.close()


def in_file(db: Path) -> int:
    """How many events the file holds now (read while a hub writes it)."""
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT coalesce(sum(count), 0) FROM chunks").fetchone()[0])
    finally:
        conn.close()


def history(rest: str, run: str | None = None, since: int = 0) -> list[dict[str, Any]]:
    """Every event REST history gives after ``since`` (paging through ``more``)."""
    events: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"since": since, "limit": 10_000, **({"run": run} if run else {})}
        page = httpx.get(f"{rest}/api/history", params=params, timeout=20).json()
        events += page["events"]
        if not page["more"] or not page["events"]:
            return events
        since = page["events"][-1]["seq"]


def store_server(db: Path, **changes: Any) -> TrainingStreamServer:
    server = TrainingStreamServer(free_config(store=str(db), **changes))
    server.start()
    return server


# -- a killed process, the viewer, the next process ------------------------------------------


def test_a_killed_process_is_served_by_serve_store_in_a_new_epoch_and_the_next_one_continues(
    spawn: Spawner, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    env = child_env(STREAM_HUB_STORE=str(db))
    trainer, ready = start(
        spawn, env, "--steps", "1000", "--interval", "0.002", "--run", "exp1", "--trace", "--hold"
    )
    trainer.out.wait(
        lambda lines: any('"step": 999' in line for line in lines), timeout=60, what="1000 steps"
    )
    epoch = httpx.get(ready["urls"]["rest"] + "/api/status", timeout=5).json()["epoch"]
    killed_at = time.time()
    trainer.popen.send_signal(signal.SIGKILL)
    trainer.popen.wait(10)
    traced = [json.loads(line) for line in trainer.out.lines if '"step"' in line and '"ts"' in line]
    assert len(traced) == 1000
    assert integrity(db) == "ok"

    served = spawn.serve("--store", str(db))
    status = served.status()
    # The killed hub may have served seqs it never wrote: going on in its epoch
    # would give them to other events. A new epoch keeps (epoch, seq) one event.
    assert status is not None and status["epoch"] != epoch and set(status["store"]) == STORE_STATUS_KEYS
    new_epoch = status["epoch"]
    steps = [e["step"] for e in history(served.rest, "exp1") if e["type"] == "metric"]
    assert steps == list(range(len(steps)))  # what the store kept is a prefix, in order, once
    flushed = [t["step"] for t in traced if t["ts"] < killed_at - FLUSH_BOUND]
    assert len(steps) >= len(flushed), (
        f"lost events older than {FLUSH_BOUND} s: {len(steps)} < {len(flushed)}"
    )
    runs = httpx.get(served.rest + "/api/runs", timeout=5).json()["runs"]
    exp1 = next(run for run in runs if run["run"] == "exp1")
    assert exp1["metric_events"] == len(steps) and exp1["state"] in ("running", "stale")
    curve = httpx.get(served.rest + "/api/runs/exp1/series", params={"metric": "loss"}, timeout=5).json()
    assert curve["points_seen"] == len(steps)
    # A client of the killed hub is told it may have missed events.
    stream = SSEStream(
        served.ports and f"http://127.0.0.1:{served.ports['sse']}/events",
        params={"last_event_id": 500, "epoch": epoch},
    )
    first = stream.next()
    stream.close()
    assert first is not None and first.event == "gap"

    served.signal(signal.SIGTERM)
    assert served.wait(20) == 0
    last = max(e["seq"] for e in stored(db) if e["epoch"] == new_epoch)
    code = """
import json
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
seq = server.log({"loss": 0.5}, step=0, run="exp2")
print(json.dumps({"seq": seq, "epoch": server.status()["epoch"]}))
release_stream_server()
"""
    nxt = spawn.start(["-c", code], env=env, prefix=PYTHON)
    assert nxt.wait(60) == 0, nxt.err.text[-2000:]
    out = json.loads(nxt.out.lines[-1])
    assert out["epoch"] == new_epoch  # the viewer closed the file cleanly: its epoch goes on
    assert out["seq"] == last + 2  # last + 1 is its hub's own "started" status event
    for one in (epoch, new_epoch):
        seqs = [e["seq"] for e in stored(db) if e["epoch"] == one]
        assert seqs == sorted(set(seqs))  # no (epoch, seq) given twice
    assert last + 1 in [e["seq"] for e in stored(db) if e["epoch"] == new_epoch]
    assert integrity(db) == "ok"


# -- reads, restarts, status ------------------------------------------------------------------------


def test_a_resume_from_before_the_ring_is_served_from_the_store_without_a_gap(tmp_path: Path) -> None:
    server = store_server(tmp_path / "runs.db", history_size=100)
    try:
        seqs = [server.log({"i": i}, step=i, run="a" if i % 2 else "b") for i in range(3000)]
        wait_for(lambda: server.status()["store"]["last_seq"] >= seqs[-1], what="all written")
        stream = SSEStream(server.urls["sse"] + "/events", params={"last_event_id": 5})
        frames = stream.read_until_seq(seqs[-1])
        stream.close()
        assert [int(f.id or 0) for f in frames] == list(range(6, seqs[-1] + 1))  # no gap, none twice
        only_a = history(server.urls["rest"], "a", since=5)
        assert [e["step"] for e in only_a] == [i for i in range(3000) if i % 2 and seqs[i] > 5]
    finally:
        server.stop()


def test_a_restart_keeps_writing_and_status_and_prometheus_show_the_store(tmp_path: Path) -> None:
    server = store_server(tmp_path / "runs.db")
    try:
        status = server.status()
        assert set(status) == STATUS_KEYS | {"store", "drops"} and set(status["store"]) == STORE_STATUS_KEYS
        assert status["store"]["journal"] == "wal" and status["store"]["path"] == str(tmp_path / "runs.db")
        server.log({"x": 1.0}, run="r")
        server.restart()
        seq = server.log({"x": 2.0}, run="r")
        wait_for(lambda: server.status()["store"]["last_seq"] >= seq, what="written after the restart")
        text = httpx.get(server.urls["rest"] + "/metrics", timeout=5).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        written = families["stream_hub_store_events_written"].samples[0].value
        assert written >= 4 and families["stream_hub_store_events_dropped"].samples[0].value == 0
        assert "stream_hub_store_write_lag_seconds" in families and "stream_hub_store_bytes" in families
    finally:
        server.stop()
    assert integrity(tmp_path / "runs.db") == "ok"
    assert [e["metrics"]["x"] for e in stored(tmp_path / "runs.db") if e["type"] == "metric"] == [1.0, 2.0]


# -- one writer ---------------------------------------------------------------------------------------


def test_a_second_hub_on_the_same_store_is_refused_naming_the_first(spawn: Spawner, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    first = store_server(db)
    try:
        with pytest.raises(StoreLockedError) as refused:
            store_server(db)
        assert refused.value.pid is not None and "another server of this process" in str(refused.value)
        assert first.urls["rest"] in str(refused.value)  # where its runs are
        result = run(
            ["serve", "--store", str(db), "--sse-port", "0", "--ws-port", "0", "--rest-port", "0"], timeout=60
        )
        assert result.returncode == 1
        assert "already open for writing" in result.stderr and first.urls["rest"] in result.stderr
    finally:
        first.stop()
    # Once the first has let go, the file is anyone's.
    second = store_server(db)
    second.stop()


# -- an older file ---------------------------------------------------------------------------------------


def test_an_older_store_is_upgraded_in_place_and_keeps_its_epoch_events_and_runs(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(FIXTURES / "store-v1.db", db)
    server = store_server(db)
    try:
        status = server.status()
        assert status["epoch"] == "0c5e1f0a2b3d4e5f60718293a4b5c6d7"
        assert server.hub.last_seq == 305  # the file's 304 events, then this hub's "started"
        rest = server.urls["rest"]
        runs = {r["run"]: r for r in httpx.get(rest + "/api/runs", timeout=5).json()["runs"]}
        assert runs["old"]["metric_events"] == 200 and runs["old"]["state"] == "finished"
        assert runs["old"]["config"] == {"lr": 0.001, "batch": 32} and runs["ranked"]["ranks"] == [0, 1]
        curve = httpx.get(f"{rest}/api/runs/old/series", params={"metric": "loss"}, timeout=5).json()
        assert curve["points_seen"] == 200 and curve["values"][0] == 1.0
        events = history(rest)
        assert [e["seq"] for e in events][:304] == list(range(1, 305))
        losses = [e["metrics"]["loss"] for e in events if e["run"] == "old" and e["type"] == "metric"]
        assert losses[50] == "NaN" and losses[60] == "Infinity"
    finally:
        server.stop()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchall()
    conn.close()
    assert integrity(db) == "ok"


def test_a_file_from_a_newer_version_or_not_a_store_is_refused_clearly(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.execute("CREATE TABLE x (y)")
    conn.close()
    with pytest.raises(StoreError, match="newer stream_hub"):
        store_server(newer)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a stream_hub store"):
        store_server(junk)
    with pytest.raises(StoreError, match="does not exist"):
        store_server(tmp_path / "missing" / "runs.db")


# -- the journal -----------------------------------------------------------------------------------------


def test_a_store_on_a_local_disk_uses_wal(tmp_path: Path) -> None:
    server = store_server(tmp_path / "runs.db")
    server.stop()
    conn = sqlite3.connect(tmp_path / "runs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_on_a_network_file_system_the_store_warns_and_uses_a_rollback_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The one fake: what the mount table says about the directory.
    monkeypatch.setattr(store_sqlite, "mount_type", lambda path, mounts=None: "nfs4")
    with caplog.at_level(logging.WARNING, logger="stream_hub.store"):
        server = store_server(tmp_path / "runs.db")
    try:
        assert server.status()["store"]["journal"] == "delete"
        assert any("network file system (nfs4)" in r.getMessage() for r in caplog.records)
        seq = server.log({"x": 1.0}, run="r")
        wait_for(lambda: server.status()["store"]["last_seq"] >= seq, what="written")
    finally:
        server.stop()
    conn = sqlite3.connect(tmp_path / "runs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


# -- retention ------------------------------------------------------------------------------------------


def test_retention_keeps_at_most_the_events_and_the_days_asked_for(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    server = store_server(db, store_max_events=1000)
    try:
        for i in range(20_000):
            server.log({"i": i}, step=i, run="r")
            if i % 2000 == 0:  # while it writes, too: each write deletes what goes beyond
                assert in_file(db) <= 1000
        wait_for(
            lambda: server.status()["store"]["queued"] == 0 and server.status()["store"]["written"] >= 20_000
        )
        kept = stored(db)
        assert 500 <= len(kept) <= 1000  # whole chunks go, so it keeps a little less
        assert [e["seq"] for e in kept] == list(range(kept[0]["seq"], kept[-1]["seq"] + 1))  # the newest
        assert server.status()["store"]["events"] == len(kept)
    finally:
        server.stop()
    aged = tmp_path / "aged.db"
    week_ago = time.time() - 7 * 86400
    server = store_server(aged)
    try:  # a week-old run (its events published with their old timestamps)
        server.hub.submit_many([("metric", "old", i, {"x": 1.0}, week_ago + i, None) for i in range(100)])
        wait_for(lambda: server.status()["store"]["last_seq"] >= 101, what="the old run written")
    finally:
        server.stop()
    server = store_server(aged, store_max_days=1.0)
    try:
        seq = server.log({"x": 2.0}, run="new")
        wait_for(lambda: server.status()["store"]["last_seq"] >= seq, what="written")
        wait_for(lambda: not any(e["run"] == "old" for e in stored(aged)), what="week-old events deleted")
        runs = httpx.get(server.urls["rest"] + "/api/runs", timeout=5).json()["runs"]
        assert "new" in [r["run"] for r in runs]
    finally:
        server.stop()
    assert any(e["run"] == "new" for e in stored(aged))
    conn = sqlite3.connect(aged)
    assert [r for (r,) in conn.execute("SELECT run FROM runs")] == ["new"]  # the old run's curves too
    conn.close()


# -- export ---------------------------------------------------------------------------------------------


def test_export_round_trips_from_the_store_file_and_from_the_live_hub(spawn: Spawner, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    server = store_server(db, history_size=50)
    logged = []
    for step in range(400):
        metrics = {"loss": 1.0 / (step + 1), "acc": step / 400, "n": step}
        if step == 7:
            metrics["loss"] = math.nan
        logged.append((server.log(metrics, step=step, run="exp"), step, metrics))
        server.log({"other": 1.0}, step=step, run="noise")
    server.publish("log", {"message": "done"}, run="exp")
    try:
        wait_for(
            lambda: (
                server.status()["store"]["queued"] == 0
                and server.status()["store"]["last_seq"] >= logged[-1][0]
            )
        )
        rest_csv = httpx.get(
            server.urls["rest"] + "/api/runs/exp/export", params={"format": "csv"}, timeout=10
        )
        rest_jsonl = httpx.get(
            server.urls["rest"] + "/api/runs/exp/export", params={"format": "jsonl"}, timeout=10
        )
        out = {name: tmp_path / f"{name}.out" for name in ("csv", "jsonl", "hub")}
        for args in (
            ["--store", str(db), "--format", "csv", "-o", str(out["csv"])],
            ["--store", str(db), "--format", "jsonl", "-o", str(out["jsonl"])],
            ["--rest-port", str(server.ports["rest"]), "--format", "csv", "-o", str(out["hub"])],
        ):
            result = run(["export", "--run", "exp", *args], timeout=60)
            assert result.returncode == 0, result.stderr
    finally:
        server.stop()
    file_csv = out["csv"].read_bytes()
    assert file_csv == rest_csv.content == out["hub"].read_bytes()  # the same bytes, from the file or the hub
    assert out["jsonl"].read_bytes() == rest_jsonl.content
    events = [json.loads(line) for line in out["jsonl"].read_text().splitlines()]
    metric = [e for e in events if e["type"] == "metric"]
    assert [(e["seq"], e["step"]) for e in metric] == [(seq, step) for seq, step, _ in logged]
    for event, (_seq, _step, metrics) in zip(metric, logged):
        assert {k: float(v) for k, v in event["metrics"].items()} == pytest.approx(metrics, nan_ok=True)
    # The hub's alert for the NaN is in the run too, numbered after the batch that held it.
    alerts = [e for e in events if e["type"] == "alert"]
    assert [a["data"]["metric"] for a in alerts] == ["loss"] and alerts[0]["data"]["source"] == "hub"
    others = [e for e in events if e["type"] != "alert"]
    assert others[-1]["type"] == "log" and others[-1]["data"] == {"message": "done"}
    rows = list(csv.DictReader(io.StringIO(file_csv.decode())))
    assert [int(r["step"]) for r in rows] == list(range(400)) and rows[7]["loss"] == "NaN"
    assert float(rows[100]["loss"]) == 1.0 / 101 and rows[100]["n"] == "100"


# -- a full disk ----------------------------------------------------------------------------------------


def test_a_full_store_keeps_events_in_memory_counts_drops_and_writes_again(tmp_path: Path) -> None:
    server = store_server(tmp_path / "runs.db", history_size=1000)
    try:
        writer = server._serving.store.writer  # type: ignore[union-attr]
        assert writer is not None
        first = server.log({"x": 0.0}, run="r")
        wait_for(lambda: writer.durable_seq >= first, what="the first write")
        pages = writer.conn.execute("PRAGMA page_count").fetchone()[0]
        # SQLite's own "database or disk is full", as a full disk gives it.
        writer.conn.execute(f"PRAGMA max_page_count={pages + 2}")
        for i in range(300_000):
            server.log({"x": float(i), "y": 1.0}, step=i, run="r")
        wait_for(lambda: server.status()["store"]["errors"] > 0, what="a failed write")
        wait_for(lambda: server.status()["last_seq"] >= 300_001, what="all committed")  # serving goes on
        status = server.status()
        assert status["store"]["dropped"] > 0 and status["store"]["queued"] > 0
        assert status["history"]["size"] == 1000
        text = httpx.get(server.urls["rest"] + "/metrics", timeout=5).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["stream_hub_store_events_dropped"].samples[0].value == status["store"]["dropped"]
        writer.conn.execute("PRAGMA max_page_count=1073741823")  # room again
        last = server.log({"x": -1.0}, run="r")
        wait_for(lambda: writer.durable_seq >= last, timeout=30, what="writing again")
        assert server.status()["store"]["queued"] == 0
    finally:
        server.stop()
    assert integrity(tmp_path / "runs.db") == "ok"


def test_a_chunk_that_fails_to_compress_is_counted_as_dropped_and_writing_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug, not the disk: the events it took from the queue are lost, and
    # said to be; the queue does not count them as waiting any more.
    compress = chunks.compress
    failing = [True]

    def broken(chunk: chunks.Chunk) -> chunks.Chunk:
        if failing[0]:
            raise RuntimeError("injected compression failure")
        return compress(chunk)

    monkeypatch.setattr(chunks, "compress", broken)
    server = store_server(tmp_path / "runs.db")
    try:
        seqs = [server.log({"x": float(i)}, step=i, run="r") for i in range(100)]
        wait_for(lambda: server.status()["store"]["dropped"] >= seqs[-1], what="the lost write counted")
        status = server.status()["store"]
        # Every event so far (the server's own first event too) was in the lost write.
        assert status["dropped"] == seqs[-1] and status["queued"] == 0 and status["written"] == 0
        failing[0] = False
        last = server.log({"x": -1.0}, step=100, run="r")
        wait_for(lambda: server.status()["store"]["written"] == 1, what="writing again")
        assert server.status()["store"]["queued"] == 0 and last == seqs[-1] + 1
    finally:
        server.stop()
    assert integrity(tmp_path / "runs.db") == "ok"


# -- many processes, one store ---------------------------------------------------------------------------


def test_a_clean_hand_over_keeps_writing_the_hubs_store(spawn: Spawner, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ports = free_ports(3)
    a, ready_a = start(
        spawn,
        hub_env(ports, STREAM_HUB_STORE=str(db)),
        "--steps",
        "100",
        "--interval",
        "0",
        "--run",
        "a",
        "--hold",
    )
    # b has no store of its own: the hub's store is the one it writes once it hosts.
    b, ready_b = start(spawn, hub_env(ports), "--steps", "100", "--interval", "0", "--run", "b", "--hold")
    assert (ready_a["ready"], ready_b["ready"]) == ("host", "joined")
    rest = ready_a["urls"]["rest"]
    wait_for(lambda: sum(r["metric_events"] for r in httpx.get(rest + "/api/runs").json()["runs"]) == 200)
    epoch = httpx.get(rest + "/api/status", timeout=5).json()["epoch"]
    release(a)
    done(a)
    wait_for(lambda: _pid_of(rest) == ready_b["pid"], timeout=30, what="b hosting")
    status = httpx.get(rest + "/api/status", timeout=5).json()
    assert status["epoch"] == epoch and status["store"]["path"] == str(db)
    release(b)
    done(b)
    events = stored(db)
    assert {e["epoch"] for e in events} == {epoch}
    assert sum(e["type"] == "metric" and e["run"] == "a" for e in events) == 100
    assert sum(e["type"] == "metric" and e["run"] == "b" for e in events) == 100
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))  # every event of the hub, once
    assert integrity(db) == "ok"


def test_when_the_host_is_killed_the_elected_host_goes_on_from_the_store_in_a_new_epoch(
    spawn: Spawner, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    ports = free_ports(3)
    env = hub_env(ports, STREAM_HUB_STORE=str(db))
    host, ready = start(spawn, env, "--steps", "300", "--interval", "0", "--run", "a", "--hold")
    joined, ready_joined = start(spawn, env, "--steps", "400", "--interval", "0.005", "--run", "b", "--hold")
    assert ready_joined["ready"] == "joined"
    rest = ready["urls"]["rest"]
    epoch = httpx.get(rest + "/api/status", timeout=5).json()["epoch"]
    wait_for(
        lambda: (
            any(e["run"] == "a" for e in stored(db) if e["type"] == "metric")
            and len([e for e in stored(db) if e["run"] == "a"]) >= 300
        ),
        timeout=15,
        what="a's events written",
    )
    host.popen.send_signal(signal.SIGKILL)
    host.popen.wait(10)
    wait_for(lambda: _pid_of(rest) == ready_joined["pid"], timeout=20, what="the joined process hosting")
    status = httpx.get(rest + "/api/status", timeout=5).json()
    # A new epoch: the killed host may have served seqs it never wrote.
    assert status["epoch"] != epoch
    runs = {r["run"]: r for r in httpx.get(rest + "/api/runs", timeout=5).json()["runs"]}
    assert runs["a"]["metric_events"] == 300  # the killed host's run, from the store
    release(joined)
    done(joined)
    events = stored(db)
    assert {e["epoch"] for e in events} == {epoch, status["epoch"]} and integrity(db) == "ok"
    for one in (epoch, status["epoch"]):  # no (epoch, seq) names two events
        seqs = [e["seq"] for e in events if e["epoch"] == one]
        assert len(seqs) == len(set(seqs))
    steps_b = sorted(e["step"] for e in events if e["run"] == "b" and e["type"] == "metric")
    assert steps_b == sorted(set(steps_b))


def _pid_of(rest: str) -> int | None:
    try:
        return int(httpx.get(f"{rest}/health", timeout=2).json()["pid"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def test_forked_children_log_into_the_parents_store_and_never_touch_it(
    spawn: Spawner, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    code = """
import os, sys, threading
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
stop = threading.Event()
def busy():  # the parent keeps logging (its writer keeps writing) while children fork
    i = 0
    while not stop.is_set():
        server.log({"p": float(i)}, step=i, run="parent")
        i += 1
threading.Thread(target=busy).start()
children = []
for k in range(6):
    pid = os.fork()
    if pid == 0:
        for i in range(100):
            server.log({"c": float(i)}, step=i, run=f"child{k}")
        sys.exit(0)  # a normal exit: the interpreter finalizes what it inherited
    children.append(pid)
for pid in children:
    assert os.waitpid(pid, 0)[1] == 0
stop.set()
release_stream_server()
print("ok")
"""
    proc = spawn.start(["-c", code], env=child_env(STREAM_HUB_STORE=str(db)), prefix=PYTHON)
    assert proc.wait(90) == 0, proc.err.text[-3000:]
    assert proc.out.lines[-1] == "ok"
    assert integrity(db) == "ok"
    events = stored(db)
    for k in range(6):
        steps = sorted(e["step"] for e in events if e["run"] == f"child{k}" and e["type"] == "metric")
        assert steps == list(range(100))
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
