"""The simulated training runs, and the scripts in ``scripts/`` run as real
processes: ``demo_training.py`` against its own server, ``stream_status.py`` and
``force_restart.py`` against a running ``stream-hub serve``."""

from __future__ import annotations

import random
import re
import statistics
from typing import Any

import httpx

from stream_hub import get_stream_server, get_stream_server_manager, release_stream_server
from stream_hub.demo import SimulatedRun, run_demo_threads
from stream_hub.ports import is_port_in_use

from ..conftest import free_config, wait_for
from ..processes import PYTHON, REPO, Served, child_env, free_port, run

METRICS = {"loss", "accuracy", "learning_rate", "grad_norm", "samples_per_s"}


def history(base: str, run: str, types: str) -> list[dict[str, Any]]:
    response = httpx.get(
        base + "/api/history", params={"run": run, "types": types, "since": 0, "limit": 10_000}, timeout=10
    )
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def head_tail_means(values: list[float], n: int = 20) -> tuple[float, float]:
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])


# -- the simulated runs ------------------------------------------------------------------


def test_simulated_metrics_shape() -> None:
    run = SimulatedRun("shape", steps=500, seed=7)
    rng = random.Random(7)
    rows = [run.metrics(step, rng) for step in range(run.steps)]
    assert all(set(row) == METRICS for row in rows)
    loss = [r["loss"] for r in rows]
    acc = [r["accuracy"] for r in rows]
    lr = [r["learning_rate"] for r in rows]
    first, last = head_tail_means(loss)
    assert first > 1.5 and last < 0.3 and first > 5 * last  # falls from ~ln(10)
    assert len(set(loss[:50])) > 40  # with noise, not a clean line
    first, last = head_tail_means(acc)
    assert first < 0.2 and last > 0.9
    assert all(0.0 <= a < 1.0 for a in acc)
    peak = lr.index(max(lr))
    assert 0 < peak < run.steps // 5  # warm-up, then cosine decay
    assert max(lr) <= run.base_lr and lr[-1] < 0.01 * max(lr)
    assert all(r["samples_per_s"] > 0 and r["grad_norm"] >= 0 for r in rows)
    rng = random.Random(7)  # same seed, same run
    assert [run.metrics(step, rng) for step in range(run.steps)] == rows


def test_demo_threads_log_realistic_curves_through_the_server() -> None:
    server = get_stream_server(config=free_config())  # our reference keeps it up between runs
    ports = server.ports
    threads, _stop = run_demo_threads(runs=2, steps=200, step_interval=0.0005)
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    base = server.urls["rest"]
    last_losses: dict[str, float] = {}
    for name in ("exp1", "exp2"):
        metrics = history(base, name, "metric")
        assert [e["step"] for e in metrics] == list(range(200))
        loss = [e["metrics"]["loss"] for e in metrics]
        acc = [e["metrics"]["accuracy"] for e in metrics]
        first, last = head_tail_means(loss)
        assert first > 3 * last, f"{name}: loss {first:.3f} -> {last:.3f}"
        last_losses[name] = last
        first, last = head_tail_means(acc)
        assert last > first + 0.5, f"{name}: accuracy {first:.3f} -> {last:.3f}"
        logs = [e["data"]["text"] for e in history(base, name, "log")]
        assert logs[0] == f"run {name} started" and logs[-1] == f"run {name} finished"
    assert last_losses["exp2"] > last_losses["exp1"]  # the harder run ends higher
    assert get_stream_server_manager().status()["ref_count"] == 1  # each thread released its own
    release_stream_server()
    assert not server.running
    assert not any(is_port_in_use(port) for port in ports.values())


def test_demo_threads_stop_when_asked() -> None:
    server = get_stream_server(config=free_config())
    try:
        threads, stop = run_demo_threads(runs=2, steps=1_000_000, step_interval=0.001)
        wait_for(lambda: server.status()["last_seq"] > 20, what="some steps")
        stop.set()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
        logs = [e["data"]["text"] for e in history(server.urls["rest"], "exp1", "log")]
        assert logs[-1] == "run exp1 finished"
    finally:
        release_stream_server()


# -- scripts -----------------------------------------------------------------------------


def test_demo_training_script_runs_and_stops_the_server() -> None:
    result = run(
        ["scripts/demo_training.py", "--runs", "2", "--steps", "50", "--interval", "0.001"],
        prefix=PYTHON,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "dashboard: http://127.0.0.1:" in result.stdout
    assert result.stdout.rstrip().endswith("the server stopped with the last release")
    stopped = re.search(r"stream_hub stopped \(stop\) .*; ports \[([\d, ]+)\] verified free", result.stderr)
    assert stopped, result.stderr
    ports = [int(p) for p in stopped.group(1).split(",")]
    assert len(ports) == 3 and not any(is_port_in_use(p) for p in ports)
    assert result.stderr.count("stream_hub serving") == 1  # one server for both threads


def test_stream_status_script(hub: Served) -> None:
    rest = ["--rest-port", str(hub.ports["rest"])]
    table = run(["scripts/stream_status.py", *rest], prefix=PYTHON)
    assert table.returncode == 0, table.stderr
    assert re.search(rf"^pid\s+{hub.pid}$", table.stdout, re.MULTILINE), table.stdout
    as_json = run(["scripts/stream_status.py", *rest, "--json"], prefix=PYTHON)
    assert as_json.returncode == 0
    assert '"running": true' in as_json.stdout
    by_env = run(
        ["scripts/stream_status.py"],
        prefix=PYTHON,
        env=child_env(STREAM_HUB_REST_PORT=str(hub.ports["rest"])),
    )
    assert by_env.returncode == 0, by_env.stderr
    nobody = run(["scripts/stream_status.py", "--rest-port", str(free_port())], prefix=PYTHON)
    assert nobody.returncode == 1 and "no hub runs" in nobody.stderr


def test_force_restart_script(hub: Served) -> None:
    rest = ["--rest-port", str(hub.ports["rest"])]
    restarts = wait_for(hub.status)["restarts"]
    wrong = run(["scripts/force_restart.py", *rest, "--token", "wrong"], prefix=PYTHON)
    assert wrong.returncode == 1 and "401" in wrong.stderr
    right = run(
        ["scripts/force_restart.py", *rest],
        prefix=PYTHON,
        env=child_env(STREAM_HUB_ADMIN_TOKEN="s3cret-s3cret-s3cret"),
    )
    assert right.returncode == 0, right.stderr
    wait_for(lambda: (s := hub.status()) and s["restarts"] == restarts + 1, 10, "the restart")
    nobody = run(["scripts/force_restart.py", "--rest-port", str(free_port()), "--token", "x"], prefix=PYTHON)
    assert nobody.returncode == 1


def test_scripts_have_help() -> None:
    for script in ("demo_training.py", "stream_status.py", "force_restart.py"):
        result = run([str(REPO / "scripts" / script), "--help"], prefix=PYTHON)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr
