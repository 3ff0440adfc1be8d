"""Exports and logs from the run's record (issue 23, item 2): a chart's CSV
or JSON and the log panel read every event of a run — the hub's store over
every epoch, then its ring; a past run's files in ``stream-hub serve`` —
not only the memory ring, and say so when only a window is available
(``store=False``). Past runs carry their drops and alerts.

Real servers on free ports (in this process, or ``stream-hub serve`` and
training scripts as child processes with a data directory of their own),
real HTTP.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path
from typing import Any

import httpx

from stream_hub import TrainingStreamServer

from ..conftest import free_config
from ..processes import PYTHON, Spawner, child_env, run

OTHER_EVENTS = 12_000  # more than the ring's 10 000: the first run's events leave it


def rest(server: TrainingStreamServer) -> str:
    return f"http://127.0.0.1:{server.ports['rest']}"


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def all_logs(base: str, **params: Any) -> tuple[list[dict[str, Any]], int, str]:
    """Every page of /api/logs, oldest first: (events, pages, coverage)."""
    events: list[dict[str, Any]] = []
    before = None
    pages = 0
    while True:
        query = {**params, **({"before": before} if before else {})}
        answer = httpx.get(base + "/api/logs", params=query, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        events = body["events"] + events
        pages += 1
        before = body["before"]
        if before is None:
            return events, pages, body["coverage"]
        assert pages < 100, "the pages never end"


CRASHED_HUB = """
import os, signal, sys, time
from stream_hub import StreamConfig, TrainingStreamServer
server = TrainingStreamServer(StreamConfig(sse_port=0, ws_port=0, rest_port=0, store=sys.argv[1]))
server.start()
for step in range(100):
    server.log({"loss": 1.0 / (step + 1)}, step=step, run="first")
server.publish("log", {"message": "Traceback (most recent call last): boom", "level": "ERROR"}, run="first")
deadline = time.monotonic() + 30
while server.status()["store"]["last_seq"] < 101 and time.monotonic() < deadline:
    time.sleep(0.01)  # until the writer made them durable (the test's own polling)
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the hub dies: the next one numbers in a new epoch
"""


def test_a_runs_export_and_logs_cover_earlier_epochs_after_the_ring_moved_on(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    result = run(["-c", CRASHED_HUB, str(store)], prefix=PYTHON, env=child_env(), timeout=60)
    assert "written" in result.stdout, result.stderr
    server = TrainingStreamServer(free_config(store=str(store)))
    server.start()
    try:
        base = rest(server)
        assert server.hub.epoch not in {None, ""}
        # Before the ring moves on: each event once, though the ring holds the store's newest.
        jsonl = httpx.get(base + "/api/runs/first/export", params={"format": "jsonl"}, timeout=30)
        steps = [json.loads(line).get("step") for line in jsonl.text.splitlines()]
        assert [s for s in steps if s is not None] == list(range(100))
        for step in range(OTHER_EVENTS):
            server.log({"x": step}, step=step, run="second")
        params = {"format": "csv", "metric": "loss"}
        answer = httpx.get(base + "/api/runs/first/export", params=params, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-stream-hub-coverage"] == "record"
        rows = csv_rows(answer.text)
        assert [int(r["step"]) for r in rows] == list(range(100))
        assert float(rows[-1]["loss"]) == 1.0 / 100
        logs, _pages, coverage = all_logs(base, run="first")
        assert coverage == "record"
        assert [e["data"]["message"] for e in logs] == ["Traceback (most recent call last): boom"]
    finally:
        server.stop()


def test_the_default_store_gives_every_row_at_once_though_the_writer_is_behind() -> None:
    server = TrainingStreamServer(free_config())
    server.start()
    try:
        for step in range(100):
            server.log({"loss": float(step)}, step=step, run="first")
        for step in range(OTHER_EVENTS):
            server.log({"x": step}, step=step, run="second")
        answer = httpx.get(rest(server) + "/api/runs/first/export?format=csv&metric=loss", timeout=30)
        assert answer.headers["x-stream-hub-coverage"] == "record"
        assert [int(r["step"]) for r in csv_rows(answer.text)] == list(range(100))
        # The other run's too: the ring's part and the store's, each event once.
        answer = httpx.get(rest(server) + "/api/runs/second/export?format=csv", timeout=60)
        assert [int(r["step"]) for r in csv_rows(answer.text)] == list(range(OTHER_EVENTS))
    finally:
        server.stop()


def test_the_log_endpoint_pages_back_through_the_whole_record() -> None:
    server = TrainingStreamServer(free_config())
    server.start()
    try:
        for i in range(2500):
            server.log({"loss": float(i)}, step=i, run="first")
            server.publish("log", {"message": f"line {i}", "level": "INFO"}, run="first")
        server.alert("diverged", "loss x10", level="error", run="first")
        # Media are not lines of the log.
        server.publish("histogram", {"tag": "w", "edges": [0.0, 1.0], "counts": [3]}, run="first", step=1)
        for step in range(OTHER_EVENTS):
            server.log({"x": step}, step=step, run="second")
        server.publish("log", {"message": "second's", "level": "WARNING"}, run="second")
        base = rest(server)
        logs, pages, coverage = all_logs(base, run="first", limit=1000)
        assert coverage == "record" and pages >= 3
        messages = [e["data"].get("message") or e["data"].get("title") for e in logs]
        assert messages == [f"line {i}" for i in range(2500)] + ["diverged"]
        seqs = [e["seq"] for e in logs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # Every run, and one type.
        every, _pages, _coverage = all_logs(base, limit=700)
        assert len(every) == 2500 + 1 + 1 and every[-1]["run"] == "second"
        alerts, _pages, _coverage = all_logs(base, types="alert")
        assert [e["data"]["title"] for e in alerts] == ["diverged"]
        # Errors a client can act on.
        assert httpx.get(base + "/api/logs", params={"run": "nobody"}, timeout=10).status_code == 404
        assert httpx.get(base + "/api/logs", params={"before": "x1"}, timeout=10).status_code == 400
    finally:
        server.stop()


def test_without_a_store_an_export_and_the_logs_say_they_are_a_window() -> None:
    server = TrainingStreamServer(free_config(store=False, history_size=5000))
    server.start()
    try:
        for step in range(100):
            server.log({"loss": float(step)}, step=step, run="first")
        server.publish("log", {"message": "only in memory"}, run="first")
        base = rest(server)
        answer = httpx.get(base + "/api/runs/first/export?format=csv", timeout=30)
        assert answer.headers["x-stream-hub-coverage"] == "window"
        assert answer.headers["x-stream-hub-window-events"] == "5000"
        assert len(csv_rows(answer.text)) == 100  # the window still holds them
        logs = httpx.get(base + "/api/logs", timeout=10).json()
        assert logs["coverage"] == "window" and logs["window_events"] == 5000
        assert [e["data"]["message"] for e in logs["events"]] == ["only in memory"]
        for step in range(6000):
            server.log({"x": step}, step=step, run="second")
        answer = httpx.get(base + "/api/runs/first/export?format=csv", timeout=30)
        assert answer.headers["x-stream-hub-coverage"] == "window" and csv_rows(answer.text) == []
    finally:
        server.stop()


TRAIN_BADLY = """
import math, sys
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
run = sys.argv[1]
for step in range(50):
    # Three metrics, two curves allowed (STREAM_HUB_MAX_SERIES=2): the third's values are dropped.
    server.log({"loss": 1.0 / (step + 1), "acc": step / 50, "lr": 0.1}, step=step, run=run)
