"""The ``stream-hub`` command, each subcommand run as a real subprocess against
a real server (``python -m stream_hub``, and the console script once).

Servers bind port 0 and print their ports as the first JSON line; every wait
polls a condition with a deadline.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import stream_hub
from stream_hub.ports import is_port_in_use

from ..clients import STATUS_KEYS
from ..conftest import wait_for
from ..processes import CLI, REPO, Served, Spawner, child_env, free_port, run

SUBCOMMANDS = ("serve", "demo", "status", "restart", "tail", "ports")


def all_free(ports: dict[str, int]) -> bool:
    return not any(is_port_in_use(port) for port in ports.values())


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def metric_steps(lines: list[str]) -> list[int]:
    return [e["step"] for e in json_lines(lines) if e["type"] == "metric"]


# -- serve -------------------------------------------------------------------------------


def test_serve_sigterm_exits_0_and_frees_ports(spawn: Spawner) -> None:
    served = spawn.serve()
    ports = served.ports
    assert len(set(ports.values())) == 3 and all(is_port_in_use(p) for p in ports.values())
    status = wait_for(served.status, what="GET /api/status")
    assert status["running"] and status["pid"] == served.pid and status["ports"] == ports
    served.signal(signal.SIGTERM)
    assert served.wait() == 0, served.err.text
    assert all_free(ports)  # stop returns only once the ports are verified free
    assert "verified free" in served.err.text
    assert served.out.lines[1:] == []  # --json: the ready line is all of stdout


def test_serve_sigint_via_console_script(spawn: Spawner) -> None:
    """The installed ``stream-hub`` script, human-readable output, Ctrl-C."""
    exe = shutil.which("stream-hub")
    assert exe is not None, "the stream-hub console script is not on PATH (pip install -e .)"
    proc = spawn.start(["serve", "--sse-port", "0", "--ws-port", "0", "--rest-port", "0"], prefix=[exe])
    lines = proc.out.wait(
        lambda ls: ls if any(x.startswith("Press Ctrl-C") for x in ls) else None, 20, "the ready banner"
    )
    urls = {line.split()[0]: line.split()[1] for line in lines[1:5]}
    ports = {
        name: int(urls[label].rstrip("/").split("/")[2].rsplit(":", 1)[1])
        for name, label in (("sse", "SSE"), ("ws", "WebSocket"), ("rest", "dashboard"))
    }
    assert lines[0].startswith("stream_hub running (pid ")
    assert all(is_port_in_use(p) for p in ports.values())
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0, proc.err.text
    assert all_free(ports)
    assert proc.out.lines[-1].startswith("stopped; ports ") and "are free" in proc.out.lines[-1]


def test_serve_refuses_a_busy_port_with_a_clear_message(hub: Served) -> None:
    # port_conflict "fail" (from the test environment): nothing is killed.
    result = run(["serve", "--sse-port", str(hub.ports["sse"]), "--ws-port", "0", "--rest-port", "0"])
    assert result.returncode == 1
    assert f"port {hub.ports['sse']}" in result.stderr and str(hub.pid) in result.stderr
    assert "What to do" in result.stderr
    assert hub.popen.poll() is None


# -- demo --------------------------------------------------------------------------------


def test_demo_publishes_events_then_exits_0(spawn: Spawner) -> None:
    demo = spawn.serve("--duration", "2", "--runs", "2", "--interval", "0.01", command="demo")
    # What `stream-hub status` shows, polled while the demo runs.
    status = wait_for(
        lambda: (s := demo.status()) and s["events"]["published"] >= 20 and s, 10, "demo events"
    )
    assert status["running"] and status["ref_count"] >= 1
    runs = httpx.get(demo.rest + "/api/runs", timeout=5).json()
    assert {"exp1", "exp2"} <= {run["run"] for run in runs["runs"]}, runs
    latest = httpx.get(demo.rest + "/api/metrics/latest", params={"run": "exp1"}, timeout=5).json()
    assert {"loss", "accuracy", "learning_rate", "grad_norm", "samples_per_s"} <= set(latest["metrics"])
    assert demo.wait() == 0, demo.err.text
    assert all_free(demo.ports)
    assert "verified free" in demo.err.text


# -- status ------------------------------------------------------------------------------


def test_status_table_and_json(hub: Served) -> None:
    table = run(["status", "--rest-port", str(hub.ports["rest"])])
    assert table.returncode == 0, table.stderr
    rows = dict(line.split(None, 1) for line in table.stdout.splitlines() if line.strip())
    assert rows["running"].strip() == "True" and rows["pid"].strip() == str(hub.pid)
    for label in ("uptime", "restarts", "history", "clients", "events", "loop"):
        assert label in rows, table.stdout
    as_json = run(["status", "--rest-port", str(hub.ports["rest"]), "--json"])
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert STATUS_KEYS <= set(status)
    assert status["pid"] == hub.pid and status["ports"] == hub.ports
    assert set(status["events"]) == {"published", "delivered", "dropped", "rejected"}
    assert set(status["clients"]) == {"sse", "ws", "evicted"}  # contract v2: evicted


def test_status_reads_the_environment(hub: Served) -> None:
    env = child_env(STREAM_HUB_REST_PORT=str(hub.ports["rest"]), STREAM_HUB_HOST="127.0.0.1")
    result = run(["status", "--json"], env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ports"] == hub.ports
    # A flag wins over the variable.
    env = child_env(STREAM_HUB_REST_PORT=str(free_port()))
    result = run(["status", "--json", "--rest-port", str(hub.ports["rest"])], env=env)
    assert result.returncode == 0 and json.loads(result.stdout)["pid"] == hub.pid


def test_status_without_a_server_exits_1_with_one_line() -> None:
    port = free_port()
    result = run(["status", "--rest-port", str(port), "--timeout", "2"])
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("stream-hub status: no hub runs (looked at the registry")
    assert f"http://127.0.0.1:{port} (the configured REST port)" in result.stderr
    assert "stream-hub serve" in result.stderr and result.stderr.count("\n") == 1


# -- secrets out of argv (issue 22 L1) ----------------------------------------------------------

TOKEN = "s3cret-s3cret-s3cret"


def cmdline(pid: int) -> str:
    """What every user of the machine reads of ``pid``'s command line (``ps``)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")  # as `echo` writes it
    path.chmod(0o600)
    return path


