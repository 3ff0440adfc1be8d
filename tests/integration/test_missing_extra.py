"""Fail fast (contract v3): a configured backend whose client package is
missing refuses to start, naming the extra to install — ``stream-hub serve
--backend redis://…`` exits 2, ``get_stream_server`` raises
``StreamHubError`` while the server is built, before anything starts.

Each test runs a real interpreter in which ``import redis`` fails: a
``redis.py`` that raises ``ImportError`` comes first on its ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from ..processes import CLI, PYTHON, ZERO_PORTS, child_env, run

EXTRA = "pip install 'stream_hub[redis]'"
# Nothing listens there: the refusal must come before any connection is tried.
URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def without_redis(tmp_path: Path) -> dict[str, str]:
    """The environment of a child in which ``import redis`` fails."""
    blocked = tmp_path / "without_redis"
    blocked.mkdir()
    (blocked / "redis.py").write_text('raise ImportError("no redis here (the test blocks it)")\n')
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(blocked), env["PYTHONPATH"]])
    check = run(["-c", "import redis"], prefix=PYTHON, env=env)
    assert check.returncode == 1 and "no redis here" in check.stderr, check.stderr
    return env


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_with_a_backend_and_no_redis_package_exits_2_naming_the_extra(
    without_redis: dict[str, str], how: str
) -> None:
    env = dict(without_redis)
    args = ["serve", *ZERO_PORTS, "--json"]
    if how == "flag":
        args += ["--backend", URL]
    else:
        env["STREAM_HUB_BACKEND"] = URL
    result = run(args, env=env, prefix=CLI, timeout=20)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no ready line: it never served
    assert result.stderr.startswith("stream-hub serve: ") and result.stderr.count("\n") == 1, result.stderr
    assert EXTRA in result.stderr and "redis" in result.stderr


def test_get_stream_server_with_a_backend_and_no_redis_package_raises_before_starting(
    without_redis: dict[str, str],
) -> None:
    code = textwrap.dedent(
        f"""
        import threading
        from stream_hub import StreamConfig, StreamHubError, get_stream_server, get_stream_server_manager

        try:
            get_stream_server(config=StreamConfig(backend={URL!r}))
        except StreamHubError as exc:
            print("refused:", type(exc).__name__, exc)
        else:
            print("started")
        manager = get_stream_server_manager()
        print("running:", manager.is_server_running(), "threads:", threading.active_count())
        """
    )
    result = run(["-c", code], prefix=PYTHON, env=without_redis, timeout=30)
    assert result.returncode == 0, result.stderr
    refused, state = result.stdout.splitlines()
    assert refused.startswith("refused: MissingExtraError ") and EXTRA in refused, result.stdout
    # Refused while the server was built: no loop, no publisher, no port.
    assert state == "running: False threads: 1", result.stdout + result.stderr
