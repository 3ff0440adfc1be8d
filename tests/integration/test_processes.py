"""Many processes, one hub, with real processes: ranks that meet in one hub,
experiments that keep apart, foreign programs and other users' hubs that are
never touched, busy, wedged and suspended hubs, hand-over, a killed host, forked
workers.

Every process is ``tests/trainer.py`` (or a copy under another name), run with
fixed free ports and the default ``port_conflict="auto"``; the registry is the
test run's own (``XDG_RUNTIME_DIR``, see conftest).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from ..clients import SSEStream
from ..conftest import need, wait_for
from ..processes import PYTHON, Proc, Spawner, alive, child_env, free_ports

TRAINER = Path(__file__).resolve().parent.parent / "trainer.py"

# A stand-in for another user's hub: answers /health as stream_hub would, on
# three ports, with nothing but the standard library (it runs as ``nobody``).
OTHER_USERS_HUB = """
import http.server, json, os, socketserver, sys, threading
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "service": "stream_hub", "pid": os.getpid()}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
servers = [socketserver.TCPServer(("127.0.0.1", int(p)), Health) for p in sys.argv[1:]]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
servers[0].serve_forever()
"""


def hub_env(ports: list[int], **extra: str | None) -> dict[str, str]:
    sse, ws, rest = ports
    settings: dict[str, str | None] = {
        "STREAM_HUB_SSE_PORT": str(sse),
        "STREAM_HUB_WS_PORT": str(ws),
        "STREAM_HUB_REST_PORT": str(rest),
        "STREAM_HUB_PORT_CONFLICT": None,  # the default: auto
        "STREAM_HUB_STALE_TIMEOUT": "1.5",
    }
    settings.update(extra)
    return child_env(**settings)


def start(
    spawn: Spawner, env: dict[str, str], *args: str, script: Path = TRAINER
) -> tuple[Proc, dict[str, Any]]:
    """A trainer (its stdin a pipe: ``--hold`` waits for :func:`release`) and its ready line."""
    proc = spawn.start([str(script), *args], env=env, prefix=PYTHON, stdin=True)
    try:
        ready = json.loads(proc.out.first(timeout=30))
    except (AssertionError, json.JSONDecodeError):
        raise AssertionError(f"no ready line; exit {proc.popen.poll()}; stderr:\n{proc.err.text}") from None
    return proc, ready


def release(proc: Proc) -> None:
    """Let a ``--hold`` trainer go on to release its server and exit."""
    stdin = proc.popen.stdin
    assert stdin is not None
    stdin.write("\n")
    stdin.flush()


def done(proc: Proc, timeout: float = 30.0) -> dict[str, Any]:
    """The trainer's last line (``{"done": ...}``), once it exited 0."""
    assert proc.wait(timeout) == 0, proc.err.text[-3000:]
    return dict(json.loads(proc.out.lines[-1]))


def runs(rest: str) -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{rest}/api/runs", timeout=5).json()
    return {run["run"]: run for run in body["runs"]}


