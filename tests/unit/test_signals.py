"""SIGTERM in a process with a server (stream_hub.runtime.signals): the end
runs first, then what SIGTERM did before — the default action (the process
dies by the signal) or the user's own handler, untouched; an end that needs a
lock the interrupted main thread holds does not deadlock; a forked child does
as before. Each case in a fresh interpreter (a handler is process-wide)."""

from __future__ import annotations

import signal
import sys

import pytest

from ..processes import run_python

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PRELUDE = """
import os, signal, sys, threading
from stream_hub.runtime.signals import end_on_sigterm

def say(what):
    print(what, flush=True)

def wait_for_the_end():
    while True:
        signal.pause()
"""


def _lines(out: str) -> list[str]:
    return out.split()


def test_the_end_runs_then_the_process_dies_by_the_signal() -> None:
    result = run_python(
        PRELUDE
        + """
say(end_on_sigterm(lambda: say("end"), ending=lambda: say("ending"), within=lambda: 30.0))
os.kill(os.getpid(), signal.SIGTERM)
wait_for_the_end()
"""
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert _lines(result.stdout) == ["True", "ending", "end"]


def test_a_handler_of_the_users_runs_instead_and_decides() -> None:
    result = run_python(
        PRELUDE
        + """
def users(signum, frame):
    say("user's handler")
    raise SystemExit(3)

signal.signal(signal.SIGTERM, users)
end_on_sigterm(lambda: say("end"), ending=lambda: say("ending"), within=lambda: 30.0)
os.kill(os.getpid(), signal.SIGTERM)
wait_for_the_end()
"""
    )
    # It ended the process by raising: that is noted; the end is left to the exit.
    assert result.returncode == 3, result.stderr
    assert _lines(result.stdout) == ["user's", "handler", "ending"]


def test_an_end_that_needs_a_lock_the_interrupted_main_thread_holds_does_not_deadlock() -> None:
    # The main thread is in the intake's inline commit (stream_hub code, the
    # commit lock held) when SIGTERM comes; the end commits too. Waiting for it
    # there would deadlock until ``within``; the main thread goes on instead.
    result = run_python(
        PRELUDE
        + """
import time
from stream_hub.core.intake import Intake

def sink(batch, count):
    if batch[3] == "first":
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here, in the sink
        say("sink")

intake = Intake(sink)
end_on_sigterm(lambda: say(f"end {intake.commit()}"), ending=lambda: None, within=lambda: 30.0)
started = time.monotonic()
intake.log({"x": 1.0}, run="first")  # commits inline: the sink runs in this thread
intake.log({"x": 2.0}, run="second")
wait_for_the_end()
"""
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert _lines(result.stdout)[:1] == ["sink"], result.stdout
    assert "end" in _lines(result.stdout), result.stdout


def test_a_forked_child_does_as_before() -> None:
    result = run_python(
        PRELUDE
        + """
end_on_sigterm(lambda: say(f"end in {os.getpid()}"), ending=lambda: None, within=lambda: 30.0)
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGTERM)
    wait_for_the_end()
_, status = os.waitpid(pid, 0)
say(os.WIFSIGNALED(status) and os.WTERMSIG(status))
"""
    )
    assert result.returncode == 0, result.stderr
    assert _lines(result.stdout) == [str(int(signal.SIGTERM))]


def test_installed_from_the_main_thread_only_and_never_over_an_ignored_sigterm() -> None:
    result = run_python(
        PRELUDE
        + """
args = dict(end=lambda: None, ending=lambda: None, within=lambda: 1.0)
results = []
thread = threading.Thread(target=lambda: results.append(end_on_sigterm(**args)))
thread.start(); thread.join()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
say(f"{results[0]} {end_on_sigterm(**args)} {signal.getsignal(signal.SIGTERM) == signal.SIG_IGN}")
"""
    )
    assert result.returncode == 0, result.stderr
    assert _lines(result.stdout) == ["False", "False", "True"]
