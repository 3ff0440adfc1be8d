"""The alert webhook (``StreamConfig(alert_webhook=URL)``): every alert the
hub commits is POSTed as JSON to a URL, from a thread of its own.

The committing thread only queues the alert (:meth:`AlertWebhook.offer`:
never blocks, never does I/O); the ``stream-hub-alert-webhook`` thread,
started with the first alert, posts them one at a time, each bounded by
``TIMEOUT``. The queue is bounded (``QUEUE_LIMIT``): past it, alerts are
dropped and counted. A failed post (no answer, an answer other than 2xx) is
counted and logged, at most once per ``WARN_EVERY`` seconds with the count
since the last warning; it is not retried (an alert is only useful now).

The body is the alert event (``seq``, ``ts``, ``type``, ``run``, ``rank``,
``step``, ``data``) plus a ``text`` line, which chat webhooks (Slack,
Mattermost) show as the message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import orjson

from ._version import __version__

__all__ = ["AlertWebhook"]

logger = logging.getLogger(__name__)

#: Alerts waiting to be posted, at most; more are dropped (and counted).
QUEUE_LIMIT = 1000
#: Seconds one post may take (connecting, sending, the answer).
TIMEOUT = 5.0
#: Seconds between two warnings about failed posts.
WARN_EVERY = 60.0


class AlertWebhook:
    """Posts the hub's alerts to ``url`` (see the module docstring).

    Attributes:
        sent, failed, dropped: alerts posted (2xx), whose post failed, and
            left out because the queue was full.
    """

    def __init__(self, url: str, timeout: float = TIMEOUT, limit: int = QUEUE_LIMIT) -> None:
        self.url = url
        self.timeout = timeout
        self.limit = limit
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: deque[bytes] = deque()
        self._busy = 0  # alerts taken from the queue and not yet posted
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._unreported = 0  # failures since the last warning
        self._warned_at = -WARN_EVERY

    def offer(self, alert: dict[str, Any]) -> None:
        """Queue one alert for posting (any thread; never blocks on I/O)."""
        body = orjson.dumps(alert)
        with self._wake:
            if len(self._queue) >= self.limit:
                self.dropped += 1
                return
            self._queue.append(body)
            thread = self._thread
            if thread is None or not thread.is_alive():  # the first alert (or after a fork)
                thread = self._thread = threading.Thread(
                    target=self._run, name="stream-hub-alert-webhook", daemon=True
                )
                thread.start()
            self._wake.notify()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every queued alert to be posted
        (a stopping server); whether none is left."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def status(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "queued": len(self._queue)}

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    self._wake.wait()
                body = self._queue.popleft()
                self._busy += 1
            try:
                self._post(body)
            finally:
                with self._wake:
                    self._busy -= 1
                    self._wake.notify_all()

    def _post(self, body: bytes) -> None:
        # urllib, not httpx: httpx logs every request's URL at INFO, and a
        # webhook's URL is often its secret.
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"stream_hub/{__version__}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(64 * 1024)
            self.sent += 1
            return
        except urllib.error.HTTPError as exc:
            problem = f"it answered {exc.code}"
        except Exception as exc:  # no answer, a bad URL: this thread must go on
            problem = f"{type(exc).__name__}: {exc}"
        self.failed += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            logger.warning(
                "could not post %d alert(s) to the alert webhook %s; the last time %s",
                self._unreported,
                _masked(self.url),
                problem,
            )
            self._warned_at, self._unreported = now, 0

    def reinit_after_fork(self) -> None:
        """In a forked child: a fresh lock and no thread (the parent's posts stay the parent's)."""
        self._queue = deque()
        self._busy = 0
        self._wake = threading.Condition(threading.Lock())
        self._thread = None


def _masked(url: str) -> str:
    """The webhook's scheme and host only: its path is often its secret (Slack)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rpartition('@')[2]}/…"
