"""The guards that decide whether a process may be signalled, and the killing.

Part of :mod:`stream_hub.ports`, which re-exports the public names. Whatever
the port-conflict policy, nothing here signals this process, one of its
ancestors, PID 0/1, or another user's process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import psutil

from ..errors import KillRefusedError
from .probe import connections

__all__ = ["kill_process", "kill_refusal_reason", "listens_on", "refusal", "terminate"]

# Records keep the public module's name (see probe.py).
logger = logging.getLogger("stream_hub.ports")


# -- guards --------------------------------------------------------------------


def kill_refusal_reason(pid: int) -> str | None:
    """Why stream_hub must not signal ``pid``, or ``None`` if it may.

    Refused: this process, PID 0/1, any ancestor of this process, and processes
    of another user (or that this user may not inspect). A PID that does not
    exist is not refused (there is nothing to kill).
    """
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    except (psutil.Error, ValueError) as exc:
        return f"pid {pid} cannot be inspected ({exc})"
    return refusal(proc)


def refusal(proc: psutil.Process) -> str | None:
    """:func:`kill_refusal_reason` for a process already looked up."""
    pid = proc.pid
    if pid == os.getpid():
        return (
            f"it is this very process (pid {pid}): a socket opened here, for example a "
            "stream_hub server that is still running; close it or stop that server first"
        )
    if pid <= 1:
        return f"pid {pid} is the system's init process"
    try:
        ancestors = {parent.pid for parent in psutil.Process().parents()}
    except psutil.Error:
        ancestors = {os.getppid()}
    if pid in ancestors or pid == os.getppid():
        return f"pid {pid} is an ancestor of this process (pid {os.getpid()})"
    return _other_owner(proc)


def _other_owner(proc: psutil.Process) -> str | None:
    try:
        if hasattr(os, "getuid"):
            me = os.getuid()
            uids = proc.uids()
            if uids.real != me or uids.effective != me:
                return f"pid {proc.pid} belongs to another user (uid {uids.real})"
        elif proc.username() != psutil.Process().username():
            return f"pid {proc.pid} belongs to another user ({proc.username()})"
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return f"pid {proc.pid} cannot be inspected by this user (another user's process?)"
    return None


def listens_on(proc: psutil.Process, port: int) -> bool:
    """Whether ``proc`` has a TCP socket listening on ``port`` (False if unknown)."""
    try:
        return any(
            conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
            for conn in connections(proc)
        )
    except psutil.Error:
        return False


# -- killing -------------------------------------------------------------------


def kill_process(pid: int, timeout: float = 5.0) -> bool:
    """End process ``pid``: SIGTERM, wait up to ``timeout`` s, then SIGKILL and wait again.

    Waits with psutil (no fixed sleeps). On Windows both signals are
    ``TerminateProcess``. Returns whether the process has ended
    (a PID that does not exist has). Returns ``False`` if it survived both
    signals or this user may not signal it.

    Raises:
        KillRefusedError: ``pid`` is this process, PID 0/1, an ancestor of this
            process or another user's process (see :func:`kill_refusal_reason`).
    """
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error as exc:
        raise KillRefusedError(pid, f"it cannot be inspected ({exc})") from exc
    reason = refusal(proc)
    if reason is not None:
        raise KillRefusedError(pid, reason)
    return terminate(proc, timeout)


def terminate(proc: psutil.Process, timeout: float, label: str = "") -> bool:
    """SIGTERM, then SIGKILL, each waited for up to ``timeout`` s; whether ``proc`` ended.

    Checks no guard: callers do (:func:`refusal`). ``label`` prefixes the logs.
    """
    pid = proc.pid
    prefix = f"{label}: " if label else ""
    logger.warning("%ssending SIGTERM to pid %d", prefix, pid)
    sent = _signal(proc, proc.terminate)
    if sent is not None:
        return sent
    if _wait_gone(proc, timeout):
        logger.info("%spid %d exited after SIGTERM", prefix, pid)
        return True
    logger.warning("%spid %d still running %.1f s after SIGTERM; sending SIGKILL", prefix, pid, timeout)
    sent = _signal(proc, proc.kill)
    if sent is not None:
        return sent
    if _wait_gone(proc, timeout):
        logger.warning("%skilled pid %d with SIGKILL", prefix, pid)
        return True
    logger.error("pid %d survived SIGKILL for %.1f s", pid, timeout)
    return False


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Whether ``proc`` ended within ``timeout`` s (an unreaped zombie has ended)."""
    deadline = time.monotonic() + timeout
    step = 0.005
    while True:
        remaining = deadline - time.monotonic()
        try:
            proc.wait(timeout=max(0.0, min(step, remaining)))
            return True
        except psutil.NoSuchProcess:
            return True
        except psutil.TimeoutExpired:
            pass
        # A dead process that is not our child stays a zombie until its parent
        # reaps it, which a busy parent may not do for a long time; its sockets
        # are closed once its last thread has gone (the main thread shows as a
        # zombie while the others are still exiting, descriptors open).
        # Checked between short waits, not at the end.
        try:
            if proc.status() == psutil.STATUS_ZOMBIE and proc.num_threads() <= 1:
                return True
        except psutil.Error:
            return True
        if remaining <= 0:
            return False
        step = min(step * 2, 0.1)


def _signal(proc: psutil.Process, send: Callable[[], None]) -> bool | None:
    """Send a signal; None when sent, else whether the process is gone."""
    try:
        send()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error as exc:
        logger.error("cannot signal pid %d: %s", proc.pid, exc)
        return False
    return None
