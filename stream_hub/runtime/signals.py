"""SIGTERM in a process that takes part in a hub.

SIGTERM's default action ends a process on the spot: no ``atexit``, no
``finally``. That is how launchers end training processes — torchrun ends
the surviving ranks with SIGTERM when one fails, SLURM ends a job's tasks
with it, a pool its workers. Taken as it comes, a joined rank's last events
never reach the hub, and a host stops serving (and writing its store) while
its joined processes' events are still on the way.

:func:`end_on_sigterm` gives such a process its end first: the same end as
at exit (its runs end, ``killed``; the server stops: a host serves until
its joined processes have handed over their last events and left, a joined
process sends what it holds and waits for the host to take it). Then SIGTERM
does what it did before: the process dies by the signal, as without us. A
handler of the user's (or the launcher's) set before ours runs instead,
untouched, and decides: if it ends the process by raising (``SystemExit``),
the end at exit follows, runs ``killed``; if it returns, the process goes on
(a graceful stop of the user's own) and its server with it.

A Python handler runs in the main thread only, and only a signal delivered
to that thread interrupts its blocking waits: the threads of ours block
SIGTERM (:func:`block_sigterm_in_this_thread`), so the kernel never hands it
to one of them while the main thread sleeps in a wait that would never see it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["block_sigterm_in_this_thread", "end_on_sigterm", "replaced_handler"]

logger = logging.getLogger(__name__)

#: Code that may hold a lock the end on SIGTERM needs: ours, and logging's
#: (the end logs; a logging handler holds its lock while it writes).
_HOLDING_LOCKS = (__name__.split(".")[0], "logging")

#: How often the end says again to a main thread that has not taken it that it is done.
RESEND_INTERVAL = 1.0

#: What SIGTERM does: a Python handler, or ``SIG_DFL``.
Handler = Callable[[int, "FrameType | None"], Any] | int


def block_sigterm_in_this_thread() -> None:
    """Called first by every thread of ours: SIGTERM goes to the main thread
    (whose Python handler, if any, must run there) or to another thread of
    the user's, never to this one. Without a handler this changes nothing:
    the default action ends the whole process whichever thread takes it."""
    if hasattr(signal, "pthread_sigmask"):  # not on Windows (no SIGTERM to route there)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


class _EndOnSigterm:
    """The handler :func:`end_on_sigterm` installs (one per process)."""

    def __init__(
        self,
        previous: Handler,
        end: Callable[[], None],
        ending: Callable[[], None],
        within: Callable[[], float],
    ) -> None:
        self.previous = previous
        self._end = end
        self._ending = ending
        self._within = within
        self._pid = os.getpid()
        self._main = threading.main_thread().ident
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._taken = threading.Event()  # the main thread's handler saw the end done

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous
        if os.getpid() != self._pid:  # inherited by a forked child: as if we were not here
            _take(previous, signum, frame)
            return
        if callable(previous):
            try:
                previous(signum, frame)
            except BaseException:  # it ends the process: the runs were killed
                self._ending()
                raise
            return
        if self._done.is_set():
            self._taken.set()
            _take(previous, signum, frame)
            return
        if self._thread is None:
            self._ending()
            self._thread = threading.Thread(target=self._run, name="stream-hub-sigterm", daemon=True)
            self._thread.start()
        if _interrupted_in(frame, _HOLDING_LOCKS):
            # The main thread may hold a lock the end needs (the intake's while
            # log() appends, a logging handler's): it goes on, and the end sends
            # it SIGTERM again once it is done. (A SIGTERM that arrives while
            # this handler waits returns here too: it interrupted this module.)
            return
        self._thread.join(self._within())
        self._taken.set()
        _take(previous, signum, frame)

    def _run(self) -> None:
        block_sigterm_in_this_thread()
        try:
            self._end()
        except Exception:  # the process ends anyway: say why it may have lost events
            logger.exception("stream_hub could not end cleanly on SIGTERM")
        finally:
            self._done.set()
            self._tell_the_main_thread()

    def _tell_the_main_thread(self) -> None:
        """SIGTERM to the main thread until its handler has taken it: sent just
        as that thread blocks in a C call (a lock, a queue's get), a signal only
        trips a flag nobody looks at before the call returns."""
        if self._main is None or not hasattr(signal, "pthread_kill"):
            return
        while not self._taken.is_set():
            try:
                signal.pthread_kill(self._main, signal.SIGTERM)
            except OSError:  # the main thread is gone: the process is ending
                return
            self._taken.wait(RESEND_INTERVAL)


def end_on_sigterm(end: Callable[[], None], ending: Callable[[], None], within: Callable[[], float]) -> bool:
    """On SIGTERM, run ``end`` (on a thread of its own, the main thread
    waiting for it ``within()`` s at most), then do what SIGTERM did before
    (see the module docstring). ``ending`` is called when SIGTERM is about
    to end the process: before ``end``, or as the handler ours replaced
    raises.

    Installed only from the main thread, and only over the default action or
    a Python handler (a handler set in C, or an ignored SIGTERM, is left
    alone). Whether it was installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (AttributeError, ValueError):
        return False
    if previous is None or previous == signal.SIG_IGN:
        return False
    try:
        signal.signal(signal.SIGTERM, _EndOnSigterm(previous, end, ending, within))
    except ValueError:  # not the main thread after all
        return False
    return True


def replaced_handler(handler: Any) -> Any:
    """What ``handler`` stands for: the handler :func:`end_on_sigterm`
    replaced, if it is ours (a forked child chains to that, not to its
    parent's end), else ``handler`` itself."""
    return handler.previous if isinstance(handler, _EndOnSigterm) else handler


def _take(previous: Handler, signum: int, frame: FrameType | None) -> None:
    """Do what SIGTERM did before: call the handler, or take the default action."""
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _interrupted_in(frame: FrameType | None, packages: tuple[str, ...]) -> bool:
    """Whether ``frame`` (where the main thread was interrupted) or one of
    its callers is code of one of ``packages``."""
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if name.split(".", 1)[0] in packages:
            return True
        frame = frame.f_back
    return False
