"""Log records as the hub's ``log`` events.

The one-liner, which leaves the console as it was::

    import stream_hub.integrations.logging
    stream_hub.integrations.logging.capture()

:func:`capture` takes every record your logging configuration lets through
(a logger enabled for its level: by default WARNING and above, INFO too after
``logging.basicConfig(level=logging.INFO)``), whatever the handlers, and
adds no handler to any logger. So ``logging.basicConfig()`` called after it
still configures the console, and without one Python's last-resort output of
warnings to stderr stays as it was. (A handler added to the root logger
changes both: ``basicConfig`` does nothing once the root logger has a handler,
and the last resort speaks only when no handler exists.) It takes each record
where a logger hands it to the handlers (``logging.Logger.callHandlers``,
wrapped, chaining what was in place): past the logger's level, its
``disabled`` flag and its filters — a record a filter drops is not
published, one a filter rewrites (redacts) is published rewritten — and
with its ``extra`` fields set. A ``callHandlers`` set later without chaining
to this one ends the capture.

Or, to choose the loggers yourself, the handler::

    from stream_hub.integrations.logging import StreamHandler
    logging.getLogger("train").addHandler(StreamHandler())

Each record becomes ``{"type": "log", "data": {"message": ..., "level":
"INFO", "logger": "train"}}`` (the contract's shape; the message is the
handler's formatted text, a traceback included). Records are rate-limited
(a token bucket: ``rate`` per second, bursts of ``burst``) so a chatty loop
cannot flood the hub; what is left out is counted (``dropped``) and said in
one ``WARNING`` event once records flow again.

``emit`` never blocks (``publish()`` does not), never raises into the
logging call, and ignores records logged while it publishes, so the handler
can sit on the root logger alongside stream_hub's own loggers.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable

from ..config import StreamConfig
from ..server import TrainingStreamServer
from ._hub import HubHandle

__all__ = ["StreamHandler", "capture", "stop_capture"]


class StreamHandler(logging.Handler):
    """A :class:`logging.Handler` that publishes records as ``log`` events.

    Args:
        level: the least severe level handled (as for any handler).
        run: the run of the events (default: the job's run).
        server: the server to publish to (default: the process's shared
            server, taken now and given back by :meth:`close`).
        config: the config of the shared server, when it is started here.
        rate: records per second let through on average (None: no limit).
        burst: records let through at once after a quiet spell.
    """

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        run: str | None = None,
        server: TrainingStreamServer | None = None,
        config: StreamConfig | None = None,
        rate: float | None = 20.0,
        burst: int = 100,
    ) -> None:
        super().__init__(level)
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be a positive number of records per second or None, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.run = run
        self.rate = rate
        self.burst = burst
        self.dropped = 0  # records left out by the rate limit, in all
        self._unreported = 0  # ... not yet announced
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self._hub = HubHandle(server, config)
        # Taken now, not at the first record: starting a server logs (on its
        # loop thread too), and emit() runs under this handler's lock.
        self._server = self._hub.server
        self._inside = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._inside, "active", False):
            return  # a record logged while publishing one (by the hub itself)
        self._inside.active = True
        try:
            if not self._admit():
                return
            server = self._server
            if self._unreported:
                count, self._unreported = self._unreported, 0
                note = {
                    "message": f"{count} log record(s) left out by the rate limit ({self.rate:g}/s)",
                    "level": "WARNING",
                    "logger": __name__,
                }
                server.publish("log", note, run=self.run)
            # A copy: formatting caches the traceback's text on the record,
            # which the console's own formatter would then print as ours.
            message = self.format(copy.copy(record)) if record.exc_info else self.format(record)
            data = {"message": message, "level": record.levelname, "logger": record.name}
            server.publish("log", data, run=self.run)
        except Exception:
            self.handleError(record)
        finally:
            self._inside.active = False

    def _admit(self) -> bool:
        """Take a token from the bucket (under the handler's lock), or count a drop."""
        if self.rate is None:
            return True
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.dropped += 1
        self._unreported += 1
        return False

    def close(self) -> None:
        """Detach, and give the shared server's reference back (if one was taken)."""
        try:
            self._hub.release()
        finally:
            super().close()


class _Capture:
    """What :func:`capture` installs as ``logging.Logger.callHandlers``
    (:attr:`hook`): each record a logger gives its handlers is handed to
    ``handler`` first, then to the ``callHandlers`` that was in place."""

    def __init__(
        self, handler: StreamHandler, previous: Callable[[logging.Logger, logging.LogRecord], None]
    ) -> None:
        self.handler = handler
        self.previous = previous
        self.active = True
        capture = self

        def callHandlers(self: logging.Logger, record: logging.LogRecord) -> None:
            # Here, not in a record factory: the logger's filters have run (a
            # record one drops never arrives; one it redacts arrives redacted)
            # and ``extra`` is on the record.
            if (
                capture.active
                and record.levelno >= capture.handler.level
                and not (record.levelno < logging.INFO and str(record.name).startswith("stream_hub."))
            ):
                # (stream_hub's DEBUG records come with publishing itself: taken,
                # each publish would log the next one, on the loop's thread.)
                capture.handler.handle(record)
            capture.previous(self, record)

        self.hook = callHandlers


_capture_lock = threading.Lock()
_capture: _Capture | None = None


def capture(
    level: int | str = logging.NOTSET,
    *,
    run: str | None = None,
    server: TrainingStreamServer | None = None,
    config: StreamConfig | None = None,
    rate: float | None = 20.0,
    burst: int = 100,
) -> StreamHandler:
    """Publish every record the program logs as a ``log`` event, leaving
    the console (and every logger's handlers and levels) as it is.

    Calling it again while capturing returns the same handler (a notebook
    cell run twice); :func:`stop_capture` ends it. The arguments are
    :class:`StreamHandler`'s; ``level`` only takes fewer records than the
    loggers let through, never more (raising a logger's level would change
    what the console shows).

    Returns:
        the handler the records go through (its ``dropped`` counts what the
        rate limit left out).
    """
    global _capture
    with _capture_lock:
        if _capture is not None and _capture.active and logging.Logger.callHandlers is _capture.hook:
            return _capture.handler
        handler = StreamHandler(level, run=run, server=server, config=config, rate=rate, burst=burst)
        _capture = _Capture(handler, logging.Logger.callHandlers)
        logging.Logger.callHandlers = _capture.hook  # type: ignore[method-assign]
        return handler


def stop_capture() -> None:
    """End what :func:`capture` started (nothing if it is not capturing) and
    give the shared server's reference back."""
    global _capture
    with _capture_lock:
        current, _capture = _capture, None
        if current is None:
            return
        current.active = False
        if logging.Logger.callHandlers is current.hook:
            logging.Logger.callHandlers = current.previous  # type: ignore[method-assign,assignment]
        # Else a wrapper set later chains to this one: it stays, passing records through.
    current.handler.close()
