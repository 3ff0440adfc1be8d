"""The orchestrator: starts every process of the soak, runs it for its
minutes, stops everything in order and hands the reports to the analysis."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .analysis import Analysis
from .common import ROOT, MiB, Params, raise_fd_limit
from .hostile import idle_probes

# Every child is this soak's command again, in one of its roles (--role).
SCRIPT = ROOT / "scripts" / "soak.py"

logger = logging.getLogger(__name__)


class SoakError(Exception):
    """The soak could not run to the end (a process died or did not answer)."""


class Child:
    """A child process of the soak: JSON lines in on stdin, out on stdout, its log in a file."""

    def __init__(self, name: str, role: str, p: Params, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[str] = open(self.log_path, "w")  # closed in finish()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--role",
                role,
                "--params",
                json.dumps(dataclasses.asdict(p)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, name=f"soak-{name}", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def expect(
        self, kind: str, timeout: float, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SoakError(
                    f"{self.name}: no {kind!r} message within {timeout:g} s (log: {self.log_path})"
                )
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise SoakError(
                    f"{self.name} exited with code {self.proc.wait()} before sending {kind!r} "
                    f"(log: {self.log_path})"
                )
            message: dict[str, Any] = json.loads(line)
            if message.get("type") == kind:
                return message
            if message.get("type") == "progress" and on_progress is not None:
                on_progress(message)

    def drain(self, on_progress: Callable[[dict[str, Any]], None]) -> None:
        """Handle the progress lines that came in; raise if the child died."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                raise SoakError(
                    f"{self.name} exited early with code {self.proc.wait()} (log: {self.log_path})"
                )
            message = json.loads(line)
            if message.get("type") == "progress":
                on_progress(message)

    def finish(self, timeout: float = 30.0) -> int | None:
        """Close stdin, wait for the exit; kill (this child, by its pid) if it hangs."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not exit within %g s; killing pid %d", self.name, timeout, self.proc.pid)
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._log.close()
        return code


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a child so far (0 if it is gone)."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def progress_line(t_go: float) -> Callable[[dict[str, Any]], None]:
    def show(message: dict[str, Any]) -> None:
        clients = message["clients"]
        print(
            f"  [{message['t'] - t_go:6.0f} s] seq {message['last_seq']:>9,}  "
            f"RSS {message['rss'] / MiB:6.1f} MiB  "
            f"clients sse {clients['sse']} ws {clients['ws']}  evicted {clients['evicted']:,}  "
            f"restarts {message['restarts']}",
            file=sys.stderr,
            flush=True,
        )

    return show


def idle_figures(p: Params, hub: Child) -> dict[str, Any]:
    """The hub before the load, for the loaded figures to be read against:
    ``/health`` probed for ``idle_seconds``, then ``idle_restarts`` restarts."""
    loadavg = os.getloadavg()
    print(
        f"soak: the hub idle: /health for {p.idle_seconds:g} s, {p.idle_restarts} restarts "
        f"(load average {loadavg[0]:.2f})",
        file=sys.stderr,
        flush=True,
    )
    probed = asyncio.run(idle_probes(p.ports["rest"], p.idle_seconds))
    hub.send({"cmd": "idle_restarts", "n": p.idle_restarts})
    restarts = hub.expect("idle_restarts", 60 + 10 * p.idle_restarts)["ms"]
    return {**probed, "restarts": restarts, "loadavg": loadavg}


def orchestrate(p: Params, log_dir: Path) -> int:
    raise_fd_limit()
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"soak: {p.minutes:g} min; logs in {log_dir}", file=sys.stderr, flush=True)
    children: list[Child] = []
    try:
        hub = Child("hub", "hub", p, log_dir)
        children.append(hub)
        ready = hub.expect("ready", 60)
        p.ports = ready["ports"]
        idle = idle_figures(p, hub)
        stalled = Child("stalled", "stalled", p, log_dir)
        children.append(stalled)
        healthy = []
        for index in range(p.healthy_procs):
            healthy.append(Child(f"healthy{index}", "healthy", dataclasses.replace(p, index=index), log_dir))
        children += healthy
        for child in [stalled, *healthy]:
            child.expect("ready", 180)
        hub.send({"cmd": "go"})
        go = hub.expect("go", 30)
        show = progress_line(go["t"])
        hostile = Child("hostile", "hostile", p, log_dir)
        children.append(hostile)
        hostile.expect("ready", 60)
        print(f"soak: running; hub pid {ready['pid']}, ports {p.ports}", file=sys.stderr, flush=True)
        end = go["t"] + p.minutes * 60
        while time.monotonic() < end:
            for child in children:
                child.drain(show)
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))  # pacing the run's duration
        cpu = {child.name: cpu_seconds(child.proc.pid) for child in children}
        print("soak: stopping the load", file=sys.stderr, flush=True)
        hostile.send({"cmd": "stop"})
        hostile_report = hostile.expect("report", 90)
        hub.send({"cmd": "stop_load"})
        head = hub.expect("head", 120, show)
        for child in healthy:
            child.send({"cmd": "finish", "final_head": head["head"]})
        healthy_reports = [child.expect("report", 120) for child in healthy]
        stalled.send({"cmd": "stop"})
        stalled_report = stalled.expect("report", 60)
        hub.send({"cmd": "exit"})
        final = hub.expect("final", 60)
        codes = {child.name: child.finish() for child in children}
    except SoakError as exc:
        print(f"soak: FAILED to run: {exc}", file=sys.stderr)
        for child in children:
            child.finish(timeout=5)
        return 2
    except BaseException:
        for child in children:
            child.finish(timeout=5)
        raise
    reports = {
        "params": dataclasses.asdict(p),
        "loadavg": {"idle": idle["loadavg"], "end": os.getloadavg()},
        "idle": idle,
        "ready": ready,
        "head": head,
        "final": final,
        "healthy": healthy_reports,
        "stalled": stalled_report,
        "hostile": hostile_report,
        "codes": codes,
        "cpu": cpu,
    }
    (log_dir / "reports.json").write_text(json.dumps(reports))
    return analyze(reports, log_dir)


def analyze(reports: dict[str, Any], log_dir: Path) -> int:
    """Check a run's reports and print the table; the exit code (0: every check passed)."""
    p = Params(**reports["params"])
    result = Analysis(
        p,
        reports.get("idle"),
        reports["ready"],
        reports["head"],
        reports["final"],
        reports["healthy"],
        reports["stalled"],
        reports["hostile"],
        reports["codes"],
        log_dir,
    )
    result.cpu = reports["cpu"]
    result.loadavg = reports.get("loadavg")
    return result.report()
