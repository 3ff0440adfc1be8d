"""stream_hub.ports against real processes and real sockets.

Holders are real subprocesses (``python -m http.server`` or a small listener
that ignores SIGTERM) on ports found by binding port 0. Every wait polls with a
deadline; every subprocess is killed in a fixture's teardown.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import psutil
import pytest

from stream_hub import ports
from stream_hub.config import StreamConfig
from stream_hub.errors import ConfigError, KillRefusedError, PortInUseError
from stream_hub.ports import (
    PortManager,
    describe_process,
    ensure_port_available,
    format_ports_report,
    get_process_using_port,
    is_port_in_use,
    is_production,
    kill_process,
    kill_refusal_reason,
    ports_report,
)

from ..conftest import wait_for
from ..processes import PYTHON, Spawner, accepts, alive, free_port, port_is_bindable, run

Held = tuple[subprocess.Popen[str], int]  # the ``held`` fixture: a holder and its port


@pytest.fixture
def own_listener() -> Iterator[socket.socket]:
    """A socket listening in the test process itself."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        free_port("::1", socket.AF_INET6)
    except OSError:
        return False
    return True


# -- is_port_in_use / who holds it ----------------------------------------------


def test_is_port_in_use_ipv4_listening_then_closed(own_listener: socket.socket) -> None:
    port = own_listener.getsockname()[1]
    assert is_port_in_use(port)
    assert is_port_in_use(port, "127.0.0.1")
    assert is_port_in_use(port, "localhost")
    assert is_port_in_use(port, "0.0.0.0")
    own_listener.close()
    assert not is_port_in_use(port)
    assert not is_port_in_use(port, "localhost")


