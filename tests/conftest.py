"""Shared fixtures: real servers on port 0, a clean manager per test, child
processes ended at teardown; helpers that wait on a condition with a
deadline (never a fixed sleep); and which tests run by default.

Clients of the three faces are in ``clients.py``; child processes and ports
in ``processes.py``.

Every test session, and each pytest-xdist worker, has a data directory of
its own (``STREAM_HUB_HOME`` in a temporary directory, set when this file is
imported so every child process inherits it); the session fails if anything
was written under the user's real data directory meanwhile.

Two groups run only when asked for. Tests under ``stress/`` are marked
``stress``; tests under ``integrations/`` (the bridges against the real
frameworks: torch, transformers, Lightning, TensorBoard) are marked
``integrations``. A group runs with its flag (``--stress``,
``--integrations``; CI gives both), a ``-m`` expression that names one of its
tests' markers (``-m stress``, ``-m torture``, ``-m integrations``), or a path
inside its directory. Any other run leaves it out, whatever else ``-m`` says.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_hub import StreamConfig, TrainingStreamServer, get_stream_server_manager
from stream_hub.home import HOME_VARIABLE, default_home

from .clients import SSEStream
from .processes import Served, Spawner, free_port
from .redis_server import RedisServer

# A suite started in the background of a non-interactive shell inherits an
# ignored SIGINT, and so would every process the tests start: Ctrl-C tests
# (``tail`` ends on SIGINT) would wait forever. Restore the default: a
# handled signal is the default again in an exec'd child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# -- the data directory: never the user's ---------------------------------------------------

# The session's temporary directory, handed by the xdist controller to its workers.
_SESSION_HOMES = "_STREAM_HUB_TEST_HOMES"


def _real_homes() -> list[Path]:
    """Where this user's stream_hub data lives outside the tests: the
    platform's default and a ``STREAM_HUB_HOME`` set in the shell."""
    homes = [default_home()]
    if os.environ.get(_SESSION_HOMES) is None and os.environ.get(HOME_VARIABLE, "").strip():
        homes.append(Path(os.path.expanduser(os.environ[HOME_VARIABLE].strip())))
    return homes


def _snapshot(path: Path) -> dict[str, tuple[int, int]] | None:
    """Every entry under ``path``: (mtime in ns, size); None if it does not exist."""
    if not os.path.lexists(path):
        return None
    found = {".": (path.lstat().st_mtime_ns, 0)}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(root) / name
            try:
                info = full.lstat()
            except OSError:
                continue
            found[str(full.relative_to(path))] = (info.st_mtime_ns, info.st_size)
    return found


def _own_home() -> tuple[Path, bool]:
    """This test process's ``STREAM_HUB_HOME`` (created), and whether this
    process made the session's directory (so checks and removes it at the end)."""
    inherited = os.environ.get(_SESSION_HOMES)
    made = not (inherited and os.path.isdir(inherited))
    base = Path(tempfile.mkdtemp(prefix="stream_hub-test-home-")) if made else Path(str(inherited))
    os.environ[_SESSION_HOMES] = str(base)
    home = base / os.environ.get("PYTEST_XDIST_WORKER", "main")
    home.mkdir(mode=0o700, exist_ok=True)
    return home, made


_REAL_HOMES = _real_homes()
_BEFORE = {home: _snapshot(home) for home in _REAL_HOMES}
TEST_HOME, _MADE_HOME = _own_home()
os.environ[HOME_VARIABLE] = str(TEST_HOME)  # before anything could read it; children inherit it
if _MADE_HOME:
    atexit.register(shutil.rmtree, TEST_HOME.parent, True)