server.log({"loss": math.nan}, step=50, run=run)  # the hub raises an alert
server.publish("log", {"message": "Traceback (most recent call last):\\n  boom", "level": "ERROR"}, run=run)
for step in range(51, 12_051):
    server.log({"loss": 0.5}, step=step, run=run)
release_stream_server()
print("done", flush=True)
"""


def test_past_runs_carry_their_drops_alerts_logs_and_whole_export(tmp_path: Path, spawn: Spawner) -> None:
    home = tmp_path / "home"
    env = child_env(STREAM_HUB_HOME=str(home), STREAM_HUB_MAX_SERIES="2")
    result = run(["-c", textwrap.dedent(TRAIN_BADLY), "crashed"], prefix=PYTHON, env=env, timeout=120)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr
    served = spawn.serve(env=child_env(STREAM_HUB_HOME=str(home)))
    listed = httpx.get(served.rest + "/api/runs", timeout=30).json()
    past = next(r for r in listed["runs"] if r["run"] == "crashed")
    assert past["persisted"] is True
    # The third metric's values (some may count as sampled instead: the hub was overloaded).
    assert set(past["dropped"]) == {"forwarder", "hub", "store", "curve", "sampled"}
    assert 0 < past["dropped"]["curve"] + past["dropped"]["sampled"]
    assert past["alerts"]["count"] >= 1 and past["alerts"]["level"] == "error"
    logs, _pages, coverage = all_logs(served.rest, run="crashed", limit=10)
    assert coverage == "record"
    assert any(e["type"] == "log" and "Traceback" in e["data"]["message"] for e in logs)
    assert any(e["type"] == "alert" for e in logs)
    answer = httpx.get(served.rest + "/api/runs/crashed/export?format=csv&metric=loss", timeout=60)
    assert answer.headers["x-stream-hub-coverage"] == "record"
    assert len(csv_rows(answer.text)) == 12_051
    # The persisted runs page on their own: none (the live runs alone, as a dashboard polls), a match.
    alone = httpx.get(served.rest + "/api/runs", params={"past_limit": 0}, timeout=30).json()
    assert not any(r.get("persisted") for r in alone["runs"])
    found = httpx.get(served.rest + "/api/runs", params={"past_limit": 5, "past_match": "rash"}, timeout=30)
    assert [r["run"] for r in found.json()["runs"] if r.get("persisted")] == ["crashed"]
    assert found.json()["past_total"] == 1
    none = httpx.get(served.rest + "/api/runs", params={"past_match": "nobody"}, timeout=30).json()
    assert none["past_total"] == 0 and not any(r.get("persisted") for r in none["runs"])