def test_is_port_in_use_bound_but_not_listening() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert is_port_in_use(sock.getsockname()[1])


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_is_port_in_use_ipv6() -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.bind(("::1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert is_port_in_use(port, "::1")
        assert is_port_in_use(port, "[::1]")
        assert get_process_using_port(port, "::1") == os.getpid()
    finally:
        sock.close()
    assert not is_port_in_use(port, "::1")


def test_port_zero_and_bad_ports() -> None:
    assert not is_port_in_use(0)
    for policy in ("auto", "fail", "free", "next"):
        assert ensure_port_available(0, policy=policy, environment="production") == 0
    with pytest.raises(ValueError):
        is_port_in_use(70000)
    with pytest.raises(ConfigError, match="port_conflict"):
        ensure_port_available(8888, policy="sometimes")


def test_get_process_using_port_finds_the_subprocess(held: Held) -> None:
    proc, port = held
    assert get_process_using_port(port) == proc.pid
    assert get_process_using_port(port, "127.0.0.1") == proc.pid
    assert get_process_using_port(free_port()) is None
    description = describe_process(proc.pid)
    assert description is not None and "http.server" in description and str(port) in description


@pytest.mark.skipif(shutil.which("lsof") is None, reason="lsof not installed")
def test_get_process_using_port_falls_back_to_lsof(held: Held, monkeypatch: pytest.MonkeyPatch) -> None:
    proc, port = held

    def denied(kind: str = "inet") -> list[object]:
        raise psutil.AccessDenied()

    monkeypatch.setattr(psutil, "net_connections", denied)
    assert get_process_using_port(port) == proc.pid


def test_get_process_using_port_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(kind: str = "inet") -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(psutil, "net_connections", broken)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert get_process_using_port(free_port()) is None


# -- policies --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["argument", "ENVIRONMENT variable"])
def test_production_refuses_and_holder_survives(
    held: Held, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, port = held
    if how == "argument":
        environment: str | None = "production"
        monkeypatch.delenv("ENVIRONMENT", raising=False)
    else:
        environment = None
        monkeypatch.setenv("ENVIRONMENT", "Production")
    with pytest.raises(PortInUseError) as info:
        ensure_port_available(port, environment=environment, transport="ws")
    err = info.value
    assert (err.port, err.pid) == (port, proc.pid)
    assert err.process is not None and "http.server" in err.process
    message = str(err)
    assert str(port) in message and str(proc.pid) in message and "production" in message
    assert f"lsof -i :{port}" in message
    assert alive(proc) and accepts(port)


def test_development_frees_the_port(held: Held, caplog: pytest.LogCaptureFixture) -> None:
    proc, port = held
    caplog.set_level(logging.INFO, logger="stream_hub.ports")
    assert ensure_port_available(port, environment="development") == port
    assert proc.wait(timeout=5) is not None
    assert port_is_bindable(port)
    text = caplog.text
    for expected in (
        f"port {port} on 127.0.0.1 busy",
        f"held by pid {proc.pid}",
        "http.server",
        "sending SIGTERM",
        f"port {port} is free",
    ):
        assert expected in text


def test_unset_environment_is_development(held: Held, monkeypatch: pytest.MonkeyPatch) -> None:
    proc, port = held
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    assert ensure_port_available(port, policy="free") == port
    proc.wait(timeout=5)
    assert port_is_bindable(port)
    assert not is_production("staging") and is_production(" PRODUCTION ")


def test_holder_ignoring_sigterm_is_killed(spawn: Spawner, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    proc = spawn.holder(port, kind="listener", extra=("--ignore-sigterm",))
    caplog.set_level(logging.INFO, logger="stream_hub.ports")
    started = time.monotonic()
    freed = ensure_port_available(port, policy="free", environment="development", timeout=0.5)
    assert freed == port
    assert time.monotonic() - started < 5
    proc.wait(timeout=5)
    assert port_is_bindable(port)
    assert "sending SIGKILL" in caplog.text and f"killed pid {proc.pid} with SIGKILL" in caplog.text


def test_fail_policy_refuses_even_in_development(held: Held) -> None:
    proc, port = held
    with pytest.raises(PortInUseError, match='port_conflict="fail"') as info:
        ensure_port_available(port, policy="fail", environment="development")
    assert info.value.pid == proc.pid
    assert alive(proc)


def test_next_policy_returns_another_free_port(held: Held) -> None:
    proc, port = held
    other = ensure_port_available(port, policy="next", environment="development")
    assert other != port and port < other <= port + ports.NEXT_PORT_SEARCH
    assert not is_port_in_use(other)
    skipped = ensure_port_available(port, policy="next", exclude={other})
    assert skipped not in (port, other)
    assert alive(proc)


# -- guards ----------------------------------------------------------------------


def test_socket_in_this_process_is_reported_not_killed(own_listener: socket.socket) -> None:
    port = own_listener.getsockname()[1]
    with pytest.raises(PortInUseError) as info:
        ensure_port_available(port, policy="free", environment="development")
    assert info.value.pid == os.getpid()
    assert "this very process" in str(info.value)
    assert accepts(port)  # still ours, still listening


def test_bound_but_not_listening_socket_is_reported() -> None:
    # Not listening, so no table the kernel lists has it; this process's own
    # descriptors say it is ours (tests/integration/test_port_held_here.py).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match="in use by this process") as info:
            ensure_port_available(port, policy="free", environment="development")
        assert info.value.pid == os.getpid()
        assert sock.getsockname()[1] == port


def test_guards_refuse_self_parent_and_init(spawn: Spawner) -> None:
    for pid in (os.getpid(), os.getppid(), 1):
        assert kill_refusal_reason(pid) is not None, pid
    if os.getppid() > 1:  # run from a shell, not straight under init
        assert "ancestor" in (kill_refusal_reason(os.getppid()) or "")
    with pytest.raises(KillRefusedError):
        kill_process(os.getppid())
    with pytest.raises(KillRefusedError):
        kill_process(os.getpid())
    assert psutil.pid_exists(os.getppid())
    child = spawn.holder(free_port())
    assert kill_refusal_reason(child.pid) is None


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to run as another user")
def test_guard_refuses_another_users_process() -> None:
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, user=65534)
    try:
        reason = kill_refusal_reason(proc.pid)
        assert reason is not None and "another user" in reason
        with pytest.raises(KillRefusedError):
            kill_process(proc.pid)
        assert alive(proc)
    finally:
        proc.kill()
        proc.wait(timeout=5)


def test_child_refuses_to_kill_its_parent_holding_the_port() -> None:
    """A parent listens and starts a child that tries to free the parent's port."""
    child_code = (
        "import sys\n"
        "from stream_hub.ports import ensure_port_available\n"
        "from stream_hub.errors import PortInUseError\n"
        "try:\n"
        "    ensure_port_available(int(sys.argv[1]), policy='free', environment='development')\n"
        "except PortInUseError as e:\n"
        "    print(e.pid, e.reason)\n"
        "    sys.exit(3)\n"
    )
    parent_code = textwrap.dedent(
        """
        import os, socket, subprocess, sys
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        r = subprocess.run([sys.executable, "-c", sys.argv[1], str(srv.getsockname()[1])],
                           capture_output=True, text=True, timeout=60)
        print(os.getpid(), r.returncode, r.stdout.strip(), r.stderr.strip()[-500:])
        """
    )
    result = run(["-c", parent_code, child_code], prefix=PYTHON, timeout=60)
    assert result.returncode == 0, result.stderr
    parent_pid, child_rc, *rest = result.stdout.split(maxsplit=2)
    assert child_rc == "3", result.stdout
    assert rest[0].startswith(parent_pid) and "ancestor" in rest[0]


def test_kill_process_of_a_finished_pid_is_true() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    assert kill_process(proc.pid) is True


# -- PortManager -----------------------------------------------------------------


def test_port_manager_check(spawn: Spawner, held: Held) -> None:
    proc, port = held
    manager = PortManager()
    status = manager.check(port)
    assert status.in_use and status.pid == proc.pid and not status.is_stream_hub
    assert status.process is not None and "http.server" in status.process
    marked_port = free_port()
    marked = spawn.holder(marked_port, kind="listener", extra=("stream_hub-test-holder",))
    marked_status = manager.check(marked_port)
    assert marked_status.pid == marked.pid and marked_status.is_stream_hub
    free = free_port()
    assert manager.check(free) == ports.PortStatus(free, False)
    assert alive(proc) and alive(marked)


def test_resolve_next_gives_distinct_ports(held: Held) -> None:
    proc, port = held
    # The WebSocket port is exactly the one "next" would pick for the busy SSE port.
    ws_port = ensure_port_available(port, policy="next")
    rest_port = free_port()
    resolved = PortManager(policy="next").resolve({"sse": port, "ws": ws_port, "rest": rest_port})
    assert resolved["ws"] == ws_port and resolved["rest"] == rest_port
    assert resolved["sse"] not in (port, ws_port, rest_port)
    assert len(set(resolved.values())) == 3
    assert alive(proc)
    assert PortManager(policy="next").resolve({"sse": 0, "ws": 0, "rest": 0}) == {
        "sse": 0,
        "ws": 0,
        "rest": 0,
    }


def test_resolve_blocked_third_port_leaves_others_unbound(
    held: Held,
) -> None:
    proc, port = held
    sse, ws = free_port(), free_port()
    manager = PortManager(policy="auto", environment="production")
    with pytest.raises(PortInUseError) as info:
        manager.resolve({"sse": sse, "ws": ws, "rest": port})
    assert (info.value.transport, info.value.pid) == ("rest", proc.pid)
    assert "rest port" in str(info.value)
    assert not is_port_in_use(sse) and not is_port_in_use(ws)
    assert alive(proc)


def test_resolve_checks_every_guard_before_killing_anything(held: Held, own_listener: socket.socket) -> None:
    proc, port = held
    ours = own_listener.getsockname()[1]
    manager = PortManager(policy="free", environment="development")
    with pytest.raises(PortInUseError) as info:
        manager.resolve({"sse": port, "ws": free_port(), "rest": ours})
    assert info.value.pid == os.getpid() and info.value.transport == "rest"
    assert alive(proc) and accepts(port)  # the killable SSE holder was not touched


def test_resolve_frees_all_in_development(spawn: Spawner) -> None:
    a, b = free_port(), free_port()
    pa, pb = spawn.holder(a), spawn.holder(b)
    wanted = {"sse": a, "ws": b, "rest": free_port()}
    assert PortManager(policy="auto", environment="development").resolve(wanted) == wanted
    pa.wait(timeout=5)
    pb.wait(timeout=5)
    assert port_is_bindable(a) and port_is_bindable(b)


def test_resolve_rejects_duplicate_ports() -> None:
    port = free_port()
    with pytest.raises(ConfigError, match="ws_port"):
        PortManager().resolve({"sse": port, "ws": port, "rest": 0})


# -- report ----------------------------------------------------------------------


def test_ports_report(held: Held) -> None:
    proc, port = held
    free = free_port()
    config = StreamConfig(host="127.0.0.1", sse_port=port, ws_port=free, rest_port=0)
    rows = ports_report(config)
    assert [row["name"] for row in rows] == ["sse", "ws", "rest"]
    sse, ws, rest = rows
    assert sse == {
        "name": "sse",
        "host": "127.0.0.1",
        "port": port,
        "free": False,
        "pid": proc.pid,
        "process": describe_process(proc.pid),
        "looks_like_stream_hub": False,
    }
    assert ws["free"] and ws["pid"] is None and rest["free"] and rest["port"] == 0
    text = format_ports_report(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["TRANSPORT", "ADDRESS", "STATE", "PID", "STREAM_HUB", "PROCESS"]
    assert f"127.0.0.1:{port}" in lines[1] and "in use" in lines[1] and str(proc.pid) in lines[1]
    assert "free" in lines[2] and "any free port" in lines[3]
    assert alive(proc)  # reporting never signals


def test_kill_process_waits_without_fixed_sleeps(spawn: Spawner) -> None:
    port = free_port()
    proc = spawn.holder(port, kind="listener")
    started = time.monotonic()
    assert kill_process(proc.pid, timeout=5.0) is True
    assert time.monotonic() - started < 2.0
    proc.wait(timeout=5)
    assert not is_port_in_use(port)


# The main thread exits (pthread_exit) and shows as a zombie; another thread
# keeps serving the listener, so the process still holds its port.
ZOMBIE_LEADER = textwrap.dedent(
    """
    import ctypes, signal, socket, sys, threading
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen()
    def serve():
        while True:
            srv.accept()[0].close()
    threading.Thread(target=serve).start()
    print("ready", flush=True)
    ctypes.CDLL(None).pthread_exit(None)
    """
)


def test_a_zombie_main_thread_is_not_taken_for_an_ended_process(
    spawn: Spawner, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    proc = spawn.start(["-c", ZOMBIE_LEADER, str(port)], prefix=PYTHON)
    proc.kill_at_teardown = True
    proc.out.wait(lambda lines: "ready" in lines, what="the listener")
    holder = psutil.Process(proc.pid)
    wait_for(lambda: holder.status() == psutil.STATUS_ZOMBIE, what="the main thread to exit")
    assert accepts(port)  # its other thread still serves the port
    with caplog.at_level(logging.INFO, logger="stream_hub.ports"):
        assert kill_process(proc.pid, timeout=0.5) is True
    # SIGTERM is ignored: only SIGKILL ends it, and the kill waited for that.
    assert "sending SIGKILL" in caplog.text
    assert not is_port_in_use(port)


def test_verify_released_accepts_a_port_the_successor_has_bound_and_nobody_else(spawn: Spawner) -> None:
    # A host that handed its hub over: the successor may bind the ports before
    # the old host verifies them; only that process counts as released.
    from stream_hub.errors import StreamHubError
    from stream_hub.ports.bind import verify_released

    port = free_port()
    holder = spawn.holder(port, kind="listener")
    verify_released("127.0.0.1", {"sse": port}, successor=holder.pid)
    with pytest.raises(StreamHubError, match=f"sse port {port} is still bound after stop"):
        verify_released("127.0.0.1", {"sse": port}, successor=holder.pid + 1)
    with pytest.raises(StreamHubError, match="still bound"):
        verify_released("127.0.0.1", {"sse": port})