def history(rest: str, run: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    since = 0
    while True:
        body = httpx.get(
            f"{rest}/api/history", params={"run": run, "since": since, "limit": 10_000}, timeout=10
        )
        page = body.json()
        events += [e for e in page["events"] if e["type"] == "metric"]
        if not page["more"]:
            return events
        since = page["events"][-1]["seq"]


# -- ranks -------------------------------------------------------------------------------------


def test_four_ranks_meet_in_one_hub_with_their_ranks_and_none_is_killed(spawn: Spawner) -> None:
    ports = free_ports(3)
    procs = []
    for rank in range(4):
        env = hub_env(
            ports, RANK=str(rank), WORLD_SIZE="4", LOCAL_RANK=str(rank), TORCHELASTIC_RUN_ID="job42"
        )
        procs.append(start(spawn, env, "--steps", "200", "--interval", "0.002", "--hold"))
    roles = [ready["ready"] for _proc, ready in procs]
    assert sorted(roles) == ["host", "joined", "joined", "joined"], roles
    rest = procs[0][1]["urls"]["rest"]
    assert all(ready["urls"]["rest"] == rest for _proc, ready in procs)

    def all_logged() -> bool:
        run = runs(rest).get("job42")
        return run is not None and run["metric_events"] == 800

    wait_for(all_logged, timeout=30, what="800 events of four ranks")
    run = runs(rest)["job42"]
    assert run["ranks"] == [0, 1, 2, 3] and run["state"] == "running"
    per_rank = httpx.get(f"{rest}/api/runs/job42/series", params={"metric": "loss"}, timeout=5).json()
    assert {rank: curve["points_seen"] for rank, curve in per_rank["ranks"].items()} == {
        "0": 200,
        "1": 200,
        "2": 200,
        "3": 200,
    }
    sources = httpx.get(f"{rest}/api/sources", timeout=5).json()["sources"]
    assert sorted(s["rank"] for s in sources if s["connected"]) == [0, 1, 2, 3]
    assert all(alive(proc.popen) for proc, _ready in procs)  # nobody was killed
    # The joined ranks finish first, then the host: every exit is clean.
    for proc, _ready in sorted(procs, key=lambda item: item[1]["ready"] == "host"):
        release(proc)
        done(proc)


def test_two_experiments_without_a_run_name_get_two_runs(spawn: Spawner, tmp_path: Path) -> None:
    ports = free_ports(3)
    first, second = tmp_path / "exp_a.py", tmp_path / "exp_b.py"
    shutil.copy(TRAINER, first)
    shutil.copy(TRAINER, second)
    a, ready_a = start(spawn, hub_env(ports), "--steps", "20", "--interval", "0", "--hold", script=first)
    b, ready_b = start(spawn, hub_env(ports), "--steps", "30", "--interval", "0", "--hold", script=second)
    assert (ready_a["ready"], ready_b["ready"]) == ("host", "joined")
    rest = ready_a["urls"]["rest"]
    wait_for(lambda: sum(r["metric_events"] for r in runs(rest).values()) == 50, what="both experiments")
    by_program = {name.split("-")[0]: run for name, run in runs(rest).items()}
    assert by_program["exp_a"]["metric_events"] == 20 and by_program["exp_b"]["metric_events"] == 30
    for proc in (b, a):
        release(proc)
        done(proc)


# -- what is never ended -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["sse", "rest"])
def test_a_foreign_program_keeps_its_port_and_later_processes_still_meet_in_one_hub(
    spawn: Spawner, where: str
) -> None:
    ports = free_ports(3)
    holder = spawn.holder(ports[("sse", "ws", "rest").index(where)])  # e.g. Jupyter on 8888
    first, ready_first = start(spawn, hub_env(ports), "--steps", "5", "--interval", "0", "--hold")
    assert ready_first["ready"] == "host"
    assert ready_first["ports"][where] != ports[("sse", "ws", "rest").index(where)]
    second, ready_second = start(spawn, hub_env(ports), "--steps", "5", "--interval", "0", "--hold")
    assert ready_second["ready"] == "joined"  # found through the registry, not a second hub
    assert ready_second["urls"] == ready_first["urls"]
    assert alive(holder)
    for proc in (second, first):
        release(proc)
        done(proc)
    assert alive(holder)


def test_another_users_hub_is_never_joined_nor_ended(spawn: Spawner) -> None:
    need(os.geteuid() == 0 and shutil.which("setpriv") is not None, "root and setpriv (to run as nobody)")
    ports = free_ports(3)
    theirs = spawn.start(
        ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", OTHER_USERS_HUB]
        + [str(p) for p in (ports[2], ports[0], ports[1])],
        prefix=["setpriv"],
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    theirs.out.wait(lambda lines: "ready" in lines, what="the other user's hub")
    assert psutil.Process(theirs.pid).uids().real == 65534
    mine, ready = start(spawn, hub_env(ports), "--steps", "5", "--interval", "0", "--hold")
    assert ready["ready"] == "host" and set(ready["ports"].values()).isdisjoint(ports)
    again, ready_again = start(spawn, hub_env(ports), "--steps", "5", "--interval", "0", "--hold")
    assert ready_again["ready"] == "joined" and ready_again["urls"] == ready["urls"]
    assert alive(theirs.popen)
    for proc in (again, mine):
        release(proc)
        done(proc)
    assert alive(theirs.popen)


def test_a_busy_hub_is_joined_and_never_ended_nor_split_from(spawn: Spawner) -> None:
    # The host spends ~12 s in one C call holding the GIL (a big pickle.load,
    # a huge sorted()): it cannot answer /health, but it works.
    ports = free_ports(3)
    busy, ready = start(spawn, hub_env(ports), "--busy", "12", "--steps", "0", "--hold")
    assert ready["ready"] == "host"
    busy.out.wait(lambda lines: any('"busy"' in line for line in lines), what="the long call")
    newcomers = []
    for environment in ("development", "production"):
        newcomer, ready_new = start(
            spawn,
            hub_env(ports, ENVIRONMENT=environment),
            "--steps",
            "5",
            "--interval",
            "0",
            "--run",
            environment,
            "--hold",
        )
        # Joined (buffering), never moved to other ports, never ending the host.
        assert ready_new["ready"] == "joined", newcomer.err.text
        assert ready_new["ports"] == ready["ports"]
        assert alive(busy.popen)
        assert "ending it" not in newcomer.err.text
        newcomers.append(newcomer)
    busy.out.wait(
        lambda lines: any('"answering"' in line for line in lines), timeout=120, what="the call's end"
    )
    # Once the host answers again, what the newcomers logged arrives.
    rest = ready["urls"]["rest"]
    wait_for(
        lambda: (
            {r: runs(rest).get(r, {}).get("metric_events") for r in ("development", "production")}
            == {"development": 5, "production": 5}
        ),
        timeout=60,
        what="the newcomers' events",
    )
    for newcomer in newcomers:
        release(newcomer)
        done(newcomer)
    release(busy)
    done(busy)


def test_a_wedged_hub_is_refused_in_production_and_ended_in_development(spawn: Spawner) -> None:
    # The host sleeps in a blocking C call holding the GIL: no answer, no CPU.
    ports = free_ports(3)
    wedged, ready = start(spawn, hub_env(ports), "--wedge", "--steps", "0")
    assert ready["ready"] == "host"
    wedged.out.wait(lambda lines: any('"wedged"' in line for line in lines), what="the blocking call")
    refused = spawn.start([str(TRAINER)], env=hub_env(ports, ENVIRONMENT="production"), prefix=PYTHON)
    assert refused.wait(60) != 0
    assert "wedged stream_hub hub" in refused.err.text and "production" in refused.err.text
    assert alive(wedged.popen)
    taker, ready_taker = start(spawn, hub_env(ports), "--steps", "5", "--interval", "0", "--hold")
    # It takes the wedged hub's own ports, once they are free.
    assert ready_taker["ready"] == "host" and ready_taker["ports"] == ready["ports"], taker.err.text
    assert wedged.popen.wait(10) is not None
    assert "wedged stream_hub hub" in taker.err.text and "SIGTERM" in taker.err.text
    release(taker)
    done(taker)


def test_a_suspended_host_is_never_ended(spawn: Spawner) -> None:
    ports = free_ports(3)
    stopped, ready = start(spawn, hub_env(ports), "--steps", "5", "--interval", "0", "--hold")
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: psutil.Process(stopped.pid).status() == psutil.STATUS_STOPPED, what="stopped")
        refused = spawn.start([str(TRAINER)], env=hub_env(ports, ENVIRONMENT="production"), prefix=PYTHON)
        assert refused.wait(60) != 0 and "PortInUseError" in refused.err.text
        other, ready_other = start(spawn, hub_env(ports), "--steps", "5", "--interval", "0", "--hold")
        assert ready_other["ready"] == "host"
        assert set(ready_other["ports"].values()).isdisjoint(ready["ports"].values())
        assert alive(stopped.popen)
        release(other)
        done(other)
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    release(stopped)
    done(stopped)


# -- hand-over and election ------------------------------------------------------------------------


# Joined over a shared-memory ring (the default) or over the socket channel.
JOIN_PATHS = pytest.mark.parametrize("shared_memory", ["on", "off"])


@JOIN_PATHS
def test_a_clean_host_exit_hands_every_curve_to_a_joined_process(spawn: Spawner, shared_memory: str) -> None:
    ports = free_ports(3)
    env = hub_env(ports, STREAM_HUB_SHARED_MEMORY=shared_memory)
    a, ready_a = start(spawn, env, "--steps", "100", "--interval", "0", "--run", "a", "--hold")
    b, ready_b = start(spawn, env, "--steps", "100", "--interval", "0", "--run", "b", "--hold")
    assert (ready_a["ready"], ready_b["ready"]) == ("host", "joined")
    rest = ready_a["urls"]["rest"]
    wait_for(lambda: sum(r["metric_events"] for r in runs(rest).values()) == 200, what="both runs")
    before = httpx.get(f"{rest}/api/status", timeout=5).json()
    stream = SSEStream(f"{ready_a['urls']['sse']}/events", params={"last_event_id": before["last_seq"]})
    release(a)
    done(a)
    # B hosts now, on the same ports, in the same epoch, with a's curve.
    wait_for(lambda: _pid_of(rest) == ready_b["pid"], timeout=15, what="the successor serving")
    after = httpx.get(f"{rest}/api/status", timeout=5).json()
    assert after["epoch"] == before["epoch"] and after["role"] == "host"
    assert runs(rest)["a"]["metric_events"] == 100 and runs(rest)["b"]["metric_events"] == 100
    curve = httpx.get(f"{rest}/api/runs/a/series", params={"metric": "loss"}, timeout=5).json()
    assert curve["points_seen"] == 100
    # A client of the old host resumes on the new one without a gap.
    last = None
    while (frame := stream.next()) is not None:
        last = frame
    assert last is not None and last.event == "shutdown"
    # It says the hub lives on (a follower comes back instead of ending).
    assert last.json["data"] == {"reason": "handover", "restart": True}
    params = {"last_event_id": last.id, "epoch": before["epoch"]}
    resumed = SSEStream(f"{ready_a['urls']['sse']}/events", params=params)
    first = resumed.next()
    assert first is not None and first.event != "gap" and int(first.id or 0) == int(last.id or 0) + 1
    stream.close()
    resumed.close()
    release(b)
    done(b)


def _pid_of(rest: str) -> int | None:
    try:
        return int(httpx.get(f"{rest}/health", timeout=2).json()["pid"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


@JOIN_PATHS
def test_when_the_host_is_killed_another_serves_and_loses_nothing_logged_after(
    spawn: Spawner, shared_memory: str
) -> None:
    ports = free_ports(3)
    env = hub_env(ports, STREAM_HUB_SHARED_MEMORY=shared_memory)
    host, ready = start(spawn, env, "--steps", "1", "--interval", "0", "--hold")
    joined, ready_joined = start(
        spawn, env, "--steps", "600", "--interval", "0.005", "--run", "b", "--trace", "--hold"
    )
    assert ready_joined["ready"] == "joined"
    joined.out.wait(lambda lines: len(lines) > 100, what="some steps")
    killed_at = time.time()
    host.popen.kill()
    host.popen.wait(10)
    rest = ready["urls"]["rest"]
    wait_for(lambda: _pid_of(rest) == ready_joined["pid"], timeout=10, what="another process serving")
    served_after = time.time() - killed_at
    joined.out.wait(lambda lines: any('"step": 599' in line for line in lines), timeout=30, what="all steps")
    traced = [json.loads(line) for line in joined.out.lines[1:] if '"step"' in line]
    after_kill = [t["step"] for t in traced if t["ts"] > killed_at + 0.05]
    assert len(after_kill) > 100
    got = [e["step"] for e in history(rest, "b")]
    assert len(got) == len(set(got)), "an event arrived twice"
    missing = set(after_kill) - set(got)
    assert not missing, f"lost after the kill: {sorted(missing)[:20]}"
    assert served_after < 10
    release(joined)
    done(joined)


def test_forked_pool_workers_events_all_arrive(spawn: Spawner) -> None:
    ports = free_ports(3)
    proc, ready = start(spawn, hub_env(ports), "--steps", "50", "--fork-pool", "4", "--hold")
    assert ready["ready"] == "host"
    proc.out.wait(lambda lines: any('"pool": 200' in line for line in lines), 60, what="the pool")
    rest = ready["urls"]["rest"]
    wait_for(lambda: runs(rest).get("pool", {}).get("metric_events") == 200, what="200 events from 4 workers")
    steps = sorted(e["step"] for e in history(rest, "pool"))
    assert steps == sorted(w * 1000 + i for w in range(4) for i in range(50))
    release(proc)
    done(proc)


# -- joined mode ----------------------------------------------------------------------------------------


def test_joined_mode_returns_none_forwards_and_restarts_only_its_forwarder(spawn: Spawner) -> None:
    ports = free_ports(3)
    host, ready = start(spawn, hub_env(ports), "--steps", "1", "--interval", "0", "--hold")
    code = """
import json, os
from stream_hub import StreamConfig, get_stream_server, get_stream_server_manager, release_stream_server
server = get_stream_server()
seqs = [server.log({"x": 1.0}, step=i, run="j") for i in range(10)]
manager = get_stream_server_manager()
manager.force_restart()
seqs.append(server.publish("log", {"message": "after"}, run="j"))
status = server.status()
release_stream_server()
out = {"seqs": seqs, **{k: status.get(k) for k in ("role", "host", "forwarding")}}
print(json.dumps(out))
"""
    result = spawn.start(["-c", code], env=hub_env(ports), prefix=PYTHON)
    assert result.wait(60) == 0, result.err.text[-3000:]
    out = json.loads(result.out.lines[-1])
    assert out["seqs"] == [None] * 11 and out["role"] == "joined"
    assert out["host"]["pid"] == ready["pid"] and {"queued", "sent", "dropped"} <= set(out["forwarding"])
    assert out["forwarding"]["path"] == "socket"  # the default (shared memory is opt-in)
    rest = ready["urls"]["rest"]
    # 10 metrics, the log, and the run_end of the last release: all forwarded.
    wait_for(lambda: runs(rest).get("j", {}).get("events") == 12, what="all 12 forwarded")
    assert runs(rest)["j"]["state"] == "finished"
    status = httpx.get(f"{rest}/api/status", timeout=5).json()
    assert status["restarts"] == 0  # the joined process's force_restart did not restart the host
    release(host)
    done(host)


def test_a_joined_process_keeps_forwarding_after_an_event_it_cannot_encode(spawn: Spawner) -> None:
    """Issue 22 M7: such an event killed the forwarder thread, and every later
    one was silently lost. log() refuses those values now (M6); an event that
    skips validation anyway is dropped and counted, and forwarding goes on."""
    ports = free_ports(3)
    host, ready = start(spawn, hub_env(ports), "--steps", "1", "--interval", "0", "--hold")
    code = """
import json
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
refused = []
for bad in ({"step": 2**63}, {"metrics": {"huge": 10**400}}):
    try:
        server.log(bad.get("metrics", {"x": 1.0}), step=bad.get("step", 0), run="j")
    except ValueError as exc:
        refused.append(str(exc))
for i in range(5):
    server.log({"x": 1.0}, step=i, run="j")
server.hub.intake.commit()
# Sources that skip validation (none does now): each a batch of its own, then one
# mixed with good events.
intake = server.hub.intake
intake.submit("metric", "j", 5, {"huge": 10**400})
intake.commit()
intake.submit("metric", "j", 2**64, {"x": 1.0})
intake.commit()
intake.submit("metric", "j", 6, {"x": 1.0})
intake.submit("metric", "j", 7, {"wide": 2**70})
intake.submit("metric", "j", 8, {"x": 1.0})
intake.commit()
for i in range(9, 14):
    server.log({"x": 1.0}, step=i, run="j")
server.hub.intake.commit()
status = server.status()
release_stream_server()
print(json.dumps({"refused": refused, "role": status["role"], "forwarding": status["forwarding"]}))
"""
    result = spawn.start(["-c", code], env=hub_env(ports), prefix=PYTHON)
    assert result.wait(60) == 0, result.err.text[-3000:]
    out = json.loads(result.out.lines[-1])
    assert out["role"] == "joined" and len(out["refused"]) == 2
    assert out["forwarding"]["dropped"] == 3
    rest = ready["urls"]["rest"]
    # 5 + 2 + 5 metric events, and the run_end of the release: all forwarded.
    wait_for(lambda: runs(rest).get("j", {}).get("events") == 13, what="all 13 forwarded")
    steps = [e["step"] for e in history(rest, "j")]
    assert steps == [0, 1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13]
    release(host)
    done(host)


def test_what_a_joined_processs_forwarder_drops_shows_on_its_run(spawn: Spawner) -> None:
    """Issue 23.1: a joined process logging faster than its host took the
    batches dropped most of its points while the host said "dropped 0".
    Here its buffer holds 10 events and the host gets nothing for a while:
    90 of 100 events are dropped (and one more at its end), and the host's
    /api/runs, status and sources say so."""
    ports = free_ports(3)
    host, ready = start(spawn, hub_env(ports), "--steps", "1", "--interval", "0", "--hold")
    code = """
import json
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
forwarder = server._role.link  # the joined role's forwarder
forwarder.buffer_events = 10
intake = server.hub.intake
intake.detach(forwarder)  # each event its own batch, taken on this thread
with forwarder._io:  # a host that takes nothing meanwhile: nothing is sent or acknowledged
    for i in range(100):
        server.log({"x": float(i)}, step=i, run="j")
intake.attach(forwarder)
status = server.status()
release_stream_server()
print(json.dumps({"role": status["role"], "forwarding": status["forwarding"]}))
"""
    # The socket channel's forwarder (see test_shared_memory for the ring's drops).
    env = hub_env(ports, STREAM_HUB_SHARED_MEMORY="off")
    result = spawn.start(["-c", code], env=env, prefix=PYTHON)
    assert result.wait(60) == 0, result.err.text[-3000:]
    out = json.loads(result.out.lines[-1])
    assert out["role"] == "joined" and out["forwarding"]["dropped"] == 90
    rest = ready["urls"]["rest"]
    # The run_end of its release pushes one more out of the buffer: 9 of the
    # events and the run_end arrive; the 91 are counted on the run.
    wait_for(lambda: runs(rest).get("j", {}).get("state") == "finished", what="the run's end")
    run = runs(rest)["j"]
    assert run["events"] == 10 and run["dropped"]["forwarder"] == 91 and run["first_ts"] is not None
    status = httpx.get(f"{rest}/api/status", timeout=5).json()
    assert status["drops"]["forwarder"] == 91
    sources = httpx.get(f"{rest}/api/sources", timeout=5).json()["sources"]
    assert [s["dropped"] for s in sources if s["role"] == "joined"] == [91]
    release(host)
    done(host)


def test_join_policy_without_a_hub_raises(spawn: Spawner) -> None:
    ports = free_ports(3)
    proc = spawn.start([str(TRAINER)], env=hub_env(ports, STREAM_HUB_PORT_CONFLICT="join"), prefix=PYTHON)
    assert proc.wait(30) != 0
    assert 'port_conflict="join"' in proc.err.text and "no live stream_hub hub" in proc.err.text


def test_a_restart_is_not_a_death_joined_processes_wait_and_the_job_stays_on_one_hub(spawn: Spawner) -> None:
    ports = free_ports(3)
    token = "restart-token-0123456789"
    host, ready = start(
        spawn, hub_env(ports, STREAM_HUB_ADMIN_TOKEN=token), "--steps", "0", "--run", "h", "--hold"
    )
    joined = [
        start(spawn, hub_env(ports), "--steps", "300", "--interval", "0.01", "--run", f"j{k}", "--hold")
        for k in range(2)
    ]
    assert [r["ready"] for _, r in joined] == ["joined", "joined"]
    rest = ready["urls"]["rest"]
    for _ in range(3):  # restarts while the joined processes log
        answer = httpx.post(
            f"{rest}/api/admin/restart", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert answer.status_code == 202
        wait_for(lambda: _pid_of(rest) == ready["pid"], timeout=30, what="the host serving again")
    wait_for(lambda: httpx.get(f"{rest}/api/status", timeout=5).json()["restarts"] == 3, what="3 restarts")
    # Nobody took over: the same host, on the same ports, has every event of both.
    wait_for(
        lambda: [runs(rest).get(f"j{k}", {}).get("metric_events") for k in range(2)] == [300, 300],
        timeout=60,
        what="all events of both joined processes",
    )
    assert _pid_of(rest) == ready["pid"]
    for proc, _ in joined:
        release(proc)
        last = done(proc)
        assert last["role"] == "joined" and last["status"]["host"]["pid"] == ready["pid"]
    release(host)
    done(host)


LOCK_THEN_STOP = """
import os, signal, sys
from stream_hub import StreamConfig
from stream_hub.processes.registry import Registry
from stream_hub.processes.rendezvous import rendezvous_key
key = rendezvous_key(StreamConfig())
with Registry().lock(key):
    print("locked", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # Ctrl-Z while deciding whether to host
"""


def test_a_process_stopped_while_holding_the_registry_lock_never_blocks_a_newcomer(spawn: Spawner) -> None:
    ports = free_ports(3)
    holder = spawn.start(["-c", LOCK_THEN_STOP], env=hub_env(ports), prefix=PYTHON)
    holder.out.wait(lambda lines: "locked" in lines, what="the lock taken")
    wait_for(lambda: psutil.Process(holder.pid).status() == psutil.STATUS_STOPPED, what="the holder stopped")
    try:
        refused = spawn.start([str(TRAINER)], env=hub_env(ports, ENVIRONMENT="production"), prefix=PYTHON)
        assert refused.wait(60) != 0
        assert "is stopped" in refused.err.text and "holding the registry lock" in refused.err.text
        newcomer, ready = start(spawn, hub_env(ports), "--steps", "3", "--interval", "0", "--hold")
        # Not after the lock's 30 s wait: it saw the holder stopped and did not
        # wait, and hosts on other ports (as beside a stopped hub).
        assert "not waiting for it" in newcomer.err.text
        assert ready["ready"] == "host"
        assert set(ready["ports"].values()).isdisjoint(ports)
        release(newcomer)
        done(newcomer)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    assert holder.wait(30) == 0


def test_a_record_naming_an_innocent_process_never_gets_it_signalled(spawn: Spawner) -> None:
    """A registry record (stale, or planted) names a sleeping process of this
    user that does not hold the hub's port; something silent holds the port.
    The newcomer must not signal the named process: it is not proven to be
    the hub (issue 22 L4)."""
    from stream_hub import StreamConfig
    from stream_hub.processes.registry import HubRecord, Registry
    from stream_hub.processes.rendezvous import rendezvous_key

    ports = free_ports(3)
    sse, ws, rest = ports
    innocent = spawn.start(["-c", "import time; print('up', flush=True); time.sleep(600)"], prefix=PYTHON)
    innocent.out.wait(lambda lines: "up" in lines, what="the innocent process")
    spawn.holder(rest, kind="listener")  # accepts and closes: never answers /health
    config = StreamConfig(sse_port=sse, ws_port=ws, rest_port=rest, port_conflict="auto")
    key = rendezvous_key(config)
    Registry().write(
        HubRecord(
            key=key,
            pid=innocent.pid,
            host="127.0.0.1",
            configured={"sse": sse, "ws": ws, "rest": rest},
            ports={"sse": sse, "ws": ws, "rest": rest},
            epoch="planted",
            token="t",
            channel="unix:/nowhere",
            started=psutil.Process(innocent.pid).create_time(),
        )
    )
    newcomer, ready = start(spawn, hub_env(ports), "--steps", "2", "--interval", "0", "--hold")
    assert ready["ready"] == "host"
    assert ready["ports"]["rest"] != rest  # it moved off the silent holder
    assert alive(innocent.popen), newcomer.err.text
    assert "left alone" in newcomer.err.text
    release(newcomer)
    done(newcomer)