def test_a_token_on_the_command_line_is_warned_about(spawn: Spawner) -> None:
    """``--token`` is in ``/proc/<pid>/cmdline`` for every user to read: the
    command says so, and names the variable and the file flag instead."""
    served = spawn.serve("--token", TOKEN)
    assert TOKEN in cmdline(served.pid)  # what the warning is about
    warning = served.err.wait(
        lambda lines: next((line for line in lines if "warning" in line and "--token" in line), None),
        10,
        "the warning",
    )
    assert "every user of this machine" in warning
    assert "STREAM_HUB_ADMIN_TOKEN" in warning and "--token-file" in warning
    assert TOKEN not in served.err.text  # the warning does not repeat it
    restart = run(["restart", "--rest-port", str(served.ports["rest"]), "--token", TOKEN])
    assert restart.returncode == 0, restart.stderr
    assert "warning: --token on the command line" in restart.stderr


def test_a_token_from_a_file_or_the_environment_stays_out_of_argv(spawn: Spawner, tmp_path: Path) -> None:
    """``--token-file PATH`` and ``STREAM_HUB_ADMIN_TOKEN``: the token works and
    is nowhere in the process's command line; no warning."""
    token_file = secret_file(tmp_path, "admin-token", TOKEN)
    served = spawn.serve("--token-file", str(token_file))
    assert TOKEN not in cmdline(served.pid) and str(token_file) in cmdline(served.pid)
    rest = ["--rest-port", str(served.ports["rest"])]
    wrong = run(["restart", *rest], env=child_env(STREAM_HUB_ADMIN_TOKEN="not-the-token-at-all"))
    assert wrong.returncode == 1 and "refused (401)" in wrong.stderr
    by_file = run(["restart", *rest, "--token-file", str(token_file)])
    assert by_file.returncode == 0 and "warning" not in by_file.stderr, by_file.stderr
    wait_for(lambda: (s := served.status()) and s["restarts"] == 1, 10, "restarts 1")

    by_env = spawn.serve(env=child_env(STREAM_HUB_ADMIN_TOKEN=TOKEN))
    assert TOKEN not in cmdline(by_env.pid)
    restarted = run(["restart", "--rest-port", str(by_env.ports["rest"]), "--token-file", str(token_file)])
    assert restarted.returncode == 0, restarted.stderr
    for proc in (served, by_env):
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        assert "warning" not in proc.err.text, proc.err.text


