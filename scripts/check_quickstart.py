"""Check the README's quick start, command 1, the way a fresh machine runs it.

    python scripts/check_quickstart.py [--keep]

1. a new virtual environment (``python -m venv``) and ``pip install .`` into
   it, without extras: only the runtime dependencies;
2. ``stream-hub --version`` from that environment prints the version that
   the installed metadata carries;
3. ``stream-hub demo --json`` on ports chosen by the kernel, until
   ``GET /health`` answers (with a deadline), the dashboard page is served and
   the demo has published events; then SIGINT must stop it with exit code 0
   and its ports free; a second run does the same with SIGTERM.

The interpreter that runs this file only creates the environment. Steps 2-3
run inside it (``--inside``), with its python and the standard library's
urllib, with no PYTHONPATH and from outside the source tree, so nothing of
the outer environment (httpx, an editable install) can hide a dependency
that `pip install .` does not bring. POSIX only (it stops the demo with
signals). Exit code 0 when every step passed; run by .ci/run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0  # first start in a new environment compiles every module
HEALTH_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class CheckFailed(Exception):
    pass


# -- outside: the fresh environment ------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """This environment without what could let the venv see other packages or
    change the demo's settings."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "ENVIRONMENT")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("STREAM_HUB_")}


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    print(f"== {what}: {' '.join(cmd)}", flush=True)
    result = subprocess.run(cmd, env=_clean_env(), cwd=cwd, check=False)
    if result.returncode != 0:
        raise CheckFailed(f"{what} failed with exit code {result.returncode}")


def check_in_fresh_venv(keep: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="stream-hub-quickstart-"))
    try:
        venv = root / "venv"
        _run([sys.executable, "-m", "venv", str(venv)], "create a virtual environment")
        python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        _run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)],
            "pip install . (runtime dependencies only)",
        )
        _run([str(python), str(Path(__file__).resolve()), "--inside"], "the quick start", cwd=root)
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# -- inside: the demo, from the fresh environment ------------------------------------------


def _console_script() -> str:
    path = Path(sys.executable).parent / ("stream-hub.exe" if os.name == "nt" else "stream-hub")
    if not path.exists():
        raise CheckFailed(f"pip install did not create the console script {path}")
    return str(path)


def check_version(exe: str) -> None:
    from importlib.metadata import version

    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, check=False)
    expected = f"stream-hub {version('stream_hub')}"
    if out.returncode != 0 or out.stdout.strip() != expected:
        got = f"{out.stdout!r} (exit {out.returncode}; stderr ends {out.stderr[-400:]!r})"
        raise CheckFailed(f"stream-hub --version printed {got}; expected {expected!r}")
    print(f"   {expected}", flush=True)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def _until(deadline: float, probe: Callable[[], object], what: str) -> None:
    """Call ``probe`` until it returns something true; CheckFailed at the deadline."""
    delay = 0.05
    while not probe():
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out waiting for {what}")
        time.sleep(delay)  # polling a subprocess, bounded by the deadline
        delay = min(delay * 2, 0.5)


def _port_is_free(port: int) -> bool:
    from stream_hub.ports import is_port_in_use  # the installed copy

    return not is_port_in_use(port, "127.0.0.1")


def _collect(stream: IO[str] | None, into: list[str]) -> threading.Thread:
    """A thread appending each line of ``stream`` to ``into`` as it arrives."""

    def pump() -> None:
        for line in stream or ():
            into.append(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def check_demo(exe: str, stop_signal: signal.Signals) -> None:
    cmd = [exe, "demo", "--sse-port", "0", "--ws-port", "0", "--rest-port", "0", "--json"]
    print(f"   {' '.join(cmd[1:])}, then {stop_signal.name}", flush=True)
    env = {**os.environ, "STREAM_HUB_PORT_CONFLICT": "fail"}  # this check never frees anything
    demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    stderr_lines: list[str] = []
    readers = [_collect(demo.stdout, lines), _collect(demo.stderr, stderr_lines)]
    try:
        start = time.monotonic()
        _until(start + READY_TIMEOUT, lambda: lines or demo.poll() is not None, "the ready line")
        if not lines:
            raise CheckFailed(f"stream-hub demo exited with {demo.returncode} before printing its ports")
        ports = {name: int(port) for name, port in json.loads(lines[0])["ports"].items()}
        rest = f"http://127.0.0.1:{ports['rest']}"
        _until(time.monotonic() + HEALTH_TIMEOUT, lambda: _get(rest + "/health")[0] == 200, "GET /health")
        status, page = _get(rest + "/")
        if status != 200 or b"<html" not in page.lower():
            raise CheckFailed(f"the dashboard at {rest}/ answered {status}")

        def published() -> bool:
            status, body = _get(rest + "/api/status")
            return status == 200 and json.loads(body)["events"]["published"] > 0

        _until(time.monotonic() + HEALTH_TIMEOUT, published, "the demo's first events")
        print(f"   serving on {ports} after {time.monotonic() - start:.1f} s", flush=True)

        demo.send_signal(stop_signal)
        code = demo.wait(timeout=STOP_TIMEOUT)
        if code != 0:
            raise CheckFailed(f"stream-hub demo exited with {code} after {stop_signal.name}")
        busy = [port for port in ports.values() if not _port_is_free(port)]
        if busy:
            raise CheckFailed(f"ports {busy} still in use after stream-hub demo exited")
    except BaseException:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=STOP_TIMEOUT)
        for reader in readers:
            reader.join(5)
        sys.stderr.write("stream-hub demo stderr:\n" + "".join(stderr_lines))
        raise
    for reader in readers:
        reader.join(5)


def check_runs_kept(exe: str) -> None:
    """After the demo: its runs are persisted (contract v3) and ``stream-hub
    runs`` lists them with no hub running."""
    out = subprocess.run([exe, "runs", "--json"], capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise CheckFailed(f"stream-hub runs exited with {out.returncode}: {out.stderr[-400:]}")
    runs = json.loads(out.stdout)
    demo_runs = [r for r in runs if r["run"].startswith("exp") and r["events"] > 0]  # exp1, exp2, ...
    if not demo_runs:
        raise CheckFailed(f"stream-hub runs lists no demo run after the demo: {out.stdout[:400]}")
    print(f"   stream-hub runs: {len(demo_runs)} demo runs kept", flush=True)


def check_inside() -> None:
    import stream_hub

    where = Path(stream_hub.__file__).resolve()
    if Path(sys.prefix).resolve() not in where.parents:
        raise CheckFailed(f"stream_hub was imported from {where}, not from the new environment")
    exe = _console_script()
    check_version(exe)
    # Hubs persist by default: this check keeps to a data directory of its own.
    with tempfile.TemporaryDirectory() as home:
        os.environ["STREAM_HUB_HOME"] = home
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            check_demo(exe, stop_signal)
        check_runs_kept(exe)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the virtual environment (path printed)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        if args.inside:
            check_inside()
        else:
            check_in_fresh_venv(args.keep)
            print("quick start: ok", flush=True)
    except CheckFailed as exc:
        print(f"quick start check failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