def written_to_real_homes() -> list[str]:
    """What changed under the user's real data directories since this file was imported."""
    changes = []
    for home, before in _BEFORE.items():
        after = _snapshot(home)
        if after == before:
            continue
        if before is None:
            changes.append(f"{home} was created")
            continue
        assert after is not None
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        changes.append(f"{home}: {', '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}")
    return changes


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a test (or a child of one) wrote to the user's real
    data directory. Checked once, by the process that owns the session."""
    if not _MADE_HOME or "PYTEST_XDIST_WORKER" in os.environ:
        return
    changes = written_to_real_homes()
    if changes:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (
            "tests wrote to the real stream_hub data directory (every test process must use "
            f"STREAM_HUB_HOME={TEST_HOME.parent}/...; a stream_hub of yours running outside "
            "the tests would also show here): " + "; ".join(changes)
        )
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def private_home() -> Iterator[Path]:
    """This process's data directory; ``STREAM_HUB_HOME`` names it for the whole session."""
    assert os.environ.get(HOME_VARIABLE) == str(TEST_HOME), "a test left STREAM_HUB_HOME changed"
    yield TEST_HOME


REQUIRE_ALL = os.environ.get("STREAM_HUB_REQUIRE_ALL") == "1"
HERE = Path(__file__).resolve().parent
# The groups left out unless asked for: marker -> directory.
OPT_IN = {"stress": HERE / "stress", "integrations": HERE / "integrations"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--torture-seconds", type=float, default=10.0, help="how long the torture test runs (default 10 s)"
    )
    parser.addoption(
        "--stress", action="store_true", help="also run the stress suite (tests/stress/), as CI does"
    )
    parser.addoption(
        "--integrations",
        action="store_true",
        help="also run the bridges against the real frameworks (tests/integrations/), as CI does",
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects: it must see the groups' markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark what is under tests/stress/ and tests/integrations/; leave each
    group out unless asked for."""
    for item in items:
        for marker, directory in OPT_IN.items():
            if directory in item.path.parents:
                item.add_marker(getattr(pytest.mark, marker))
    named = set(re.findall(r"\w+", config.getoption("markexpr") or ""))
    given = [(config.invocation_params.dir / arg.split("::")[0]).resolve() for arg in config.args]
    wanted = {marker for marker in OPT_IN if config.getoption(f"--{marker}")}

    def asked_for(item: pytest.Item) -> bool:
        marks = {mark.name for mark in item.iter_markers()}
        groups = marks & OPT_IN.keys()
        if not groups or groups <= wanted or marks & named:
            return True
        directories = [OPT_IN[group] for group in groups]
        return any(
            (path == directory or directory in path.parents)
            and (path == item.path or path in item.path.parents)
            for path in given
            for directory in directories
        )

    deselected = [item for item in items if not asked_for(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if asked_for(item)]


def need(condition: bool, what: str) -> None:
    """Skip when an optional tool is missing — or fail, in CI (STREAM_HUB_REQUIRE_ALL=1)."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required (STREAM_HUB_REQUIRE_ALL=1) but missing")
    pytest.skip(f"{what} is not available")


def need_executable(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"the {name!r} executable")
    assert path is not None
    return path


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)  # test-side polling, bounded by the deadline
        delay = min(delay * 2, 0.05)


def committed(server: TrainingStreamServer, seq: int) -> None:
    """Wait until ``seq`` is committed to history (visible to new readers)."""
    wait_for(lambda: server.status()["last_seq"] >= seq, what=f"seq {seq} committed")


def fill(server: TrainingStreamServer, n: int, run: str = "r") -> list[int]:
    """Log ``n`` metric events to ``run`` and wait until they are committed."""
    seqs = [server.log({"i": i}, step=i, run=run) for i in range(n)]
    committed(server, seqs[-1])
    return seqs


def free_config(**changes: Any) -> StreamConfig:
    """A config on three free ports that never frees anything it finds busy."""
    values: dict[str, Any] = {"sse_port": 0, "ws_port": 0, "rest_port": 0, "port_conflict": "fail"}
    values.update(changes)
    return StreamConfig(**values)


@pytest.fixture
def config() -> StreamConfig:
    return free_config(heartbeat_interval=1.0)


