"""Discovery (contract v3): every client-side entry point — ``stream-hub
status|tail|restart|export`` and ``follow()``/``afollow()`` without a URL —
finds the user's hub through the registry first (wherever its ports moved),
then at the configured ports; no hub, or a foreign program where the hub
should be, is one line and exit 1.

Real processes: a ``stream-hub serve`` that had to move its REST port because
a ``python -m http.server`` holds the configured one (development,
``port_conflict="auto"``: it takes the next port and records it in the test
run's registry), the command as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stream_hub import StreamConfig
from stream_hub.client import HubNotFound, NotAHub, afollow, follow

from ..conftest import wait_for
from ..processes import Served, Spawner, child_env, free_port, free_ports, run


def configured_env(ports: dict[str, int]) -> dict[str, str]:
    return {f"STREAM_HUB_{name.upper()}_PORT": str(port) for name, port in ports.items()}


def flags(ports: dict[str, int]) -> list[str]:
    return [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]


class MovedHub:
    """A hub configured for ``configured`` whose REST port a foreign HTTP server holds."""

    def __init__(self, served: Served, configured: dict[str, int], holder: subprocess.Popen[str]) -> None:
        self.served = served
        self.configured = configured
        self.holder = holder


@pytest.fixture(params=[("rest",)])
def moved(spawn: Spawner, request: pytest.FixtureRequest) -> MovedHub:
    """The hub; a foreign HTTP server holds its configured REST port, and the
    other configured ports the test's parameter names."""
    held: tuple[str, ...] = request.param
    sse, ws, rest = free_ports(3)
    configured = {"sse": sse, "ws": ws, "rest": rest}
    # python -m http.server: answers /health with a 404 page.
    holders = [spawn.holder(configured[name]) for name in held]
    served = spawn.serve(
        "--token",
        "restart-token-0123456789",
        ports=flags(configured),
        env=child_env(STREAM_HUB_PORT_CONFLICT="auto"),  # development: next ports, never a kill
    )
    for name, port in configured.items():
        assert (served.ports[name] != port) == (name in held), (served.ports, configured)
    assert all(holder.poll() is None for holder in holders)
    return MovedHub(served, configured, holders[0])


# The SSE port moved too: tail and follow() would otherwise reach the hub at its configured one.
SSE_MOVED_TOO = pytest.mark.parametrize("moved", [("rest", "sse")], indirect=True)


def metrics(run_: str, steps: range) -> list[dict[str, Any]]:
    return [{"type": "metric", "run": run_, "step": s, "metrics": {"loss": 1.0 / (s + 1)}} for s in steps]


# -- a hub that moved: found through the registry --------------------------------------------


def test_status_and_restart_find_a_hub_that_moved(moved: MovedHub) -> None:
    hub = moved.served
    as_json = run(["status", "--json", *flags(moved.configured)])
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert status["pid"] == hub.pid and status["ports"] == hub.ports
    # The configured ports from the environment, as a user's shell would have them.
    table = run(["status"], env=child_env(**configured_env(moved.configured)))
    assert table.returncode == 0, table.stderr
    assert f"http://127.0.0.1:{hub.ports['rest']}" in table.stdout
    assert "through the registry" in table.stdout and str(moved.configured["rest"]) in table.stdout

    restart = run(["restart", "--token", "restart-token-0123456789", *flags(moved.configured)])
    assert restart.returncode == 0, restart.stderr
    wait_for(lambda: (s := hub.status()) and s["restarts"] == 1, 10, "the moved hub's restart")


@SSE_MOVED_TOO
def test_tail_finds_a_hub_that_moved(moved: MovedHub) -> None:
    hub = moved.served
    seqs = hub.publish(metrics("moved", range(3)))
    result = run(["tail", "--json", "--since", str(seqs[0] - 1), "--count", "3", *flags(moved.configured)])
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in got] == seqs and {e["run"] for e in got} == {"moved"}


def test_export_finds_a_hub_that_moved(moved: MovedHub) -> None:
    hub = moved.served
    hub.publish(metrics("exp", range(4)))
    result = run(
        ["export", "--run", "exp", "--format", "jsonl"], env=child_env(**configured_env(moved.configured))
    )
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line)["step"] for line in result.stdout.splitlines()]
    assert steps == [0, 1, 2, 3]


