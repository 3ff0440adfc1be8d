"""What a forked child does with the sockets of its parent's server, and
how it gets its last events out before it ends.

``os.fork()`` (multiprocessing's ``fork`` start method, DataLoader workers)
copies every descriptor: the child would hold the server's three listening
sockets and every client connection. While it lives, the parent cannot
verify its ports free after a stop, a client never sees the end of its
stream, and a port-conflict policy could end the child as the port's holder.
So right after fork the child lets go of every TCP socket whose local port is
one of the server's ports — listeners and accepted connections alike — and
of the Unix sockets of its channel for joined processes (whose connections
would otherwise never see the hub go away), and nothing else (the training
job's own sockets, e.g. a process group's, stay).

Letting go means pointing the descriptor at ``/dev/null`` (``dup2``), not
closing it: the Python objects that still hold the number (the parent's
loop, transports and sockets, copied into the child) may close it later,
and a closed number could by then belong to a file the child opened.

A forked child often ends without Python's normal exit, so the stop that
would send its last events never runs: a multiprocessing child ends with
``os._exit`` once its run returns (after multiprocessing's own finalizers),
and a pool's workers are ended with SIGTERM the moment the pool closes.
:func:`on_multiprocessing_exit` and :func:`chain_sigterm` give the child's
flush a turn in both cases.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any

from .signals import replaced_handler

__all__ = [
    "chain_sigterm",
    "close_inherited_sockets",
    "in_each_multiprocessing_child",
    "on_multiprocessing_exit",
]

#: Before multiprocessing's own finalizers of priority 0 (its queues' feeder threads).
EXIT_PRIORITY = 10

logger = logging.getLogger(__name__)

_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def _open_descriptors() -> list[int]:
    for directory in _FD_DIRS:
        try:
            return [int(name) for name in os.listdir(directory) if name.isdigit()]
        except OSError:
            continue
    return []


def _local_address(fd: int) -> int | str | None:
    """The local TCP port or Unix socket path of descriptor ``fd`` (None: neither)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None  # not a socket (or already gone)
    try:
        if sock.type != socket.SOCK_STREAM:
            return None
        address = sock.getsockname()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(address[1])
        if sock.family == getattr(socket, "AF_UNIX", None) and isinstance(address, str) and address:
            return address
        return None
    except OSError:
        return None
    finally:
        sock.detach()  # the descriptor is not ours to close here


def close_inherited_sockets(ports: Collection[int], unix_paths: Collection[str] = ()) -> int:
    """In a forked child: let go of every TCP socket on one of ``ports`` and
    every Unix socket bound to one of ``unix_paths`` (the hub's channel: its
    listener and the joiners' connections).

    Returns how many descriptors were released. Never raises.
    """
    wanted: set[int | str] = {port for port in ports if port}
    wanted.update(path for path in unix_paths if path)
    if not wanted:
        return 0
    released = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return 0
    try:
        for fd in _open_descriptors():
            if fd == null or _local_address(fd) not in wanted:
                continue
            try:
                os.dup2(null, fd)
                released += 1
            except OSError as exc:
                logger.debug("could not release inherited descriptor %d: %s", fd, exc)
    finally:
        os.close(null)
    return released


def in_each_multiprocessing_child(owner: object, callback: Callable[[Any], object]) -> None:
    """Call ``callback(owner)`` in every multiprocessing child forked from
    now on (while ``owner`` lives), once multiprocessing has set the child
    up: it clears the parent's finalizers *after* the at-fork hooks, so a
    finalizer must be registered from here."""
    from multiprocessing import util

    util.register_after_fork(owner, callback)


def on_multiprocessing_exit(callback: Callable[[], object]) -> None:
    """In a multiprocessing child: run ``callback`` when its run returns,
    before it ends with ``os._exit``, with SIGTERM deferred until it is done
    (a pool terminates its workers while they exit: the signal, and any
    handler of the user's that raises, then comes after the flush)."""
    from multiprocessing import util

    def deferred() -> None:
        with sigterm_deferred():
            callback()

    util.Finalize(None, deferred, exitpriority=EXIT_PRIORITY)


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Hold a SIGTERM that arrives meanwhile, then deliver it to the handler
    in place before (main thread, Python-level handlers only)."""
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(AttributeError, ValueError):
            previous = signal.getsignal(signal.SIGTERM)
    if previous is None:  # not the main thread, or a handler set in C: leave it alone
        yield
        return
    pending: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if pending:
            os.kill(os.getpid(), signal.SIGTERM)


def chain_sigterm(before: Callable[[], bool]) -> bool:
    """In a forked child: on SIGTERM, run ``before`` first, then what SIGTERM
    did until now (the handler it replaces, or the default: the process
    ends by the signal, as without us). The process's other threads of
    ours block SIGTERM (a Python handler runs in the main thread, and only a
    signal delivered to that thread interrupts its blocking waits: delivered
    elsewhere, SIGTERM would stop ending the process). ``before`` returning False means the
    process is already ending (the signal interrupted its exit, which then
    completes): the default action is not taken again. Installed only from the main thread
    and only over the default action or a Python handler (a handler set in
    C, or an ignored SIGTERM, is left alone). Whether it was installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        # Not the end its parent set on SIGTERM (runtime/signals.py): the child
        # ends by its flush, not by stopping the parent's server.
        previous = replaced_handler(signal.getsignal(signal.SIGTERM))
    except (AttributeError, ValueError):
        return False
    if previous is None or previous == signal.SIG_IGN:
        return False

    def on_sigterm(signum: int, frame: Any) -> None:
        go_on = True
        try:
            go_on = before()
        except Exception:  # the process is ending: its own handler must still run
            logger.debug("flushing on SIGTERM failed", exc_info=True)
        if callable(previous):
            previous(signum, frame)
            return
        if not go_on:
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread after all
        return False
    return True
