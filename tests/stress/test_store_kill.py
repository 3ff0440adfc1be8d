"""A store survives its writer being killed with SIGKILL while it writes as
fast as it can, again and again: the file stays intact, each new process
goes on in an epoch of its own (the killed one may have served seqs it never
wrote), numbering after the last stored seq, and no seq is stored twice."""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
from pathlib import Path

import orjson

from stream_hub.store import chunks

from ..conftest import wait_for
from ..integration.test_processes import start
from ..processes import Spawner, child_env

CYCLES = 5


def written(db: Path, run: str) -> int:
    """Events of ``run`` in the file now (read while the writer writes)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=10)
    try:
        quoted = orjson.dumps(run).decode()
        return int(
            conn.execute(
                "SELECT coalesce(sum(count), 0) FROM chunks WHERE instr(runs, ?)", (quoted,)
            ).fetchone()[0]
        )
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        conn.close()


def test_five_kill_9_cycles_during_heavy_logging_leave_the_store_intact(
    spawn: Spawner, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    env = child_env(STREAM_HUB_STORE=str(db))
    rng = random.Random(7)
    epochs = set()
    for cycle in range(CYCLES):
        run = f"cycle{cycle}"
        trainer, _ready = start(spawn, env, "--steps", "100000000", "--interval", "0", "--run", run, "--hold")
        wait_for(lambda run=run: written(db, run) >= 20_000, timeout=60, what=f"{run} writing")
        threading.Event().wait(rng.uniform(0.0, 0.3))  # the kill lands anywhere: in a write, or between
        trainer.popen.send_signal(signal.SIGKILL)
        trainer.popen.wait(10)
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            epochs.update(epoch for (epoch,) in conn.execute("SELECT epoch FROM epochs"))
            last_seqs = [row[0] for row in conn.execute("SELECT last_seq FROM chunks ORDER BY id")]
        finally:
            conn.close()
        assert last_seqs == sorted(set(last_seqs)), "a seq stored twice, or out of order"
    assert len(epochs) == CYCLES  # each process after a kill: a new epoch
    conn = sqlite3.connect(db)
    seqs = [
        seq
        for (body,) in conn.execute("SELECT body FROM chunks ORDER BY id")
        for seq in chunks.decode(body)[0]
    ]
    conn.close()
    assert seqs == sorted(set(seqs)) and len(seqs) >= CYCLES * 20_000