@SSE_MOVED_TOO
def test_follow_and_afollow_without_a_url_find_a_hub_that_moved(
    moved: MovedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = moved.served
    seqs = hub.publish(metrics("py", range(3)))
    for name, value in configured_env(moved.configured).items():
        monkeypatch.setenv(name, value)
    with follow(since=seqs[0] - 1, types="metric", retry_for=5) as events:
        got = [next(events) for _ in range(3)]
        assert events.follower.url == f"http://127.0.0.1:{hub.ports['sse']}/events"
    assert [e["seq"] for e in got] == seqs

    async def first_three() -> list[dict[str, Any]]:
        config = StreamConfig.reading([], **{f"{n}_port": p for n, p in moved.configured.items()})
        async with afollow(since=seqs[0] - 1, types="metric", retry_for=5, config=config) as sub:
            return [await sub.__anext__() for _ in range(3)]

    monkeypatch.delenv("STREAM_HUB_REST_PORT")  # afollow reads config=, not the environment
    assert [e["seq"] for e in asyncio.run(first_three())] == seqs


# -- nothing, or something else ----------------------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["tail"], ["restart"], ["export", "--run", "r"], ["runs"]])
def test_no_hub_is_one_line_and_exit_1(command: list[str], tmp_path: Path) -> None:
    ports = dict(zip(("sse", "ws", "rest"), free_ports(3), strict=True))
    # A data directory of its own: export and runs read persisted runs when no hub answers.
    result = run([*command, *flags(ports)], env=child_env(STREAM_HUB_HOME=str(tmp_path)))
    assert result.returncode == 1
    assert result.stdout == ""
    line = result.stderr
    assert line.count("\n") == 1, line
    assert line.startswith(f"stream-hub {command[0]}: no hub runs (looked at the registry (no record for ")
    key = f"127.0.0.1-{ports['sse']}-{ports['ws']}-{ports['rest']}"
    assert key in line and f"http://127.0.0.1:{ports['rest']} (the configured REST port)" in line


@pytest.mark.parametrize("command", [["status"], ["tail"], ["restart"], ["export", "--run", "r"]])
def test_a_foreign_program_is_named_never_dumped(
    command: list[str], held: tuple[subprocess.Popen[str], int]
) -> None:
    holder, port = held
    result = run([*command, "--sse-port", str(free_port()), "--rest-port", str(port)])
    assert result.returncode == 1
    assert result.stdout == ""
    line = result.stderr
    assert line.count("\n") == 1, line
    assert line.startswith(f"stream-hub {command[0]}: port {port} answers, but not as a stream_hub hub")
    # http.server's answer (an HTML error page) is never shown.
    assert "<" not in line and "Error response" not in line and "File not found" not in line
    assert holder.poll() is None  # and never touched


def test_follow_without_a_url_names_a_foreign_program_at_once(
    held: tuple[subprocess.Popen[str], int],
) -> None:
    _holder, port = held
    config = StreamConfig.reading([], sse_port=free_port(), ws_port=free_port(), rest_port=port)
    with pytest.raises(NotAHub, match=f"^port {port} answers, but not as a stream_hub hub"):
        next(iter(follow(config=config, retry_for=30)))  # at once: retrying would not help


def test_follow_without_a_url_and_no_hub_raises_hub_not_found() -> None:
    config = StreamConfig.reading([], sse_port=free_port(), ws_port=free_port(), rest_port=free_port())
    with pytest.raises(HubNotFound) as caught:
        next(iter(follow(config=config, retry_for=0.5)))
    message = str(caught.value)
    assert message.startswith("no hub runs for 0.5 s (looked at the registry")
    assert f"http://127.0.0.1:{config.rest_port} (the configured REST port)" in message


def test_follow_takes_a_url_or_a_config_not_both() -> None:
    with pytest.raises(TypeError, match="not both"):
        follow("http://127.0.0.1:1", config=StreamConfig.reading([]))
