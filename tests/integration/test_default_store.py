"""Persistent by default (contract v3): a newcomer trains with no
configuration, the process exits, and the run is still there — listed by
``stream-hub runs``, served with its whole curves by ``stream-hub serve``,
exported with ``stream-hub export`` — from the files every hub keeps under
``STREAM_HUB_HOME``. Opt-outs keep nothing; a successor continues its host's
file; events no hub took are spooled and taken by the next hub.

Each test has a data directory of its own (``home``), given to every
process it starts.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import wait_for
from ..processes import PYTHON, Spawner, child_env, free_ports, run

STEPS = 300

TRAIN = """
import sys
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
for step in range({steps}):
    server.log({{"loss": 1.0 / (step + 1), "acc": step / {steps}}}, step=step, run=sys.argv[1])
release_stream_server()
print("done", flush=True)
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def env_of(home: Path, **changes: str | None) -> dict[str, str]:
    return child_env(STREAM_HUB_HOME=str(home), **changes)


def train(home: Path, run_name: str, steps: int = STEPS, **env: str | None) -> None:
    result = run(
        ["-c", TRAIN.format(steps=steps), run_name], prefix=PYTHON, env=env_of(home, **env), timeout=60
    )
    assert result.returncode == 0 and "done" in result.stdout, result.stderr


def runs_json(home: Path) -> dict[str, dict[str, Any]]:
    result = run(["runs", "--json"], env=env_of(home))
    assert result.returncode == 0, result.stderr
    return {row["run"]: row for row in json.loads(result.stdout)}


def store_files(home: Path) -> list[Path]:
    return sorted((home / "store").glob("*/*.db"))


def metric_rows(text: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [e for e in events if e["type"] == "metric"]


def test_a_run_outlives_its_process_listed_served_and_exported(home: Path, spawn: Spawner) -> None:
    train(home, "first")
    train(home, "second")
    runs = runs_json(home)
    assert {"first", "second"} <= set(runs)
    for name in ("first", "second"):
        assert runs[name]["status"] == "finished" and runs[name]["live"] is False
        assert runs[name]["last_step"] == STEPS - 1
        assert runs[name]["started"] <= runs[name]["ended"]
    # Each hub had a file of its own, owner-only.
    files = store_files(home)
    assert len(files) == 2
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)

    # With no hub: export reads the persisted run, every event.
    exported = run(["export", "--run", "first", "--format", "jsonl"], env=env_of(home))
    assert exported.returncode == 0, exported.stderr
    rows = metric_rows(exported.stdout)
    assert [r["step"] for r in rows] == list(range(STEPS))

    # stream-hub serve with no store flag shows both finished runs with their whole curves.
    served = spawn.serve(env=env_of(home))
    listed = httpx.get(served.rest + "/api/runs", timeout=10).json()
    persisted = {r["run"]: r for r in listed["runs"] if r.get("persisted")}
    assert {"first", "second"} <= set(persisted)
    assert persisted["first"]["state"] == "finished"
    assert persisted["first"]["metrics"] == ["acc", "loss"]
    series = httpx.get(served.rest + "/api/runs/first/series", params={"metric": "loss"}, timeout=10).json()
    assert series["points_seen"] == STEPS
    assert series["steps"][0] == 0 and max(series["maxs"]) == 1.0
    body = httpx.get(served.rest + "/api/runs/second/export", params={"format": "jsonl"}, timeout=10)
    assert body.status_code == 200
    assert len(metric_rows(body.text)) == STEPS
    # Export through the live hub falls back to the persisted run too.
    exported = run(["export", "--run", "second", "--format", "csv", *served.port_args()], env=env_of(home))
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == STEPS + 1  # the header line
    # And the run list pages.
    page = httpx.get(served.rest + "/api/runs", params={"offset": 1, "limit": 1}, timeout=10).json()
    assert page["total"] == listed["total"] and len(page["runs"]) == 1
    assert page["runs"][0]["run"] == listed["runs"][1]["run"]


@pytest.mark.parametrize("opt_out", ["off", "", "false"])
def test_opting_out_keeps_nothing(home: Path, opt_out: str) -> None:
    train(home, "kept-nowhere", STREAM_HUB_STORE=opt_out)
    assert store_files(home) == []
    assert "kept-nowhere" not in runs_json_or_empty(home)


def runs_json_or_empty(home: Path) -> dict[str, Any]:
    result = run(["runs", "--json"], env=env_of(home))
    return {row["run"]: row for row in json.loads(result.stdout)} if result.returncode == 0 else {}


def test_store_false_in_code_keeps_nothing(home: Path) -> None:
    code = textwrap.dedent(
        """
        from stream_hub import StreamConfig, get_stream_server, release_stream_server
        server = get_stream_server(config=StreamConfig(sse_port=0, ws_port=0, rest_port=0, store=False))
        server.log({"x": 1.0}, run="nowhere")
        assert server.status().get("store") is None
        release_stream_server()
        """
    )
    result = run(["-c", code], prefix=PYTHON, env=env_of(home))
    assert result.returncode == 0, result.stderr
    assert store_files(home) == []


def test_a_hub_that_logged_nothing_leaves_no_file(home: Path) -> None:
    code = "import stream_hub\nstream_hub.get_stream_server()\nstream_hub.release_stream_server()"
    result = run(["-c", code], prefix=PYTHON, env=env_of(home))
    assert result.returncode == 0, result.stderr
    assert store_files(home) == []