def test_a_token_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    missing = run(["status", "--token-file", str(tmp_path / "nope"), "--timeout", "2"])
    assert missing.returncode == 1 and str(tmp_path / "nope") in missing.stderr, missing.stderr
    (tmp_path / "two").write_text("a-token-a-token-a\nanother-line\n")
    two = run(["status", "--token-file", str(tmp_path / "two"), "--timeout", "2"])
    assert two.returncode == 1 and "one line" in two.stderr, two.stderr
    both = run(["status", "--token", "x", "--token-file", str(tmp_path / "two")])
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_a_redis_password_in_argv_is_warned_about_and_a_file_keeps_it_out(
    spawn: Spawner, tmp_path: Path
) -> None:
    """``--backend redis://:pw@...`` shows the password to ``ps``: warned about;
    ``--backend-file`` serves the same Redis with the password out of sight."""
    from ..conftest import need_executable
    from ..redis_server import RedisServer

    password = "hunter2-hunter2-hunter2"
    redis = RedisServer(need_executable("redis-server"), tmp_path, password=password).start()
    try:
        inline = spawn.serve("--backend", redis.url)
        warning = inline.err.wait(
            lambda lines: next((line for line in lines if "the password in --backend" in line), None),
            10,
            "the warning",
        )
        assert "STREAM_HUB_BACKEND" in warning and "--backend-file" in warning and password not in warning
        served = spawn.serve("--backend-file", str(secret_file(tmp_path, "backend-url", redis.url)))
        assert password not in cmdline(served.pid)
        wait_for(lambda: (served.status() or {}).get("backend") == "up", what="the replica reads Redis")
        served.signal(signal.SIGTERM)
        assert served.wait() == 0
        assert "warning" not in served.err.text and password not in served.err.text, served.err.text
        without = spawn.serve("--backend", redis.url.replace(f":{password}@", ""))  # nothing secret in it
        without.signal(signal.SIGTERM)
        without.wait()
        assert "warning" not in without.err.text, without.err.text
    finally:
        redis.stop()


# -- restart -----------------------------------------------------------------------------


def test_restart_needs_the_right_token(hub: Served) -> None:
    rest = ["--rest-port", str(hub.ports["rest"])]
    assert wait_for(hub.status)["restarts"] == 0
    wrong = run(["restart", *rest, "--token", "nope"])
    assert wrong.returncode == 1
    assert "refused (401)" in wrong.stderr and "admin token" in wrong.stderr
    missing = run(["restart", *rest])
    assert missing.returncode == 1 and "refused (401)" in missing.stderr
    assert wait_for(hub.status)["restarts"] == 0

    right = run(["restart", *rest, "--token", "s3cret-s3cret-s3cret"])
    assert right.returncode == 0, right.stderr
    assert "restart requested" in right.stdout
    status = wait_for(lambda: (s := hub.status()) and s["restarts"] == 1 and s, 10, "restarts 1")
    assert status["running"] and status["ports"] == hub.ports  # same ports, same process
    assert status["pid"] == hub.pid

    by_env = run(["restart", *rest, "--json"], env=child_env(STREAM_HUB_ADMIN_TOKEN="s3cret-s3cret-s3cret"))
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout)["restarting"] is True
    wait_for(lambda: (s := hub.status()) and s["restarts"] == 2, 10, "restarts 2")


def test_restart_without_a_server_exits_1() -> None:
    result = run(["restart", "--rest-port", str(free_port()), "--token", "x", "--timeout", "2"])
    assert result.returncode == 1 and "no hub runs" in result.stderr


