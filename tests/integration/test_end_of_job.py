"""The end of a job loses nothing: four ranks on the same ports log together
and exit together, and a follower connected to the hub sees every event.

Before, the ranks that were not hosting lost their last steps (the host
handed over to a rank that was exiting too, and nobody hosted). The host now
serves on until its joined processes have handed over and left
(``drain_timeout``). Once here; 20 times in a row in the stress suite
(``tests/stress/test_end_of_job.py``).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..clients import SSEStream
from ..processes import Spawner, free_ports
from .test_processes import done, hub_env, release, start

RANKS = 4
STEPS = 200


def _one_job(spawn: Spawner) -> None:
    ports = free_ports(3)
    env = hub_env(ports)
    ranks = []
    for rank in range(RANKS):
        proc, ready = start(
            spawn,
            {**env, "RANK": str(rank), "WORLD_SIZE": str(RANKS)},
            "--steps",
            str(STEPS),
            "--interval",
            "0.002",
            "--run",
            f"rank{rank}",
            "--go",
        )
        ranks.append((proc, ready))
    host = next(ready for _, ready in ranks if ready["ready"] == "host")
    assert sorted(r["ready"] for _, r in ranks) == ["host"] + ["joined"] * (RANKS - 1)
    stream = SSEStream(f"{host['urls']['sse']}/events", params={"last_event_id": 0}, read_timeout=60)
    seen: dict[str, int] = {}
    frames: list[Any] = []

    def follow() -> None:
        while (frame := stream.next()) is not None:
            frames.append(frame)
            if frame.event == "metric":
                run = frame.json["run"]
                seen[run] = seen.get(run, 0) + 1
            if frame.event == "shutdown":
                return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    for proc, _ in ranks:  # all at once: log 200 steps 2 ms apart, then release and exit
        release(proc)
    for proc, _ in ranks:
        done(proc, timeout=60)
    follower.join(60)
    stream.close()
    assert seen == {f"rank{r}": STEPS for r in range(RANKS)}, (seen, [f.event for f in frames[-5:]])
    assert frames and frames[-1].event == "shutdown"
    assert json.loads(frames[-1].data)["data"]["reason"] == "stop"  # nobody was left to hand over to


def test_four_ranks_that_exit_together_lose_no_event(spawn: Spawner) -> None:
    _one_job(spawn)
