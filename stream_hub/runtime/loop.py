"""The dedicated event-loop thread: start it, call into it, stop it.

Every transport of a server runs on one asyncio loop owned by one daemon thread.
Nothing is installed on the caller's loop or in its signal handlers, so a
caller that is itself inside a running loop (a notebook) is unaffected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import LoopThreadError, StreamHubError
from .signals import block_sigterm_in_this_thread

__all__ = ["LoopThread", "LoopThreadLeftBehind"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a crashed loop's thread spends closing what was left on it.
CRASH_CLEANUP_TIMEOUT = 2.0
# At most one "out of file descriptors" record per this many seconds.
RESOURCE_LOG_INTERVAL = 10.0


class _ResourceErrorFilter:
    """The loop's exception handler: resource exhaustion logged once per interval.

    When the process runs out of descriptors (``ulimit -n``), asyncio stops
    accepting on the listener for a second and reports it, with a traceback,
    every time; many connections queued on three listeners turn that into a
    flood of identical tracebacks. They are summarised instead: one WARNING
    per ``RESOURCE_LOG_INTERVAL`` with how many happened.

    Each refused accept schedules its own retry of the listener, and a retry
    that comes after the server closed the listener fails on the closed
    socket: nothing is lost (the listener was meant to be closed), so it is
    logged at DEBUG. Anything else goes to asyncio's default handler.
    """

    def __init__(self) -> None:
        self._last = -RESOURCE_LOG_INTERVAL
        self._suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
            now = time.monotonic()
            if now - self._last < RESOURCE_LOG_INTERVAL:
                self._suppressed += 1
                return
            logger.warning(
                "out of system resources (%s): %s; new connections wait until some close%s",
                errno.errorcode.get(exc.errno or 0, exc.errno),
                context.get("message", "loop error"),
                f" ({self._suppressed} more since the last report)" if self._suppressed else "",
            )
            self._last, self._suppressed = now, 0
            return
        if isinstance(exc, ValueError) and _is_accept_retry(context.get("handle")):
            logger.debug("an accept retry came after its listener closed: %s", exc)
            return
        loop.default_exception_handler(context)


def _is_accept_retry(handle: object) -> bool:
    """Whether ``handle`` is asyncio's retry of a listener that refused an accept."""
    callback = getattr(handle, "_callback", None)  # asyncio.Handle keeps it private
    return getattr(callback, "__name__", "") == "_start_serving"


_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class LoopThreadLeftBehind(StreamHubError):
    """``stop()`` ran out of time before the loop thread exited.

    The thread was left to end by itself: it has been asked to stop, and as
    soon as it runs again it cancels its tasks and closes what is open on its
    loop. Nothing of the server waits for it; the next ``start()`` does (a
    while), then runs a new loop beside it if it is still there.
    """


Closer = Callable[[asyncio.AbstractEventLoop], None]


class _Run:
    """One loop and the thread running it (each start makes a new one)."""

    __slots__ = ("closer", "crash", "loop", "thread")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, closer: Closer | None
    ) -> None:
        self.loop = loop
        self.thread = thread
        self.closer = closer
        self.crash: BaseException | None = None


class _Gate:
    """Whether a coroutine sent to the loop may still start: not once the
    caller stopped waiting for it (it would run after the caller moved on)."""

    __slots__ = ("_lock", "_state")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "waiting"

    def enter(self) -> bool:
        with self._lock:
            if self._state == "abandoned":
                return False
            self._state = "started"
            return True

    def abandon(self) -> None:
        with self._lock:
            if self._state == "waiting":
                self._state = "abandoned"