# -- tail --------------------------------------------------------------------------------


def test_tail_count_and_run_filter(hub: Served, spawn: Spawner) -> None:
    wait_for(lambda: (s := hub.status()) and s["clients"]["sse"] == 0, 10, "no SSE clients")
    everything = spawn.start(["tail", *hub.port_args(), "--count", "5", "--json"])
    # The ports from the environment this time.
    only_b = spawn.start(
        ["tail", "--run", "b", "--count", "3", "--json"],
        env=child_env(**{f"STREAM_HUB_{name.upper()}_PORT": str(port) for name, port in hub.ports.items()}),
    )
    wait_for(lambda: (s := hub.status()) and s["clients"]["sse"] == 2, 15, "both tails connected")
    seqs = hub.publish(
        [
            {"type": "metric", "run": run_, "step": step, "metrics": {"loss": 1.0 / (step + 1)}}
            for step in range(3)
            for run_ in ("a", "b")
        ]
    )
    assert everything.wait() == 0, everything.err.text
    assert only_b.wait() == 0, only_b.err.text
    got = json_lines(everything.out.lines)
    assert [e["seq"] for e in got] == seqs[:5]
    assert [(e["run"], e["step"]) for e in got] == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    got_b = json_lines(only_b.out.lines)
    assert [(e["run"], e["step"]) for e in got_b] == [("b", 0), ("b", 1), ("b", 2)]
    assert got_b[0]["metrics"] == {"loss": 1.0}


def test_tail_text_format(hub: Served) -> None:
    since = wait_for(hub.status)["last_seq"]
    hub.publish(
        [
            {"type": "metric", "run": "fmt", "step": 7, "metrics": {"loss": 0.125}},
            {"type": "log", "run": "fmt", "data": {"text": "hello"}},
        ]
    )
    result = run(["tail", *hub.port_args(), "--since", str(since), "--count", "2"])
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert "metric" in first and "fmt" in first and "step 7" in first and "loss=0.125" in first
    assert "log" in second and '"hello"' in second


def test_tail_resumes_after_the_server_restarts(spawn: Spawner) -> None:
    served = spawn.serve("--token", "s3cret-s3cret-s3cret")
    # --wait: follow the hub across a clean stop, to the next process on its ports.
    tail = spawn.start(["tail", *served.port_args(), "--type", "metric", "--json", "--wait"])
    wait_for(lambda: (s := served.status()) and s["clients"]["sse"] == 1, 15, "tail connected")

    def metrics(steps: range) -> list[dict[str, Any]]:
        return [{"type": "metric", "run": "r", "step": s, "metrics": {"loss": float(s)}} for s in steps]

    served.publish(metrics(range(0, 3)))
    tail.out.wait(lambda ls: metric_steps(ls) == [0, 1, 2], 10, "steps 0-2")

    # 1. Restart in place (same process, history kept): tail resumes by Last-Event-ID.
    restart = run(["restart", "--rest-port", str(served.ports["rest"]), "--token", "s3cret-s3cret-s3cret"])
    assert restart.returncode == 0, restart.stderr
    wait_for(lambda: (s := served.status()) and s["restarts"] == 1, 10, "the restart")
    served.publish(metrics(range(3, 6)))
    tail.out.wait(lambda ls: metric_steps(ls) == list(range(6)), 15, "steps 0-5 after restart")

    # 2. A new server process on the same ports: a new epoch, seqs from 1 again.
    # The new metrics get seqs below the tail's last one, and filler lifts the
    # head past it: a resume by seq alone would skip them; by epoch it replays.
    last_seen = json_lines(tail.out.lines)[-1]["seq"]
    served.signal(signal.SIGTERM)
    assert served.wait() == 0, served.err.text
    again = spawn.serve("--token", "s3cret-s3cret-s3cret", ports=served.port_args())
    seqs = again.publish(
        metrics(range(6, 9)) + [{"type": "log", "run": "r", "data": {"i": i}} for i in range(20)]
    )
    assert seqs[2] < last_seen < seqs[-1]
    tail.out.wait(lambda ls: metric_steps(ls) == list(range(9)), 20, "steps 0-8 after a new process")

    tail.signal(signal.SIGINT)
    assert tail.wait(60) == 0  # a generous deadline: a loaded machine is slow to let a process end
    assert "reconnecting" in tail.err.text
    kinds = {e["type"] for e in json_lines(tail.out.lines)}
    assert kinds == {"metric", "gap"}  # --type metric: no shutdown; a gap is never left out
    gap = next(e for e in json_lines(tail.out.lines) if e["type"] == "gap")
    assert gap["data"]["reason"] == "epoch"