@pytest.fixture
def server(config: StreamConfig) -> Iterator[TrainingStreamServer]:
    """A started standalone server (not the managed one); stopped afterwards."""
    srv = TrainingStreamServer(config)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_server() -> Iterator[Callable[..., TrainingStreamServer]]:
    """Start standalone servers with some config fields changed; stopped afterwards."""
    servers: list[TrainingStreamServer] = []

    def make(**changes: Any) -> TrainingStreamServer:
        srv = TrainingStreamServer(free_config(**changes))
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def open_stream() -> Iterator[Callable[..., SSEStream]]:
    """``open_stream(server, params=..., headers=...)``: an SSE stream, closed afterwards."""
    streams: list[SSEStream] = []

    def opener(server: TrainingStreamServer, **kwargs: Any) -> SSEStream:
        stream = SSEStream(f"{server.urls['sse']}/events", **kwargs)
        streams.append(stream)
        return stream

    yield opener
    for stream in streams:
        stream.close()


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[TrainingStreamServer]:
    """One server for a whole fuzzing module, with a little history to find."""
    server = TrainingStreamServer(
        free_config(heartbeat_interval=1.0, max_message_size=4096, max_body_size=64 * 1024)
    )
    server.start()
    for step in range(20):
        server.log({"loss": 1 / (step + 1), "acc": step / 20}, step=step, run="exp1")
    server.publish("note", {"text": "hello"}, run="exp1")
    wait_for(lambda: server.hub.head >= 22, what="history committed")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True, scope="session")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The hub registry of this test run: a directory of its own (the user's
    real one, and other runs on this machine, are never touched). Children
    inherit it through XDG_RUNTIME_DIR."""
    directory = tmp_path_factory.mktemp("runtime")
    directory.chmod(0o700)
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(directory)
    yield
    if old is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = old


#: A throwaway second user (no home, no shell): files chowned to it are another user's.
OTHER_USER = "sh_test_other"


@pytest.fixture(scope="session")
def other_uid() -> int:
    """The uid of :data:`OTHER_USER`, created if absent (needs root, as the
    tests run here and in CI): a file or directory chowned to it is really
    another user's."""
    import pwd

    need(hasattr(os, "geteuid") and os.geteuid() == 0, "root (to make files of another user)")
    try:
        return pwd.getpwnam(OTHER_USER).pw_uid
    except KeyError:
        pass
    useradd = need_executable("useradd")
    # Another test run may add it at the same moment: whichever wins, it exists after.
    subprocess.run(
        [useradd, "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
        capture_output=True,
        check=False,
    )
    return pwd.getpwnam(OTHER_USER).pw_uid


@pytest.fixture(autouse=True)
def clean_manager() -> Iterator[None]:
    """Every test starts and ends with no managed server and a zero count."""
    manager = get_stream_server_manager()
    manager.cleanup()
    yield
    manager.cleanup()


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    """Start child processes (``spawn.start``, ``.serve``, ``.holder``); all ended afterwards."""
    with Spawner() as spawned:
        yield spawned


@pytest.fixture(scope="module")
def module_spawn() -> Iterator[Spawner]:
    with Spawner() as spawned:
        yield spawned


@pytest.fixture(scope="module")
def hub(module_spawn: Spawner) -> Served:
    """One ``stream-hub serve --token s3cret-s3cret-s3cret`` per module, shared by read-mostly tests."""
    return module_spawn.serve("--token", "s3cret-s3cret-s3cret")


@pytest.fixture
def held(spawn: Spawner) -> tuple[subprocess.Popen[str], int]:
    """A ``python -m http.server`` holding a free port."""
    port = free_port()
    return spawn.holder(port), port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` of this test's own (free port, no persistence),
    stopped afterwards; needs the Debian package and the ``redis`` package."""
    executable = need_executable("redis-server")
    need(importlib.util.find_spec("redis") is not None, "the redis package (pip install 'stream_hub[redis]')")
    server = RedisServer(executable, tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
