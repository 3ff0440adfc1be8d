"""``import stream_hub`` costs nothing a process did not ask for (STYLE.md,
habit 18): training scripts, DataLoader workers and spawned children all run
the README's import line, most of them never build a server. No web
framework, SQLite, Prometheus or asyncio; no excepthook, atexit or fork hook.
Each check runs in a fresh interpreter."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stream_hub.runtime import hooks

REPO = Path(__file__).resolve().parents[2]

# What the first server brings, and what an import must therefore leave out.
HEAVY = (
    "starlette",
    "fastapi",
    "uvicorn",
    "websockets",
    "sqlite3",
    "prometheus_client",
    "pydantic",
    "anyio",
    "asyncio",
    "psutil",
    "httpx",
    "orjson",
)


def readme_import_lines() -> list[str]:
    """Every ``from stream_hub import ...`` line the README shows users."""
    text = (REPO / "README.md").read_text()
    lines = sorted(set(re.findall(r"^from stream_hub import [^\n]+$", text, flags=re.MULTILINE)))
    assert lines, "README.md shows no `from stream_hub import` line any more"
    return lines


def run_probe(code: str, *args: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one Python literal."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    value = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


# Spies on the only two ways to register a hook from Python, installed before
# stream_hub is imported; atexit's own count catches a registration that went
# around the spy. logging (which registers hooks of its own) is imported first:
# everyone has it already.
PROBE = """
    import atexit, logging, os, signal, sys
    fork_hooks, exit_hooks = [], []
    real_register_at_fork, real_atexit_register = os.register_at_fork, atexit.register

    def name(fn):
        return f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', fn)}"

    def spy_register_at_fork(**kwargs):
        fork_hooks.extend(name(fn) for fn in kwargs.values())
        return real_register_at_fork(**kwargs)

    def spy_atexit_register(fn, *args, **kwargs):
        exit_hooks.append(name(fn))
        return real_atexit_register(fn, *args, **kwargs)

    os.register_at_fork, atexit.register = spy_register_at_fork, spy_atexit_register
    callbacks = atexit._ncallbacks()
    before = set(sys.modules)
    exec(sys.argv[1])
    loaded = set(sys.modules) - before
    from stream_hub.runtime import hooks
    print(repr({
        "heavy": sorted(m for m in loaded if m.split(".")[0] in sys.argv[2].split(",")),
        "ours": sorted(m for m in loaded if m.split(".")[0] == "stream_hub"),
        "fork_hooks": fork_hooks,
        "exit_hooks": exit_hooks,
        "unspied_exit_hooks": atexit._ncallbacks() - callbacks - len(exit_hooks),
        "excepthook_replaced": sys.excepthook is not sys.__excepthook__,
        "sigterm_handled": signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL,
        "installed": sorted(hooks.installed()),
    }))
"""


@pytest.mark.parametrize("line", readme_import_lines())
def test_the_readme_import_line_loads_nothing_heavy(line: str) -> None:
    seen = run_probe(PROBE, line, ",".join(HEAVY))
    assert seen["heavy"] == [], f"{line!r} loaded {seen['heavy']}; they belong to the first server"
    # The public face only: no server, transports, store or processes modules.
    assert not [m for m in seen["ours"] if re.match(r"stream_hub\.(server|transports|store|processes)", m)], (
        seen
    )


@pytest.mark.parametrize("line", [*readme_import_lines(), "import stream_hub; dir(stream_hub)"])
def test_the_readme_import_line_installs_no_hook(line: str) -> None:
    seen = run_probe(PROBE, line, ",".join(HEAVY))
    assert not seen["excepthook_replaced"], f"{line!r} replaced sys.excepthook"
    assert not seen["sigterm_handled"], f"{line!r} set a SIGTERM handler"
    assert seen["exit_hooks"] == [] and seen["unspied_exit_hooks"] == 0, f"{line!r} registered atexit hooks"
    assert seen["fork_hooks"] == [], f"{line!r} registered fork hooks: {seen['fork_hooks']}"
    assert seen["installed"] == [], f"{line!r} installed {seen['installed']}"


def test_the_probe_sees_the_hooks_a_server_installs() -> None:
    """The spies are not blind: asking the manager for a server (a stand-in
    for the server, so nothing binds) installs every hook."""
    statement = """