def test_tail_on_a_run_that_does_not_exist_says_so(hub: Served, spawn: Spawner) -> None:
    hub.publish([{"type": "metric", "run": "known", "step": 1, "metrics": {"x": 1.0}}])
    tail = spawn.start(["tail", *hub.port_args(), "--token", "s3cret-s3cret-s3cret", "--run", "nosuch"])
    tail.err.wait(lambda ls: any("nosuch" in line for line in ls), 30, "a word about the run")
    line = next(line for line in tail.err.lines if "nosuch" in line)
    assert "no events from run 'nosuch'" in line and "known" in line and "waiting" in line
    # The hint comes before tail subscribes (from now on): publish once it has.
    wait_for(lambda: (s := hub.status()) and s["clients"]["sse"] >= 1, 15, "tail connected")
    hub.publish([{"type": "metric", "run": "nosuch", "step": 7, "metrics": {"x": 2.0}}])
    tail.out.wait(lambda ls: any("step 7" in line for line in ls), 15, "the run's first event")
    tail.signal(signal.SIGINT)
    assert tail.wait(60) == 0  # a generous deadline: a loaded machine is slow to let a process end


def test_tail_ends_at_once_on_a_clean_stop_and_prints_no_shutdown_for_type_metric(spawn: Spawner) -> None:
    served = spawn.serve()
    tail = spawn.start(["tail", *served.port_args(), "--type", "metric", "--json"])
    wait_for(lambda: (s := served.status()) and s["clients"]["sse"] == 1, 15, "tail connected")
    served.publish([{"type": "metric", "run": "r", "step": 0, "metrics": {"loss": 1.0}}])
    tail.out.wait(lambda ls: metric_steps(ls) == [0], 10, "step 0")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert tail.wait(timeout=10) == 0  # not 30 s of "reconnecting"
    assert [e["type"] for e in json_lines(tail.out.lines)] == ["metric"]
    assert "reconnecting" not in tail.err.text and "clean shutdown" in tail.err.text


def test_tail_with_no_hub_says_so_plainly() -> None:
    rest = free_port()
    result = run(["tail", "--sse-port", str(free_port()), "--rest-port", str(rest)])
    assert result.returncode == 1
    assert result.stderr.startswith("stream-hub tail: no hub runs (looked at the registry")
    assert f"http://127.0.0.1:{rest} (the configured REST port)" in result.stderr
    assert result.stderr.count("\n") == 1  # at once, in one line: not 30 s of retrying


def test_tail_wait_without_a_hub_waits_for_one_then_says_so_once() -> None:
    rest = free_port()
    flags = ["--sse-port", str(free_port()), "--rest-port", str(rest), "--wait", "--retry-for", "1"]
    result = run(["tail", *flags])
    assert result.returncode == 1
    assert "after None" not in result.stderr and "reconnecting" not in result.stderr
    # Once when it starts waiting, once giving up: where it looked, both times.
    assert result.stderr.count(f"http://127.0.0.1:{rest} (the configured REST port)") == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith("stream-hub tail: no hub runs for 1 s (looked at")


# -- ports -------------------------------------------------------------------------------


