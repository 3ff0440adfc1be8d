"""Joining a hub over shared memory, with real processes: the path in use,
overflow announced as a gap and counted, a SIGKILLed writer's last events,
a hand-over that delivers every event once, forked children, no thread of
ours at work per event, and a CPU-bound loop whose events arrive while it
spins.

The host is ``tests/trainer.py``; the joined processes are small scripts
(``JOINER`` and friends) run with the same fixed free ports; the registry
(and so the rings) is the test run's own ``XDG_RUNTIME_DIR`` (see conftest).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import psutil

from ..conftest import wait_for
from ..processes import PYTHON, Proc, Spawner, alive, free_ports
from .test_processes import _pid_of, done, history, hub_env, release, runs, start

# Logs ``--count`` events of run ``j`` when told (a line on stdin), prints its
# status, waits for another line, then releases its server.
JOINER = """
import json, sys
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
print(json.dumps({"ready": server.role, "pid": __import__("os").getpid()}), flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[1])):
    server.log({"loss": 1.0 / (i + 1), "i": float(i)}, step=i, run="j")
print(json.dumps({"logged": int(sys.argv[1]), "status": server.status()}), flush=True)
sys.stdin.readline()
release_stream_server()
print(json.dumps({"done": True}), flush=True)
"""


def shm_env(ports: list[int], **env: str) -> dict[str, str]:
    """A process of these ports joining over shared memory (opt-in: the default is the socket)."""
    env.setdefault("STREAM_HUB_SHARED_MEMORY", "on")
    return hub_env(ports, **env)


def joiner(spawn: Spawner, ports: list[int], code: str = JOINER, *args: str, **env: str) -> Proc:
    proc = spawn.start(["-c", code, *args], env=shm_env(ports, **env), prefix=PYTHON, stdin=True)
    line = proc.out.wait(lambda lines: lines, timeout=30, what="the joiner's ready line")
    assert json.loads(line[0])["ready"] == "joined", proc.err.text[-2000:]
    return proc


def tell(proc: Proc) -> None:
    release(proc)


def line_with(proc: Proc, key: str, timeout: float = 30.0) -> dict[str, Any]:
    try:
        lines = proc.out.wait(lambda lines: [x for x in lines if f'"{key}"' in x], timeout, what=key)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its stderr:\n{proc.err.text[-4000:]}") from None
    return dict(json.loads(lines[-1]))


def ring_files(ports: list[int]) -> list[Path]:
    """The rings of the hub of these ports."""
    directory = Path(os.environ["XDG_RUNTIME_DIR"]) / "stream_hub"
    pattern = f"*-{ports[0]}-{ports[1]}-{ports[2]}.ring-*"
    return sorted(directory.glob(pattern)) if directory.is_dir() else []


def stop(proc: Proc) -> None:
    """SIGSTOP ``proc`` and wait until every thread of it is stopped: the
    signal is delivered asynchronously, and a hub's loop thread on another
    CPU may read a ring for a moment after kill() returned."""
    proc.signal(signal.SIGSTOP)

    def all_stopped() -> bool:
        tasks = Path(f"/proc/{proc.pid}/task")
        try:  # a thread may end meanwhile
            states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in tasks.iterdir()]
        except OSError:
            return False
        return all(state in ("T", "t") for state in states)

    wait_for(all_stopped, what=f"every thread of pid {proc.pid} stopped")


def all_events(rest: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    since = 0
    while True:
        page = httpx.get(f"{rest}/api/history", params={"since": since, "limit": 10_000}, timeout=10).json()
        events += page["events"]
        if not page["more"]:
            return events
        since = page["events"][-1]["seq"]


def test_a_joined_process_logs_over_shared_memory_and_says_so(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, ready = start(spawn, shm_env(ports), "--steps", "1", "--interval", "0", "--hold")
    rest = ready["urls"]["rest"]
    shm = joiner(spawn, ports, JOINER, "500")
    over_socket = joiner(
        spawn, ports, JOINER.replace('run="j"', 'run="k"'), "500", STREAM_HUB_SHARED_MEMORY="off"
    )
    tell(shm)
    tell(over_socket)
    status = line_with(shm, "logged")["status"]
    assert status["forwarding"]["path"] == "shared-memory" and status["forwarding"]["dropped"] == 0
    assert line_with(over_socket, "logged")["status"]["forwarding"]["path"] == "socket"
    assert len(ring_files(ports)) == 1  # the socket joiner has none
    wait_for(
        lambda: runs(rest).get("j", {}).get("metric_events") == 500, what="500 events over shared memory"
    )
    wait_for(lambda: runs(rest).get("k", {}).get("metric_events") == 500, what="500 events over the socket")
    assert [e["step"] for e in history(rest, "j")] == list(range(500))
    sources = {s["pid"]: s for s in httpx.get(f"{rest}/api/sources", timeout=5).json()["sources"]}
    assert sources[shm.pid]["path"] == "shared-memory" and sources[shm.pid]["events"] == 500
    assert sources[over_socket.pid]["path"] == "socket"
    for proc in (shm, over_socket):
        tell(proc)
        assert proc.wait(30) == 0, proc.err.text[-2000:]
    assert runs(rest)["j"]["state"] == "finished"
    wait_for(lambda: not ring_files(ports), what="the ring removed once read")
    release(host)
    done(host)


def test_overflow_is_counted_and_announced_as_a_gap(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, ready = start(spawn, shm_env(ports), "--steps", "1", "--interval", "0", "--hold")
    rest = ready["urls"]["rest"]
    proc = joiner(spawn, ports, JOINER, "200000", STREAM_HUB_SHUTDOWN_TIMEOUT="30")
    stop(host)  # nobody reads the ring: it fills up
    try:
        tell(proc)
        forwarding = line_with(proc, "logged", timeout=60)["status"]["forwarding"]
    finally:
        host.signal(signal.SIGCONT)
    dropped = forwarding["dropped"]
    assert 0 < dropped < 200_000 and forwarding["written"] + dropped == 200_000
    wait_for(
        lambda: runs(rest).get("j", {}).get("metric_events") == 200_000 - dropped,
        30,
        what="what the ring held",
    )
    # Announced where the events went missing: after the last one the ring held.
    wait_for(lambda: [e for e in all_events(rest) if e["type"] == "gap"], what="the gap")
    events = all_events(rest)
    gaps = [k for k, e in enumerate(events) if e["type"] == "gap"]
    assert [events[k]["data"]["lost"] for k in gaps] == [dropped]
    assert events[gaps[0]]["data"]["reason"] == "overflow"
    assert events[gaps[0] - 1]["step"] == 200_000 - dropped - 1
    tell(proc)
    assert proc.wait(30) == 0, proc.err.text[-2000:]
    # Counted on its run once the writer could say which runs lost what.
    wait_for(lambda: runs(rest)["j"]["dropped"]["forwarder"] == dropped, what="the drops counted on run j")
    assert len([e for e in all_events(rest) if e["type"] == "gap"]) == 1  # announced once
    release(host)
    done(host)


def test_a_sigkilled_writers_last_events_arrive_and_its_ring_is_removed(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, ready = start(spawn, shm_env(ports), "--steps", "1", "--interval", "0", "--hold")
    rest = ready["urls"]["rest"]
    proc = joiner(spawn, ports, JOINER, "3000")
    stop(host)  # the events stay in the ring until the writer is dead
    try:
        tell(proc)
        line_with(proc, "logged")
        proc.popen.kill()
        proc.popen.wait(10)
        assert len(ring_files(ports)) == 1
    finally:
        host.signal(signal.SIGCONT)
    wait_for(
        lambda: runs(rest).get("j", {}).get("metric_events") == 3000, 20, what="the dead writer's events"
    )
    assert [e["step"] for e in history(rest, "j")] == list(range(3000))
    wait_for(lambda: not ring_files(ports), 20, what="the dead writer's ring removed")
    release(host)
    done(host)


def test_a_ring_whose_writer_and_hub_both_died_is_taken_by_the_next_hub_with_a_store(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, _ready = start(spawn, shm_env(ports), "--steps", "1", "--interval", "0", "--hold")
    proc = joiner(spawn, ports, JOINER, "2000")
    stop(host)  # nothing is read: the events stay in the ring
    tell(proc)
    line_with(proc, "logged")
    proc.popen.kill()
    host.popen.kill()  # the hub of those ports dies too, and none comes back
    proc.popen.wait(10)
    host.popen.wait(10)
    assert len(ring_files(ports)) == 1
    # A hub of other ports, with the default store, keeps them like the spool.
    other = free_ports(3)
    nxt, ready = start(spawn, shm_env(other), "--steps", "1", "--interval", "0", "--hold")
    rest = ready["urls"]["rest"]
    try:
        wait_for(lambda: runs(rest).get("j", {}).get("metric_events") == 2000, 20, what="the orphan's events")
    except AssertionError:
        raise AssertionError(f"{ready} {runs(rest)} {ring_files(ports)} {nxt.err.text[-3000:]}") from None
    assert [e["step"] for e in history(rest, "j")] == list(range(2000))
    assert not ring_files(ports)
    release(nxt)
    done(nxt)


# Logs steps 0.. of run "c" at a steady pace until told to stop; then releases.
STEADY = """
import json, sys, threading
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
print(json.dumps({"ready": server.role, "pid": __import__("os").getpid()}), flush=True)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
step = 0
while not stop.is_set():
    server.log({"x": float(step)}, step=step, run="c")
    if step % 100 == 0:
        print(json.dumps({"step": step}), flush=True)
    step += 1
    stop.wait(0.002)
