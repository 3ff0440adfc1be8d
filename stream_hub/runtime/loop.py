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

__all__ = ["LoopThread"]

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
    per ``RESOURCE_LOG_INTERVAL`` with how many happened. Anything else goes
    to asyncio's default handler.
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
        loop.default_exception_handler(context)


_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class LoopThread:
    """One asyncio event loop running in its own thread.

    ``start()`` returns once the loop is running. ``run(coro)`` executes a
    coroutine there and waits for its result from any *other* thread.
    ``stop()`` cancels and awaits every task still on the loop, shuts down
    async generators and the default executor, stops the loop, joins the
    thread and closes the loop.
    """

    def __init__(
        self, name: str = "stream-hub-loop", on_crash: Callable[[BaseException], None] | None = None
    ) -> None:
        self.name = name
        self.on_crash = on_crash
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._crash: BaseException | None = None

    # -- state ----------------------------------------------------------------

    def is_alive(self) -> bool:
        """True while the thread runs a loop that can still take work.

        False from the moment the loop crashed, even while the dying thread
        still cleans up: nothing may be scheduled on that loop any more.
        """
        loop = self.loop
        return (
            self._crash is None
            and self.thread is not None
            and self.thread.is_alive()
            and loop is not None
            and not loop.is_closed()
        )

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

    def start(self) -> asyncio.AbstractEventLoop:
        """Create the loop and its thread; return once the loop runs."""
        if self.is_alive():
            raise StreamHubError("loop thread already running")
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_ResourceErrorFilter())
        ready = threading.Event()
        self._crash = None

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
                # Callbacks queued by the last closes (connection_lost) must run
                # before the loop closes, or their sockets are never released:
                # one more pass over what is ready (no task of ours that a
                # cleanup still queued by an earlier stop() could cancel).
                loop.call_soon(loop.stop)
                loop.run_forever()
            except BaseException as exc:  # only on faults: run_forever does not raise
                self._crash = exc
                logger.error("event-loop thread crashed: %r", exc)
                # Report first (stop() waits for this thread), then cancel what
                # was running so connections close: clients see the drop.
                if self.on_crash is not None:
                    with contextlib.suppress(Exception):
                        self.on_crash(exc)
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(self._finish(CRASH_CLEANUP_TIMEOUT))
            finally:
                asyncio.set_event_loop(None)
                loop.close()

        thread = threading.Thread(target=main, name=self.name, daemon=True)
        self.loop, self.thread = loop, thread
        thread.start()
        ready.wait()
        return loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (from another thread).

        Raises:
            LoopThreadError: called from the loop thread itself.
            TimeoutError: ``timeout`` passed; the coroutine is cancelled.
        """
        if self.in_loop_thread():
            coro.close()
            self.check_not_in_loop("this call")
        loop = self.loop
        if loop is None or not self.is_alive():
            coro.close()
            raise StreamHubError("the server's event-loop thread is not running")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the event-loop thread did not finish within {timeout} s") from None
        except concurrent.futures.CancelledError:
            # An earlier stop() that gave up waiting left its cleanup queued:
            # it cancelled this work when the loop got to it.
            raise StreamHubError("the event-loop thread is shutting down") from None

    def stop(self, timeout: float | None = 5.0) -> None:
        """Cancel leftover tasks, stop and close the loop, join the thread, all
        within ``timeout`` seconds in total (None: no bound).

        Safe to call when already stopped. Must not be called from the loop thread.

        Raises:
            StreamHubError: the thread did not exit in time.
        """
        self.check_not_in_loop("stopping the loop thread")
        loop, thread = self.loop, self.thread
        if loop is None or thread is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout

        def left(share: float = 1.0) -> float | None:
            return None if deadline is None else max(0.0, (deadline - time.monotonic()) * share)

        if thread.is_alive() and loop.is_running() and self._crash is None:
            try:
                # Half of what is left for the tasks; the rest to stop and join.
                future = asyncio.run_coroutine_threadsafe(self._finish(left(0.5)), loop)
                future.result(left(0.6))
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                logger.warning("loop thread cleanup did not finish within %s s", timeout)
            except RuntimeError:
                pass  # loop already stopped
            loop.call_soon_threadsafe(loop.stop)
        thread.join(left())
        if thread.is_alive():
            raise StreamHubError(f"event-loop thread did not exit within {timeout} s")
        self.loop = None
        self.thread = None

    async def _finish(self, timeout: float | None = None) -> None:
        """Cancel and await every other task (at most ``timeout`` s), then
        release loop resources."""
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            gathered = asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait([gathered], timeout=timeout)
            if not gathered.done():
                logger.warning(
                    "%d task(s) still running %s s after being cancelled",
                    sum(not t.done() for t in tasks),
                    timeout,
                )
                return
            for task, result in zip(tasks, gathered.result()):
                if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                    logger.debug("task %r ended with %r during shutdown", task.get_name(), result)
        loop = asyncio.get_running_loop()
        await loop.shutdown_asyncgens()
        await loop.shutdown_default_executor()