import stream_hub.server

class StandIn:
    running, loop_thread_alive = True, False

    def __init__(self, config, training_system):
        self.config, self.training_system = config, training_system

    def finish_local_runs(self, status, forget=False):
        pass

    def check_not_in_loop(self, what):
        pass

    def stop(self):
        self.running = False

stream_hub.server.TrainingStreamServer = StandIn
from stream_hub import get_stream_server
get_stream_server()
"""
    seen = run_probe(PROBE, statement, ",".join(HEAVY))
    assert seen["excepthook_replaced"]
    assert seen["sigterm_handled"]  # the end on SIGTERM (runtime/signals.py)
    assert seen["exit_hooks"] == ["stream_hub.manager._cleanup_at_exit"], seen
    assert "stream_hub.runtime.hooks._run_child_hooks" in seen["fork_hooks"], seen  # type: ignore[operator]
    assert {"fork", "fork:manager", "manager.exit", "manager.sigterm"} <= set(seen["installed"]), seen  # type: ignore[arg-type]


def test_the_lazy_names_resolve_and_are_listed() -> None:
    code = """
        import sys, stream_hub
        names = set(dir(stream_hub))
        light = "stream_hub.server" not in sys.modules
        cls = stream_hub.TrainingStreamServer
        from stream_hub.server import TrainingStreamServer
        try:
            stream_hub.no_such_name
            missing = "no error"
        except AttributeError as exc:
            missing = str(exc)
        print(repr({"light": light, "same": cls is TrainingStreamServer, "missing": missing,
                    "all_listed": set(stream_hub.__all__) <= names, "version": stream_hub.__version__}))
    """
    seen = run_probe(code)
    assert seen["light"] and seen["same"] and seen["all_listed"], seen
    assert seen["missing"] == "module 'stream_hub' has no attribute 'no_such_name'"
    assert (
        seen["version"]
        == run_probe("from stream_hub._version import __version__ as v; print(repr({'v': v}))")["v"]
    )


def test_importing_stream_hub_leaves_the_web_frameworks_to_the_first_server() -> None:
    """``import stream_hub`` (every training process, every CLI command) does
    not load FastAPI, uvicorn or websockets (~0.4 s): building a server does."""
    heavy = ("fastapi", "uvicorn", "websockets", "pydantic")
    code = (
        "import sys, stream_hub\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
        "stream_hub.TrainingStreamServer(stream_hub.StreamConfig(sse_port=0, ws_port=0, rest_port=0))\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out[0] == "[]", out
    assert {"fastapi", "websockets"} <= set(ast.literal_eval(out[1])), out  # uvicorn: on start


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_runs_the_hooks_in_their_order_whatever_the_order_they_came_in() -> None:
    """The store lets go of its SQLite connections and lock before a server
    drops its references to it, the manager resets last; a hook that raises
    does not keep the others from running."""
    code = """
        import os
        from stream_hub.runtime import hooks
        read, write = os.pipe()

        def failing():
            raise RuntimeError("a hook that fails")

        for key in reversed(hooks.CHILD_ORDER[1:]):
            hooks.after_fork_in_child(key, lambda key=key: os.write(write, key.encode() + b" "))
        hooks.after_fork_in_child(hooks.CHILD_ORDER[0], failing)
        again = hooks.after_fork_in_child("store", lambda: os.write(write, b"again "))
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        os.close(write)
        print(repr({"ran": os.read(read, 4096).decode().split(), "again": again}))
    """
    seen = run_probe(code)
    assert seen["ran"] == list(hooks.CHILD_ORDER[1:]), seen
    assert seen["again"] is False  # a key's first hook is kept


def test_install_once_installs_once() -> None:
    calls: list[str] = []
    key = "test_import_cost.install_once"
    assert hooks.install_once(key, lambda: calls.append("first"))
    assert not hooks.install_once(key, lambda: calls.append("second"))
    assert calls == ["first"] and key in hooks.installed()
    with pytest.raises(ValueError, match="unknown fork hook"):
        hooks.after_fork_in_child("no such hook", lambda: None)