def test_hubs_on_other_ports_at_once_each_persist(home: Path) -> None:
    # Two trainings at the same time on their own ports: neither is refused a store.
    code = TRAIN.format(steps=STEPS).replace("release_stream_server()", "input()\nrelease_stream_server()")
    with Spawner() as spawner:
        procs = [
            spawner.start(["-c", code, name], prefix=PYTHON, env=env_of(home), stdin=True)
            for name in ("a", "b")
        ]
        for proc in procs:
            assert proc.popen.stdin is not None
            proc.popen.stdin.write("\n")
            proc.popen.stdin.flush()
        for proc in procs:
            assert proc.wait(60) == 0, proc.err.text
    assert len(store_files(home)) == 2
    runs = runs_json(home)
    assert runs["a"]["status"] == runs["b"]["status"] == "finished"


def test_a_successor_continues_its_hosts_file(home: Path, spawn: Spawner) -> None:
    # Host and joined process on the same ports; the host stops first and
    # hands over; the joined process logs on as the host.
    ports = free_ports(3)
    env = env_of(
        home,
        STREAM_HUB_SSE_PORT=str(ports[0]),
        STREAM_HUB_WS_PORT=str(ports[1]),
        STREAM_HUB_REST_PORT=str(ports[2]),
        STREAM_HUB_PORT_CONFLICT="auto",
    )
    code = textwrap.dedent(
        """
        import json, sys, time
        from stream_hub import get_stream_server, release_stream_server
        server = get_stream_server()
        print(json.dumps({"role": server.role}), flush=True)
        sys.stdin.readline()
        for step in range(100):
            server.log({"x": float(step)}, step=step, run=sys.argv[1])
        print(json.dumps({"logged": server.role}), flush=True)
        sys.stdin.readline()
        deadline = time.monotonic() + 60  # the hand-over completes on the joined side after the host's exit
        while server.role != "host" and sys.argv[1] == "from-joined" and time.monotonic() < deadline:
            time.sleep(0.01)
        print(json.dumps({"before_release": server.role}), flush=True)
        release_stream_server()
        """
    )
    host = spawn.start(["-c", code, "from-host"], prefix=PYTHON, env=env, stdin=True)
    assert json.loads(host.out.first())["role"] == "host"
    joined = spawn.start(["-c", code, "from-joined"], prefix=PYTHON, env=env, stdin=True)
    assert json.loads(joined.out.first())["role"] == "joined"
    for proc in (host, joined):
        assert proc.popen.stdin is not None
        proc.popen.stdin.write("\n")
        proc.popen.stdin.flush()
    wait_for(lambda: len(host.out.lines) >= 2 and len(joined.out.lines) >= 2, timeout=60)
    # The host leaves while the other process still runs: it hands over.
    assert host.popen.stdin is not None
    host.popen.stdin.write("\n")
    host.popen.stdin.flush()
    assert host.wait(60) == 0, host.err.text
    assert joined.popen.stdin is not None
    joined.popen.stdin.write("\n")
    joined.popen.stdin.flush()
    assert joined.wait(60) == 0, joined.err.text
    assert json.loads(joined.out.lines[-1])["before_release"] == "host"
    files = store_files(home)
    assert len(files) == 1, files  # the successor wrote on the host's file
    with sqlite3.connect(files[0]) as conn:
        stored = {run for (run,) in conn.execute("SELECT run FROM runs")}
    assert {"from-host", "from-joined"} <= stored


def test_events_no_hub_took_are_spooled_and_taken_by_the_next_hub(home: Path) -> None:
    # A multiprocessing child whose parent (the host) was killed: its exit
    # cannot hand its events to any hub, so it keeps them in the spool.
    code = textwrap.dedent(
        """
        import multiprocessing as mp, os, signal, threading
        from stream_hub import get_stream_server

        def work(parent):
            pause = threading.Event()
            while os.getppid() == parent:  # until the host is dead (the child is reparented)
                pause.wait(0.01)
            server = get_stream_server()
            for step in range(1000):
                server.log({"x": float(step)}, step=step, run="orphan")

        if __name__ == "__main__":
            get_stream_server()
            child = mp.get_context("fork").Process(target=work, args=(os.getpid(),))
            child.start()
            print(child.pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # the host dies at once
        """
    )
    with Spawner() as spawner:
        parent = spawner.start(["-c", code], prefix=PYTHON, env=env_of(home))
        child_pid = int(parent.out.first())
        assert parent.wait(60) == -signal.SIGKILL
        wait_for(lambda: not _alive(child_pid), timeout=90)
    spooled = list((home / "spool").glob("*.json"))
    assert len(spooled) == 1, parent.err.text
    assert len(json.loads(spooled[0].read_bytes())["events"]) == 1000
    # The next hub takes them: numbered, in their run, and the spool is empty.
    train(home, "next")
    assert list((home / "spool").iterdir()) == []
    exported = run(["export", "--run", "orphan", "--format", "jsonl"], env=env_of(home))
    assert exported.returncode == 0, exported.stderr
    rows = metric_rows(exported.stdout)
    assert [r["step"] for r in rows] == list(range(1000))
    assert len({r["seq"] for r in rows}) == 1000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of the killed parent's (reparented to init or a subreaper) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