class LoopThread:
    """One asyncio event loop running in its own thread.

    ``start()`` returns once the loop runs. ``run(coro)`` executes a
    coroutine there and waits for its result from any *other* thread.
    ``stop()`` cancels and awaits every task still on the loop, closes what
    is still open on it (the ``closer`` given to ``start``), stops the loop,
    joins the thread and lets the loop close.

    A thread that does not exit within ``stop()``'s timeout (the loop is
    busy in a long callback) is left behind: it has been asked to stop, and
    it cancels its tasks, runs the closer and closes its loop as soon as it
    runs again. The next ``start()`` waits for it a while, then starts a new
    loop beside it; one that never returns stays until the process exits
    (a daemon thread), holding the connections it had, but no port.
    """

    def __init__(
        self, name: str = "stream-hub-loop", on_crash: Callable[[BaseException], None] | None = None
    ) -> None:
        self.name = name
        self.on_crash = on_crash
        #: The thread an earlier stop() gave up waiting for, if it is still running.
        self.left_behind: threading.Thread | None = None
        self._run: _Run | None = None

    # -- state ----------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._run.loop if self._run is not None else None

    @property
    def thread(self) -> threading.Thread | None:
        return self._run.thread if self._run is not None else None

    def is_alive(self) -> bool:
        """True while the thread runs a loop that can still take work.

        False from the moment the loop crashed, even while the dying thread
        still cleans up: nothing may be scheduled on that loop any more.
        """
        run = self._run
        return run is not None and run.crash is None and run.thread.is_alive() and not run.loop.is_closed()

    def in_loop_thread(self) -> bool:
        return self.thread is not None and threading.current_thread() is self.thread

    def check_not_in_loop(self, what: str) -> None:
        """Raise instead of deadlocking when a blocking call comes from the loop."""
        if self.in_loop_thread():
            raise LoopThreadError(
                f"{what} blocks until the server's event loop has done the work, so it "
                "cannot be called from that loop's own thread (a handler or callback). "
                "Call it from another thread, or use `await server.aclose()`."
            )

    # -- lifecycle --------------------------------------------------------------

    def start(self, closer: Closer | None = None, wait_previous: float = 0.0) -> asyncio.AbstractEventLoop:
        """Create the loop and its thread; return once the loop runs.

        ``closer(loop)`` is called on the loop's thread when it ends, however
        it ends (stopped, crashed, left behind), before the loop closes: it
        must drop what is still open there, which asyncio cannot close once
        the loop is closed. A thread an earlier stop() left behind is waited
        for first, at most ``wait_previous`` s.
        """
        if self.is_alive():
            raise StreamHubError("loop thread already running")
        self._wait_for_previous(wait_previous)
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_ResourceErrorFilter())
        ready = threading.Event()

        def main() -> None:
            block_sigterm_in_this_thread()  # (and the threads it starts): the main thread's
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            except BaseException as exc:  # only on faults: run_forever does not raise
                run.crash = exc
                logger.error("event-loop thread crashed: %r", exc)
                # Report first (stop() waits for this thread), then cancel what
                # was running so connections close: clients see the drop.
                if self.on_crash is not None and self._run is run:
                    with contextlib.suppress(Exception):
                        self.on_crash(exc)
                with contextlib.suppress(BaseException):
                    deadline = time.monotonic() + CRASH_CLEANUP_TIMEOUT
                    loop.run_until_complete(self._finish(deadline, closer))
            finally:
                _wind_down(loop, closer)
                asyncio.set_event_loop(None)
                loop.close()

        thread = threading.Thread(target=main, name=self.name, daemon=True)
        run = self._run = _Run(loop, thread, closer)
        thread.start()
        ready.wait()
        return loop

    def _wait_for_previous(self, timeout: float) -> None:
        previous = self.left_behind or (self._run.thread if self._run is not None else None)
        self._run = None
        if previous is not None and previous.is_alive():
            previous.join(timeout)
            if previous.is_alive():
                logger.warning(
                    "the previous event-loop thread is still busy %s s later; a new loop starts "
                    "beside it (it holds no port, and drops its connections when it runs again)",
                    timeout,
                )
        self.left_behind = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (from another thread).

        A coroutine the loop has not started when ``timeout`` passes never
        starts; one that has is cancelled.

        Raises:
            LoopThreadError: called from the loop thread itself.
            TimeoutError: ``timeout`` passed.
        """
        if self.in_loop_thread():
            coro.close()
            self.check_not_in_loop("this call")
        loop = self.loop
        if loop is None or not self.is_alive():
            coro.close()
            raise StreamHubError("the server's event-loop thread is not running")
        gate = _Gate()
        future = asyncio.run_coroutine_threadsafe(_gated(coro, gate), loop)
        try:
            return future.result(timeout)  # type: ignore[return-value]  # None only once abandoned
        except concurrent.futures.TimeoutError:
            gate.abandon()
            future.cancel()
            raise TimeoutError(f"the event-loop thread did not finish within {timeout} s") from None
        except concurrent.futures.CancelledError:
            # An earlier stop() that gave up waiting left its cleanup queued:
            # it cancelled this work when the loop got to it.
            raise StreamHubError("the event-loop thread is shutting down") from None

    def stop(self, timeout: float | None = 5.0) -> None:
        """Cancel leftover tasks, close what is open, stop the loop and join
        the thread, all within ``timeout`` seconds in total (None: no bound).

        The loop gets all of it: its cleanup runs from whenever the loop gets
        to it until shortly before the deadline. Safe to call when already
        stopped. Must not be called from the loop thread.

        Raises:
            LoopThreadLeftBehind: the thread did not exit in time; it was left
                behind (see the class), and this object can start again.
        """
        self.check_not_in_loop("stopping the loop thread")
        run = self._run
        if run is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        if run.thread.is_alive() and run.crash is None:
            with contextlib.suppress(RuntimeError):  # the loop closed already
                run.loop.call_soon_threadsafe(self._begin_finish, run, deadline)
        run.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._run = None
        if run.thread.is_alive():
            self.left_behind = run.thread
            logger.warning("event-loop thread did not exit within %s s; it is left to end by itself", timeout)
            raise LoopThreadLeftBehind(
                f"event-loop thread did not exit within {timeout} s; it was left to end by "
                "itself (it holds no port, and drops its connections when it runs again)"
            )

    def _begin_finish(self, run: _Run, deadline: float | None) -> None:
        # On the loop: clean up, then stop the loop (which ends the thread).
        task = run.loop.create_task(self._finish(deadline, run.closer))
        task.add_done_callback(lambda _: run.loop.stop())

    async def _finish(self, deadline: float | None, closer: Closer | None = None) -> None:
        """Close what is open, cancel and await every other task (until
        shortly before ``deadline``, a ``time.monotonic()`` value), then release
        loop resources."""
        loop = asyncio.get_running_loop()
        if closer is not None:
            _close(loop, closer)
            # Connections accepted a moment ago finish connecting (and are
            # tracked) within a few iterations; cancelling the task that
            # connects one instead would leave its socket to the garbage collector.
            for _ in range(3):
                await asyncio.sleep(0)
            _close(loop, closer)
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            gathered = asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait([gathered], timeout=_until(deadline))
            if not gathered.done():
                logger.warning(
                    "%d task(s) still running after being cancelled", sum(not t.done() for t in tasks)
                )
                return
            for task, result in zip(tasks, gathered.result()):
                if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                    logger.debug("task %r ended with %r during shutdown", task.get_name(), result)
        await loop.shutdown_asyncgens()
        await asyncio.wait([loop.create_task(loop.shutdown_default_executor())], timeout=_until(deadline))


# Of a stop's budget, what the loop thread keeps for its last steps after its tasks.
_WIND_DOWN_RESERVE = 0.05


def _until(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - _WIND_DOWN_RESERVE - time.monotonic())


async def _gated(coro: Coroutine[Any, Any, T], gate: _Gate) -> T | None:
    if not gate.enter():
        coro.close()
        return None
    return await coro


def _close(loop: asyncio.AbstractEventLoop, closer: Closer) -> None:
    try:
        closer(loop)
    except Exception:  # stopping goes on whatever the closer did
        logger.exception("closing what was left on the event loop failed")


def _wind_down(loop: asyncio.AbstractEventLoop, closer: Closer | None) -> None:
    """The loop thread's last steps before its loop closes: close what is
    still open (a crash, a stop that ran out of time), then one more pass so
    the callbacks queued by the last closes run (``connection_lost`` closes
    each socket); no task is cancelled there, so nothing it started is lost."""
    if closer is not None:
        _close(loop, closer)
    try:
        loop.call_soon(loop.stop)
        loop.run_forever()
    except BaseException:
        logger.exception("the event loop's last pass failed")