status = server.status()
release_stream_server()
print(json.dumps({"logged": step, "path": status["forwarding"]["path"]}), flush=True)
"""


def test_a_hand_over_delivers_every_event_of_a_joined_process_once(spawn: Spawner) -> None:
    ports = free_ports(3)
    a, ready_a = start(spawn, shm_env(ports), "--steps", "50", "--interval", "0", "--run", "a", "--hold")
    b, ready_b = start(spawn, shm_env(ports), "--steps", "50", "--interval", "0", "--run", "b", "--hold")
    assert (ready_a["ready"], ready_b["ready"]) == ("host", "joined")
    rest = ready_a["urls"]["rest"]
    c = joiner(spawn, ports, STEADY)
    c.out.wait(lambda lines: any('"step": 300' in x for x in lines), 30, what="c logging")
    release(a)
    done(a)
    wait_for(lambda: _pid_of(rest) == ready_b["pid"], timeout=20, what="the successor serving")
    c.out.wait(lambda lines: any('"step": 1500' in x for x in lines), 60, what="c logging after")
    release(c)
    logged = line_with(c, "logged")
    assert c.wait(30) == 0, c.err.text[-2000:]
    assert logged["path"] == "shared-memory"
    wait_for(lambda: runs(rest).get("c", {}).get("metric_events", 0) >= logged["logged"], 20, what="all of c")
    steps = [e["step"] for e in history(rest, "c")]
    assert len(steps) == len(set(steps)), "an event arrived twice"
    assert sorted(steps) == list(range(logged["logged"])), "an event was lost"
    assert runs(rest)["a"]["metric_events"] == 50 and runs(rest)["b"]["metric_events"] == 50
    release(b)
    done(b)


# A joined process whose forked pool workers log; each says its path.
FORKING = """
import json, multiprocessing, os
from stream_hub import get_stream_server, get_stream_server_manager, release_stream_server

