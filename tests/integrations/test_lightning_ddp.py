"""Lightning under its own DDP launcher: ``Trainer(strategy="ddp", devices=2,
accelerator="cpu")`` started as one ``python train.py`` (Lightning re-launches
the script for rank 1 with ``LOCAL_RANK``/``NODE_RANK``/``WORLD_SIZE`` and no
``RANK``).

Before: only rank 0 published — rank 1 said at INFO that stream_hub knew no
rank for it and stayed silent — and the hub went with rank 0's process. Now
both ranks publish into one run, each event stamped with its rank; rank 0
exits while rank 1 still logs, and the hub (same ports) takes rank 1's
events — a client following from the start sees every one, once — and
everything is persisted.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import psutil

from stream_hub.client import follow

from ..conftest import wait_for
from ..integration.test_processes import hub_env
from ..processes import PYTHON, Spawner, free_ports, run
from .test_frameworks import framework

SCRIPT = Path(__file__).parent / "scripts" / "lightning_ddp.py"


def _lines(text: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in text:
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue  # Lightning's own prints share stdout
        if isinstance(value, dict):
            out.append(value)
    return out


def test_lightning_ddp_ranks_share_one_run_that_outlives_rank_0(spawn: Spawner, tmp_path: Path) -> None:
    framework("torch")
    framework("lightning")
    ports = free_ports(3)
    go = tmp_path / "go"
    proc = spawn.start(
        [str(SCRIPT), str(tmp_path / "root"), str(go)], env=hub_env(ports), prefix=PYTHON
    )  # rank 0; rank 1 is its child, sharing its stdout
    rank1_pid: int | None = None
    # A client following the hub from its start, as the dashboard does: it
    # must see every metric of both ranks, those after rank 0's exit too, once.
    seen: list[dict[str, Any]] = []

    def watch() -> None:
        url = f"http://127.0.0.1:{ports[0]}"
        with follow(url, types="metric", since=0, on_shutdown="wait", retry_for=240) as events:
            for event in events:
                seen.append(event)
                if event.get("step") == 1004:
                    return

    follower = threading.Thread(target=watch, name="test-follower", daemon=True)
    follower.start()
    try:
        lines = proc.out.wait(
            lambda got: got if any("after" in v for v in _lines(got)) else None,
            240,
            "rank 1's metrics after rank 0's exit",
        )
        # (rank 1 holds the pipes too: the process is waited for, not its output)
        assert proc.popen.wait(30) == 0, proc.err.text[-3000:]
        ranks = {v["rank"]: v for v in _lines(lines) if "rank" in v}
        assert sorted(ranks) == [0, 1], lines
        run_name = ranks[0]["run"]
        assert ranks[1]["run"] == run_name  # one run for the job, not one per process
        rank1_pid = ranks[1]["pid"]

        # Live, after rank 0 exited: the hub is there on the same ports, hosted by rank 1.
        rest = f"http://127.0.0.1:{ports[2]}"
        status = httpx.get(f"{rest}/api/status", timeout=10).json()
        assert status["pid"] == rank1_pid, status

        def after_events() -> list[dict[str, Any]]:
            params = {"run": run_name, "since": 0, "limit": 1000, "types": "metric"}
            events = httpx.get(f"{rest}/api/history", params=params, timeout=10).json()["events"]
            return [e for e in events if "after" in e.get("metrics", {})]

        after = wait_for(lambda: len(after_events()) == 5 and after_events(), 30, "rank 1's late metrics")
        assert {e["rank"] for e in after} == {1}
        assert [e["step"] for e in after] == list(range(1000, 1005))
        follower.join(60)
        assert not follower.is_alive(), f"the follower stopped at {seen[-1:]}"
        assert len({e["seq"] for e in seen}) == len(seen)  # each once
        followed = sorted((e.get("rank"), e["step"]) for e in seen if e["run"] == run_name)
        assert followed == [
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (1, 1),
            (1, 2),
            *((1, s) for s in range(1000, 1005)),
        ]
        running = httpx.get(f"{rest}/api/runs", timeout=10).json()
        runs = running["runs"] if isinstance(running, dict) else running
        ours = [r for r in runs if r.get("run", r.get("name")) == run_name]
        assert ours, runs
    finally:
        go.touch()
        if rank1_pid is not None:
            try:
                psutil.Process(rank1_pid).wait(60)
            except psutil.NoSuchProcess:
                pass
            except psutil.TimeoutExpired:
                os.kill(rank1_pid, signal.SIGKILL)
                raise

    # Persisted: both ranks' metrics in one run, which ended when its last rank did.
    listed = run(["runs", "--json"], timeout=60)
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["run"] == run_name)
    exported = run(["export", "--run", run_name, "--format", "jsonl"], timeout=60)
    assert exported.returncode == 0, exported.stderr
    events = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    assert row["status"] == "finished", json.dumps([row, events], indent=None)
    losses = [e for e in events if e["type"] == "metric" and "train_loss" in e["metrics"]]
    assert sorted({e.get("rank") for e in losses}) == [0, 1], losses
    for rank in (0, 1):
        assert sorted(e["step"] for e in losses if e["rank"] == rank) == [0, 1, 2]
    assert [e["step"] for e in events if e["type"] == "metric" and "after" in e["metrics"]] == [
        1000,
        1001,
        1002,
        1003,
        1004,
    ]
    assert [e["data"] for e in events if e["type"] == "config"] == [{"lr": 0.1}]
