"""The end of a job loses nothing: four torchrun-style ranks on the same ports
log together and end together, however each one ends, and a follower
connected to the hub sees every event while a hub of the job is up; every
event is persisted too (``stream-hub runs --json``, ``stream-hub export``).

How a rank ends (contract v3, "Nothing lost at the end of a job"):

- ``exit``: it releases its server and returns (exit status 0);
- ``raise``: an uncaught exception after its last step (status 1, a traceback);
- ``sigterm``: the test sends SIGTERM once it has logged its last step, as
  torchrun does to the surviving ranks when one fails; it dies by the signal
  (SIGTERM's default action, taken after the library got its events out);
- ``sigterm-handler``: the same, with a SIGTERM handler of the user's (or the
  launcher's) set before the server started: it still runs (status 143).

Before, the ranks that were not hosting lost their last steps (the host
handed over to a rank that was exiting too, and nobody hosted). The host now
serves on until its joined processes have handed over and left
(``drain_timeout``). Once here; 20 times in a row in the stress suite
(``tests/stress/test_end_of_job.py``).
"""

from __future__ import annotations

import json
import signal
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from ..clients import SSEStream
from ..processes import Proc, Spawner, free_ports, run
from .test_processes import hub_env, release, start

RANKS = 4
STEPS = 200

#: The trainer's flags for each way a rank ends.
ENDING_FLAGS = {
    "exit": (),
    "raise": ("--raise",),
    "sigterm": ("--await-sigterm",),
    "sigterm-handler": ("--await-sigterm", "--sigterm-handler"),
}

#: The jobs: how each rank ends, rank 0 (started first: the host) first.
JOBS = {
    "exit": ("exit",) * RANKS,
    "raise": ("raise",) * RANKS,
    "sigterm": ("sigterm",) * RANKS,
    "sigterm-handler": ("sigterm-handler",) * RANKS,
    "mixed-host-sigterm": ("sigterm", "raise", "exit", "exit"),
    "mixed-host-raises": ("raise", "sigterm-handler", "exit", "sigterm"),
}

#: The status each ending leaves its run in.
RUN_STATUS = {"exit": "finished", "raise": "failed", "sigterm": "killed", "sigterm-handler": "killed"}


def _ended_as_it_should(proc: Proc, ending: str) -> None:
    code = proc.wait(60)
    err = proc.err.text[-3000:]
    if ending == "exit":
        assert code == 0, err
    elif ending == "raise":
        assert code == 1, err
        assert "Traceback" in err and "RuntimeError: training failed" in err, err
    elif ending == "sigterm":
        assert code == -signal.SIGTERM, (code, err)  # the default action: died by the signal
    else:  # the user's handler ran, after the library's, and exited as it does
        assert code == 128 + signal.SIGTERM, (code, err)
        assert {"sigterm": proc.pid} in [json.loads(line) for line in proc.out.lines], proc.out.text


def _persisted(runs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What ``stream-hub runs --json`` says of ``runs`` (the test session's STREAM_HUB_HOME)."""
    listed = run(["runs", "--json"], timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = {row["run"]: row for row in json.loads(listed.stdout)}
    return {name: rows[name] for name in runs if name in rows}


def _exported(name: str) -> list[dict[str, Any]]:
    """Every persisted event of run ``name`` (``stream-hub export --format jsonl``)."""
    exported = run(["export", "--run", name, "--format", "jsonl"], timeout=60)
    assert exported.returncode == 0, exported.stderr
    return [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]


def _one_job(spawn: Spawner, endings: Sequence[str] = JOBS["exit"]) -> None:
    """Four ranks that log 200 steps 2 ms apart and end as ``endings`` say;
    a follower sees all 800 metric events live, and all are persisted."""
    ports = free_ports(3)
    env = hub_env(ports)
    job = uuid.uuid4().hex[:8]  # the session's data directory keeps every job's runs
    names = [f"{job}-rank{rank}" for rank in range(RANKS)]
    ranks = []
    for rank, ending in enumerate(endings):
        proc, ready = start(
            spawn,
            {**env, "RANK": str(rank), "WORLD_SIZE": str(RANKS)},
            "--steps",
            str(STEPS),
            "--interval",
            "0.002",
            "--run",
            names[rank],
            "--go",
            *ENDING_FLAGS[ending],
        )
        ranks.append((proc, ready))
    roles = [ready["ready"] for _, ready in ranks]
    assert roles == ["host"] + ["joined"] * (RANKS - 1), roles  # each started once the previous one was ready
    host = ranks[0][1]
    stream = SSEStream(f"{host['urls']['sse']}/events", params={"last_event_id": 0}, read_timeout=60)
    seen: dict[str, int] = {}
    frames: list[Any] = []

    def follow() -> None:
        while (frame := stream.next()) is not None:
            frames.append(frame)
            if frame.event == "metric":
                name = frame.json["run"]
                seen[name] = seen.get(name, 0) + 1
            if frame.event == "shutdown":
                return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    for proc, _ in ranks:  # all at once: log 200 steps 2 ms apart, then end
        release(proc)
    for (proc, _), ending in zip(ranks, endings):  # each as soon as it has logged its last step
        if ending.startswith("sigterm"):
            proc.out.wait(lambda lines: any('"logged"' in line for line in lines), 60, "the last step")
            proc.signal(signal.SIGTERM)
    for (proc, _), ending in zip(ranks, endings):
        _ended_as_it_should(proc, ending)
    follower.join(60)
    stream.close()
    assert not follower.is_alive(), "the follower got no shutdown within 60 s"
    # Live: the host served until every rank had handed over its events, then stopped.
    # (Only this job's runs: a hub with a store also takes what earlier processes spooled.)
    ours = {name: seen.get(name, 0) for name in names}
    assert ours == {name: STEPS for name in names}, (endings, seen, [f.event for f in frames[-5:]])
    assert frames and frames[-1].event == "shutdown"
    assert json.loads(frames[-1].data)["data"]["reason"] == "stop"  # nobody was left to hand over to

    # Persisted: each rank's run has all its events, and ended as its rank did.
    persisted = _persisted(names)
    assert sorted(persisted) == sorted(names), (endings, sorted(persisted))
    for name, ending in zip(names, endings):
        events = _exported(name)
        metrics = [e for e in events if e["type"] == "metric"]
        assert sorted(e["step"] for e in metrics) == list(range(STEPS)), (name, ending, len(metrics))
        row = persisted[name]
        assert row["events"] == len(events), (name, ending, row, [e["type"] for e in events[-3:]])
        assert row["status"] == RUN_STATUS[ending], (name, ending, row)


@pytest.mark.parametrize("job", list(JOBS))
def test_four_ranks_that_end_together_lose_no_event(spawn: Spawner, job: str) -> None:
    _one_job(spawn, JOBS[job])