def work(worker):
    server = get_stream_server_manager().server
    for i in range(200):
        server.log({"w": float(worker)}, step=worker * 1000 + i, run="pool")
    return server.status()["forwarding"]["path"]

server = get_stream_server()
print(json.dumps({"ready": server.role, "pid": os.getpid()}), flush=True)
with multiprocessing.get_context("fork").Pool(3) as pool:
    paths = pool.map(work, range(3))
parent = server.status()["forwarding"]["path"]
release_stream_server()
print(json.dumps({"paths": paths, "parent": parent}), flush=True)
"""


def test_the_forked_children_of_a_process_joined_over_shared_memory(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, ready = start(spawn, shm_env(ports), "--steps", "1", "--interval", "0", "--hold")
    rest = ready["urls"]["rest"]
    proc = joiner(spawn, ports, FORKING, PYTHONFAULTHANDLER="1")
    try:
        out = line_with(proc, "paths", timeout=60)
    except AssertionError:  # a hang: every thread's stack, from the parent and its workers
        family = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
        for member in family:
            member.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: the stacks to stderr
        wait_for(lambda: not alive(proc.popen), 10, what="the dumps written")
        raise AssertionError(f"no answer from the pool; the stacks:\n{proc.err.text[-20000:]}") from None
    assert out == {"paths": ["shared-memory"] * 3, "parent": "shared-memory"}
    assert proc.wait(30) == 0, proc.err.text[-2000:]
    wait_for(
        lambda: runs(rest).get("pool", {}).get("metric_events") == 600, 20, what="600 events of 3 workers"
    )
    steps = sorted(e["step"] for e in history(rest, "pool"))
    assert steps == sorted(w * 1000 + i for w in range(3) for i in range(200))
    wait_for(lambda: not ring_files(ports), 20, what="every ring removed")
    release(host)
    done(host)


# Logs 20 000 events in bursts over about a second, then reports how much CPU
# and how many wake-ups each thread of the process had meanwhile.
THREADS = """
import json, os, sys, threading, time
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
print(json.dumps({"ready": server.role, "pid": os.getpid()}), flush=True)

def threads():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/self/task/{tid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        name = status["Name"].strip()
        switches = int(status["voluntary_ctxt_switches"]) + int(status["nonvoluntary_ctxt_switches"])
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), switches)
    return out

pause = threading.Event()
before = threads()
for burst in range(100):
    for i in range(200):
        server.log({"loss": 0.5, "i": float(i)}, step=burst * 200 + i, run="t")
    pause.wait(0.01)
after = threads()
main = str(threading.get_native_id())
others = {tid: (after[tid][0], after[tid][1] - before.get(tid, (0, 0, 0))[1],
                after[tid][2] - before.get(tid, (0, 0, 0))[2]) for tid in after if tid != main}
