"""Forked workers' last events arrive (issue: four DataLoader-like workers
logging 5 000 events each and returning lost more than half of them).

A multiprocessing child ends with ``os._exit`` once its work returns, and a
pool's workers are ended with SIGTERM when the pool closes: neither runs the
stop that would send what is still queued. Each scenario runs in a fresh
process (it forks), hosting on port 0, and counts what its hub received.
"""

from __future__ import annotations

import json

import pytest

from ..processes import PYTHON, run

SCRIPT = """
import json, multiprocessing, signal, sys, time
import httpx
from stream_hub import StreamConfig, get_stream_server, get_stream_server_manager, release_stream_server

N, MODE = int(sys.argv[1]), sys.argv[2]

def work(worker):
    server = get_stream_server_manager().server
    for i in range(N):
        server.log({"i": float(i)}, step=i, run=f"w{worker}")
    return N

def pool_then_sigterm(worker):
    # The worker's own handler, set after the fork: it must still run after ours.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))
    return work(worker)

server = get_stream_server(config=StreamConfig(
    sse_port=0, ws_port=0, rest_port=0, port_conflict="fail", history_size=100_000))
ctx = multiprocessing.get_context("fork")
if MODE == "process":
    workers = [ctx.Process(target=work, args=(w,)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join()
    codes = [p.exitcode for p in workers]
else:
    target = work if MODE == "pool" else pool_then_sigterm
    with ctx.Pool(4) as pool:  # leaving the block terminates the workers: SIGTERM
        pool.map(target, range(4), chunksize=1)
    codes = []
rest = server.urls["rest"]
deadline = time.monotonic() + 30
while True:
    body = httpx.get(rest + "/api/runs", timeout=10).json()
    got = {r["run"]: r["metric_events"] for r in body["runs"] if r["run"].startswith("w")}
    if sum(got.values()) == 4 * N or time.monotonic() > deadline:
        break
    time.sleep(0.1)
print(json.dumps({"got": got, "codes": codes}))
release_stream_server()
"""


@pytest.mark.parametrize("mode", ["process", "pool", "pool-with-handler"])
def test_every_event_of_four_forked_workers_arrives(mode: str) -> None:
    done = run(["-c", SCRIPT, "5000", mode], prefix=PYTHON, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["got"] == {f"w{w}": 5000 for w in range(4)}, done.stderr[-3000:]
    if mode == "process":
        assert result["codes"] == [0, 0, 0, 0]


OWNER = """
import json, multiprocessing, time
import httpx
from stream_hub import StreamConfig, get_stream_server, release_stream_server

def child():
    server = get_stream_server()  # the parent's (forked): one more reference, in the child
    server.log({"c": 1.0}, step=1)
    release_stream_server()  # its last release: it must not end the parent's run

server = get_stream_server(config=StreamConfig(sse_port=0, ws_port=0, rest_port=0, port_conflict="fail"))
server.log({"p": 1.0}, step=0)
p = multiprocessing.get_context("fork").Process(target=child)
p.start()
p.join()
rest = server.urls["rest"]
deadline = time.monotonic() + 30
while True:
    runs = {r["run"]: r for r in httpx.get(rest + "/api/runs", timeout=10).json()["runs"]}
    run = next(iter(runs.values()), None)
    if (run and run["metric_events"] == 2) or time.monotonic() > deadline:
        break
    time.sleep(0.05)
print(json.dumps({"run": run["run"], "state": run["state"], "events": run["events"], "code": p.exitcode}))
release_stream_server()
"""


def test_a_multiprocessing_child_never_ends_its_parents_run() -> None:
    done = run(["-c", OWNER], prefix=PYTHON, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    # Both metrics in one run, and no run_end from the child: still running.
    assert result["state"] == "running" and result["events"] == 2, result
