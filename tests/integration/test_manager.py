"""StreamServerManager: one server per process, shared by reference count."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading

import httpx
import pytest

from stream_hub import (
    LoopThreadError,
    StreamHubError,
    StreamServerManager,
    TrainingStreamServer,
    get_stream_server,
    get_stream_server_manager,
    release_stream_server,
)
from stream_hub.ports import is_port_in_use

from ..clients import STATUS_KEYS, STORE_STATUS_KEYS
from ..conftest import free_config, wait_for
from ..processes import run_python


def ports_free(ports: dict[str, int]) -> bool:
    return all(not is_port_in_use(p) for p in ports.values())


def test_manager_is_a_singleton() -> None:
    assert StreamServerManager() is StreamServerManager() is get_stream_server_manager()


def test_eight_threads_share_one_server_and_the_last_release_frees_every_port() -> None:
    cfg = free_config()
    barrier = threading.Barrier(8)

    def acquire(_: int) -> object:
        barrier.wait()
        return get_stream_server(config=cfg)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        servers = list(pool.map(acquire, range(8)))
    assert all(s is servers[0] for s in servers)
    manager = get_stream_server_manager()
    assert manager.status()["ref_count"] == 8
    ports = servers[0].ports
    assert len(set(ports.values())) == 3 and not ports_free(ports)

    barrier = threading.Barrier(8)

    def release(_: int) -> int:
        barrier.wait()
        return release_stream_server()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        counts = sorted(pool.map(release, range(8)))
    assert counts == list(range(8))
    assert not manager.is_server_running()
    assert ports_free(ports)  # verified by stop itself; checked again here


def test_server_serves_until_the_last_reference_goes() -> None:
    server = get_stream_server(config=free_config())
    get_stream_server()
    assert release_stream_server() == 1
    assert httpx.get(server.urls["rest"] + "/health").status_code == 200
    assert release_stream_server() == 0
    assert not get_stream_server_manager().is_server_running()


def test_release_without_reference_never_goes_below_zero(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stream_hub.manager"):
        assert release_stream_server() == 0
    assert "no reference held" in caplog.text
    assert get_stream_server_manager().status()["ref_count"] == 0


def test_lease_releases_exactly_once() -> None:
    manager = get_stream_server_manager()
    get_stream_server(config=free_config())  # an unrelated holder
    with manager.lease() as server:
        assert manager.ref_count == 2
        server.log({"x": 1})
    assert manager.ref_count == 1
    lease = manager.lease()
    assert lease.release() is True
    assert lease.release() is False
    assert manager.ref_count == 1
    release_stream_server()
    assert manager.ref_count == 0


def test_different_config_raises_naming_fields_and_leaves_the_server_alone() -> None:
    cfg = free_config(history_size=100)
    server = get_stream_server(config=cfg)
    ports = server.ports
    with pytest.raises(StreamHubError, match="history_size") as info:
        get_stream_server(config=free_config(history_size=200, heartbeat_interval=3.0))
    assert "heartbeat_interval" in str(info.value)
    assert get_stream_server_manager().ref_count == 1
    assert server.running and server.ports == ports
    assert get_stream_server(config=cfg) is server  # equal config is fine
    assert get_stream_server() is server  # so is none


def test_force_restart_keeps_identity_count_history_and_ports() -> None:
    server = get_stream_server(config=free_config())
    get_stream_server()
    seqs = [server.log({"loss": 1.0 / (i + 1)}, step=i, run="r") for i in range(50)]
    ports, epoch = server.ports, server.hub.epoch
    manager = get_stream_server_manager()
    assert manager.force_restart() is server
    status = manager.status()
    assert status["running"] and status["ref_count"] == 2 and status["restarts"] == 1
    assert server.ports == ports and status["epoch"] == epoch
    body = httpx.get(server.urls["rest"] + "/api/history", params={"since": 0, "types": "metric"}).json()
    assert [e["seq"] for e in body["events"] if e["type"] == "metric"] == seqs
    assert [e["type"] for e in body["events"] if e["type"] != "metric"] == ["shutdown"]
    assert server.log({"loss": 0.0}) > status["last_seq"] - 1


def test_status_has_the_contract_keys_with_and_without_a_server() -> None:
    manager = get_stream_server_manager()
    assert set(manager.status()) == STATUS_KEYS
    get_stream_server(config=free_config())
    status = manager.status()
    # Contract v3: a hosting hub persists by default, and says where; and what it lost (issue 23.1).
    assert set(status) == STATUS_KEYS | {"store", "drops"}
    assert set(status["store"]) == STORE_STATUS_KEYS
    assert status["store"]["path"].startswith(os.environ["STREAM_HUB_HOME"])
    assert status["running"] and status["loop_thread_alive"] and status["ref_count"] == 1
    assert set(status["events"]) == {"published", "delivered", "dropped", "rejected"}
    assert set(status["history"]) == {"size", "capacity"}
    assert set(status["clients"]) == {"sse", "ws", "evicted"}  # contract v2: evicted


def test_cleanup_stops_whatever_the_count() -> None:
    server = get_stream_server(config=free_config())
    get_stream_server()
    ports = server.ports
    manager = get_stream_server_manager()
    manager.cleanup()
    assert manager.ref_count == 0 and not manager.is_server_running()
    assert ports_free(ports)
    manager.cleanup()  # idempotent


def test_get_after_release_to_zero_starts_again_with_history() -> None:
    cfg = free_config()
    server = get_stream_server(config=cfg)
    seq = server.log({"x": 1})
    release_stream_server()
    again = get_stream_server(config=cfg)
    assert again is server and again.running
    assert again.log({"x": 2}) == seq + 4  # run_end, shutdown and status events in between
    release_stream_server()


def test_the_last_release_ends_the_runs_and_an_exception_fails_them() -> None:
    """Releasing the last reference ends this process's runs (finished, or
    failed when released while an exception propagates); logging to one
    again starts it again."""
    cfg = free_config()

    def states(server: TrainingStreamServer) -> dict[str, str]:
        answer = httpx.get(f"{server.urls['rest']}/api/runs", timeout=10).json()
        return {run["run"]: run["state"] for run in answer["runs"]}

    server = get_stream_server(config=cfg)
    server.log({"x": 1.0}, run="ok")
    release_stream_server()
    server = get_stream_server(config=cfg)
    assert states(server)["ok"] == "finished"
    server.log({"x": 2.0}, run="ok")
    wait_for(lambda: states(server)["ok"] == "running", what="logging again starts the run again")
    with pytest.raises(RuntimeError):
        try:
            server.log({"x": 3.0}, run="broken")
            raise RuntimeError("training blew up")
        finally:
            release_stream_server()
    server = get_stream_server(config=cfg)
    assert states(server) == {"ok": "failed", "broken": "failed"}  # both were open
    release_stream_server()


def test_blocking_calls_from_the_loop_thread_raise_instead_of_deadlocking() -> None:
    server = get_stream_server(config=free_config())
    manager = get_stream_server_manager()
    loop = server._serving.loop.loop
    assert loop is not None
    for call in (
        manager.force_restart,
        manager.cleanup,
        release_stream_server,
        server.stop,
        get_stream_server,
    ):

        async def attempt(fn: object = call) -> BaseException | None:
            try:
                fn()  # type: ignore[operator]
            except BaseException as exc:
                return exc
            return None

        error = asyncio.run_coroutine_threadsafe(attempt(), loop).result(5)
        assert isinstance(error, LoopThreadError), call
        assert "loop" in str(error)
    assert manager.is_server_running() and manager.ref_count == 1


async def test_works_when_the_caller_is_inside_a_running_loop() -> None:
    server = get_stream_server(config=free_config())
    async with httpx.AsyncClient() as client:
        server.log({"x": 1}, run="nb")
        r = await client.get(server.urls["rest"] + "/api/runs")
        assert [run["run"] for run in r.json()["runs"]] == ["nb"]
    ports = server.ports
    await server.aclose()
    assert not server.running and ports_free(ports)
    get_stream_server_manager().cleanup()


def test_a_failed_start_leaves_the_count_unchanged_and_a_later_get_retries() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    cfg = free_config(rest_port=port)
    manager = get_stream_server_manager()
    with pytest.raises(StreamHubError, match=str(port)):
        get_stream_server(config=cfg)
    assert manager.ref_count == 0 and not manager.is_server_running()
    blocker.close()
    wait_for(lambda: not is_port_in_use(port), what="blocker released")
    server = get_stream_server(config=cfg)
    assert server.ports["rest"] == port and manager.ref_count == 1


def test_cleanup_keeps_a_server_it_could_not_stop_so_it_can_try_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = get_stream_server(config=free_config())
    manager = get_stream_server_manager()
    real_stop = server.stop
    calls = []

    def failing_stop(timeout: float | None = None) -> None:
        calls.append(timeout)
        if len(calls) == 1:
            raise StreamHubError("sse port is still bound after stop")
        real_stop(timeout)

    monkeypatch.setattr(server, "stop", failing_stop)
    with pytest.raises(StreamHubError):
        manager.cleanup()
    assert manager.server is server and server.loop_thread_alive  # not orphaned
    manager.cleanup()
    assert manager.server is None and not server.loop_thread_alive


@pytest.mark.parametrize(
    ("ending", "status"), [("raise RuntimeError('blew up')", "failed"), ("pass", "finished")]
)
def test_at_exit_the_runs_end_and_the_server_stops_failed_after_an_uncaught_exception(
    ending: str, status: str
) -> None:
    """The hooks the first server installs (excepthook, atexit) do their work:
    the runs still open at exit end (``failed`` when an uncaught exception
    ended the script) and the server stops."""
    code = f"""
        import atexit, sys
        from stream_hub import StreamConfig, get_stream_server, get_stream_server_manager
        ended = []
        # Registered before the server's own hook, so it runs after it (atexit is LIFO).
        atexit.register(lambda: print("ended", ended, get_stream_server_manager().is_server_running()))
        server = get_stream_server(config=StreamConfig(sse_port=0, ws_port=0, rest_port=0))
        finish = server.finish
        server.finish = lambda run=None, status="finished": (ended.append((run, status)), finish(run, status))
        server.log({{"loss": 1.0}}, run="exp")
        {ending}
    """
    result = run_python(code, 60)
    assert f"ended [('exp', '{status}')] False" in result.stdout, (result.stdout, result.stderr[-3000:])
    assert ("RuntimeError: blew up" in result.stderr) == (status == "failed")  # still reported