mine = (after[main][1] - before[main][1])
path = server.status()["forwarding"]["path"]
print(json.dumps({"others": others, "main_cpu": mine, "path": path,
                  "names": sorted(t.name for t in threading.enumerate())}), flush=True)
release_stream_server()
"""


def test_no_thread_of_ours_works_per_event_in_a_process_joined_over_shared_memory(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, ready = start(spawn, shm_env(ports), "--steps", "1", "--interval", "0", "--hold")
    rest = ready["urls"]["rest"]
    proc = joiner(spawn, ports, THREADS)
    out = line_with(proc, "others", timeout=60)
    assert out["path"] == "shared-memory"
    # 20 000 events in 100 bursts: a thread that did anything per event or per
    # burst would have been woken at least 100 times and used CPU for them.
    for tid, (name, cpu, switches) in out["others"].items():
        assert switches < 20 and cpu < 0.05, f"thread {name} ({tid}) worked while we logged: {out}"
    assert "stream-hub-forwarder" not in out["names"]
    assert proc.wait(30) == 0, proc.err.text[-2000:]
    wait_for(lambda: runs(rest).get("t", {}).get("metric_events") == 20_000, 20, what="all 20 000")
    release(host)
    done(host)


# Spins in pure Python (never letting the GIL go on its own) and logs every
# millisecond or so for ``argv[1]`` events, then spins on without logging.
SPINNING = """
import json, os, sys, time
from stream_hub import get_stream_server
server = get_stream_server()
print(json.dumps({"ready": server.role, "pid": os.getpid()}), flush=True)
sys.stdin.readline()
count, x, logged = int(sys.argv[1]), 0, 0
next_at = time.perf_counter()
while logged < count:
    x = (x * 31 + 7) & 0xFFFFF
    now = time.perf_counter()
    if now >= next_at:
        server.log({"x": float(x)}, step=logged, run="spin")
        logged += 1
        next_at = now + 0.001
print(json.dumps({"logged": logged}), flush=True)
end = time.perf_counter() + 60
while time.perf_counter() < end:
    x = (x * 31 + 7) & 0xFFFFF
"""


def test_the_events_of_a_cpu_bound_loop_arrive_while_it_spins(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, ready = start(spawn, shm_env(ports), "--steps", "1", "--interval", "0", "--hold")
    rest = ready["urls"]["rest"]
    proc = joiner(spawn, ports, SPINNING, "1000")
    tell(proc)
    line_with(proc, "logged")
    try:
        wait_for(
            lambda: runs(rest).get("spin", {}).get("metric_events") == 1000,
            20,
            what="the spinning loop's events",
        )
    except AssertionError:
        steps = sorted(e["step"] for e in history(rest, "spin"))
        missing = sorted(set(range(1000)) - set(steps))
        src = httpx.get(f"{rest}/api/sources", timeout=5).json()
        raise AssertionError(
            f"{len(steps)} of 1000 arrived; missing {missing[:20]}...{missing[-5:]}; sources {src}; "
            f"the loop's stderr: {proc.err.text[-3000:]}; the hub's: {host.err.text[-3000:]}"
        ) from None
    assert alive(proc.popen), "the loop was still spinning: its events came without its help"
    proc.popen.kill()
    proc.popen.wait(10)
    release(host)
    done(host)


# Logs one event, learns its rank (as the Lightning bridge does under
# Lightning's own launcher), logs another.
ADOPTER = """
import json, sys
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
print(json.dumps({"ready": server.role, "pid": __import__("os").getpid()}), flush=True)
sys.stdin.readline()
server.log({"loss": 1.0}, step=0, run=sys.argv[1])
server.adopt_rank(1, 2)
server.log({"loss": 0.5}, step=1, run=sys.argv[1])
print(json.dumps({"logged": 2, "path": server.status()["forwarding"]["path"]}), flush=True)
sys.stdin.readline()
release_stream_server()
"""


def test_a_rank_adopted_after_joining_stamps_the_rings_events(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, ready = start(spawn, shm_env(ports), "--steps", "1", "--interval", "0", "--hold")
    rest = ready["urls"]["rest"]
    for run, env in (("over-ring", {}), ("over-socket", {"STREAM_HUB_SHARED_MEMORY": "off"})):
        proc = joiner(spawn, ports, ADOPTER, run, **env)
        tell(proc)
        assert line_with(proc, "logged")["path"] == ("socket" if env else "shared-memory")
        wait_for(lambda run=run: len(history(rest, run)) == 2, what=f"both events of {run}")
        assert [(e["step"], e.get("rank")) for e in history(rest, run)] == [(0, None), (1, 1)]
        tell(proc)
        assert proc.wait(30) == 0, proc.err.text[-2000:]
    release(host)
    done(host)