def test_ports_table_and_json(held: tuple[subprocess.Popen[str], int], hub: Served) -> None:
    proc, port = held
    flags = ["--sse-port", str(port), "--ws-port", str(free_port()), "--rest-port", str(hub.ports["rest"])]
    table = run(["ports", *flags])
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["TRANSPORT", "ADDRESS", "STATE"] and len(rows) == 3
    sse, ws, rest = rows
    assert sse.startswith("sse") and "in use" in sse and str(proc.pid) in sse
    assert "http.server" in sse
    assert ws.startswith("ws") and " free " in ws
    assert rest.startswith("rest") and str(hub.pid) in rest and " yes " in rest

    as_json = run(["ports", *flags, "--json"])
    assert as_json.returncode == 0, as_json.stderr
    report = {row["name"]: row for row in json.loads(as_json.stdout)}
    assert list(report) == ["sse", "ws", "rest"]
    assert report["sse"]["pid"] == proc.pid and report["sse"]["free"] is False
    assert report["sse"]["looks_like_stream_hub"] is False
    assert report["ws"]["free"] is True and report["ws"]["pid"] is None
    assert report["rest"]["pid"] == hub.pid and report["rest"]["looks_like_stream_hub"] is True


def test_ports_free_refused_in_production_then_frees_in_development(
    held: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = held
    flags = ["--sse-port", str(port), "--ws-port", str(free_port()), "--rest-port", str(free_port())]
    refused = run(["ports", *flags, "--free"], env=child_env(ENVIRONMENT="production"))
    assert refused.returncode != 0
    assert "production" in refused.stderr and str(proc.pid) in refused.stderr
    assert proc.poll() is None and is_port_in_use(port)

    freed = run(["ports", *flags, "--free"])  # ENVIRONMENT unset: development
    assert freed.returncode == 0, freed.stderr
    assert proc.wait(timeout=10) is not None
    assert not is_port_in_use(port)
    assert f"pid {proc.pid}" in freed.stderr  # the log names what it signalled
    assert all(" free " in row for row in freed.stdout.splitlines()[1:])


def test_ports_takes_no_token() -> None:
    help_text = run(["ports", "--help"])
    assert help_text.returncode == 0, help_text.stderr
    assert "--token" not in help_text.stdout
    result = run(["ports", "--token", "x"])
    assert result.returncode == 2 and "unrecognized arguments: --token" in result.stderr


# -- client-side commands read only the settings they use ----------------------------------

# Bad values of settings that only a server reads.
BAD_SERVER_SETTINGS = {
    "STREAM_HUB_HISTORY_SIZE": "lots",
    "STREAM_HUB_MAX_CLIENTS": "-1",
    "STREAM_HUB_HEARTBEAT_INTERVAL": "soon",
    "STREAM_HUB_PORT_CONFLICT": "whatever",
    "STREAM_HUB_SERIES_POINTS": "1",
}


def test_client_commands_ignore_bad_settings_they_do_not_use(hub: Served) -> None:
    # Each command also ignores the tokens it does not use.
    status = run(
        ["status", "--rest-port", str(hub.ports["rest"]), "--json"],
        env=child_env(**BAD_SERVER_SETTINGS, STREAM_HUB_ADMIN_TOKEN=""),
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pid"] == hub.pid

    # Reaches the hub and is refused there (a wrong token), not by a setting.
    restart = run(
        ["restart", "--rest-port", str(hub.ports["rest"]), "--token", "wrong"],
        env=child_env(**BAD_SERVER_SETTINGS, STREAM_HUB_READ_TOKEN=""),
    )
    assert restart.returncode == 1 and "refused (401)" in restart.stderr, restart.stderr

    since = wait_for(hub.status)["last_seq"]
    hub.publish([{"type": "log", "run": "settings", "data": {"text": "hi"}}])
    tail = run(
        ["tail", *hub.port_args(), "--token", "s3cret", "--since", str(since), "--count", "1", "--json"],
        env=child_env(**BAD_SERVER_SETTINGS, STREAM_HUB_ADMIN_TOKEN=""),
    )
    assert tail.returncode == 0, tail.stderr
    assert json.loads(tail.stdout)["run"] == "settings"

    ports = run(
        ["ports", "--sse-port", str(free_port()), "--ws-port", str(free_port()), "--json"],
        env=child_env(**BAD_SERVER_SETTINGS, STREAM_HUB_READ_TOKEN="t"),
    )
    assert ports.returncode == 0, ports.stderr
    assert [row["name"] for row in json.loads(ports.stdout)] == ["sse", "ws", "rest"]


@pytest.mark.parametrize(
    ("command", "variable", "value", "field"),
    [
        (["status"], "STREAM_HUB_REST_PORT", "x", "rest_port"),
        (["status"], "STREAM_HUB_HOST", "no such host!", "host"),
        (["restart"], "STREAM_HUB_REST_PORT", "70000", "rest_port"),
        (["tail"], "STREAM_HUB_SSE_PORT", "x", "sse_port"),
        # Every command finding the hub reads all three ports: its registry record's key.
        (["status"], "STREAM_HUB_SSE_PORT", "x", "sse_port"),
        (["tail"], "STREAM_HUB_REST_PORT", "x", "rest_port"),
        (["export", "--run", "r"], "STREAM_HUB_WS_PORT", "x", "ws_port"),
        (["ports"], "STREAM_HUB_WS_PORT", "-1", "ws_port"),
    ],
)
def test_client_commands_name_a_bad_setting_they_use(
    command: list[str], variable: str, value: str, field: str
) -> None:
    result = run(command, env=child_env(**{variable: value}))
    assert result.returncode == 1
    assert result.stderr.startswith(f"stream-hub {command[0]}: StreamConfig.{field}: "), result.stderr
    assert result.stdout == ""


# -- help, version -----------------------------------------------------------------------


def test_help_for_every_subcommand() -> None:
    commands = [[], *([name] for name in SUBCOMMANDS)]
    procs = [
        subprocess.Popen(
            [*CLI, *command, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=child_env(),
        )
        for command in commands
    ]
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out.startswith(f"usage: stream-hub {' '.join(command)}".rstrip()), out
        if command:
            assert "--rest-port" in out and "--json" in out
        else:
            assert all(name in out for name in SUBCOMMANDS)


# -- packaging ---------------------------------------------------------------------------


def _module_level_imports(body: list[ast.stmt]) -> Iterator[tuple[str, int]]:
    """(top-level module, line) of each import that runs when the module is imported.

    Function bodies run later (lazy imports of optional features are fine),
    ``if TYPE_CHECKING:`` never runs, and an import guarded by ``except
    ImportError`` cannot break an install that lacks it.
    """
    for node in body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.module.split(".")[0], node.lineno
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
            if "ImportError" not in caught and "ModuleNotFoundError" not in caught:
                yield from _module_level_imports(node.body)
            for handler in node.handlers:
                yield from _module_level_imports(handler.body)
            yield from _module_level_imports(node.orelse + node.finalbody)
        elif isinstance(node, (ast.ClassDef, ast.With)):
            yield from _module_level_imports(node.body)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return dict(tomllib.loads((REPO / "pyproject.toml").read_text()))


def test_module_level_imports_are_runtime_dependencies() -> None:
    """`pip install .` brings only [project] dependencies: every third-party module
    the package imports at import time must come from one of them (the CLI once
    imported httpx, which only the [test] extra brought)."""
    from packaging.requirements import Requirement  # a dependency of pytest

    project = pyproject()["project"]
    declared = {_normalize(Requirement(spec).name) for spec in project["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    for path in sorted((REPO / "stream_hub").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for module, line in _module_level_imports(tree.body):
            if module in sys.stdlib_module_names or module in ("stream_hub", "__future__"):
                continue
            dists = providers.get(module, [])
            if not any(_normalize(dist) in declared for dist in dists):
                where = path.relative_to(REPO)
                undeclared.append(f"{where}:{line} imports {module} (from {dists or 'nothing installed'})")
    assert not undeclared, "not in [project] dependencies:\n" + "\n".join(undeclared)


def test_version_is_written_once() -> None:
    result = run(["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"stream-hub {stream_hub.__version__}\n"
    # The distribution's version is read from the package, not written a second time.
    meta = pyproject()
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["hatch"]["version"]["path"] == "stream_hub/_version.py"
