"""What following a hub can raise: one small hierarchy under
:class:`~stream_hub.StreamHubError`, each message saying what to do."""

from __future__ import annotations

from ..errors import StreamHubError

__all__ = ["FollowError", "FollowTimeout", "HubNotFound", "HubRefused", "HubUnreachable", "NotAHub"]


class FollowError(StreamHubError):
    """Following a hub failed; the message says why and what to check."""


class HubUnreachable(FollowError):
    """No hub answered (or kept a connection open) for ``retry_for`` seconds."""

    def __init__(self, url: str, seconds: float, cause: str) -> None:
        self.url = url
        self.seconds = seconds
        self.cause = cause
        super().__init__(
            f"no hub answered at {url} for {seconds:g} s (last: {cause}). Is it running? "
            "Start one with `stream-hub serve`, check the port (SSE 8888 / WebSocket 8889 by "
            "default), or wait longer (retry_for=None, or `stream-hub tail --retry-for 0`, waits "
            "indefinitely)."
        )


class HubNotFound(HubUnreachable):
    """Looking for the user's hub (no URL given) found none: nothing answered
    as a hub in the registry's record or at the configured ports.

    ``looked`` says where it looked; ``seconds`` how long ``follow()`` kept
    looking (None: it looked once, as the commands do).
    """

    def __init__(self, looked: str, seconds: float | None = None) -> None:
        self.url = looked
        self.looked = looked
        self.seconds = seconds if seconds is not None else 0.0
        self.cause = "no hub found"
        waited = "" if seconds is None else f" for {seconds:g} s"
        # One line: it is what `stream-hub status` prints when no hub runs.
        FollowError.__init__(
            self,
            f"no hub runs{waited} (looked at {looked}); start one with `stream-hub serve`, "
            "or check the host and ports (--host/--rest-port, STREAM_HUB_HOST/STREAM_HUB_REST_PORT)",
        )


class NotAHub(FollowError):
    """The hub's port answers, but not as a stream_hub hub (``GET /health``
    does not say ``"service": "stream_hub"``): another program holds it.
    What it answered is never shown; retrying would not help."""

    def __init__(self, port: int, url: str) -> None:
        self.port = port
        self.url = url
        super().__init__(
            f"port {port} answers, but not as a stream_hub hub ({url}); another program holds it: "
            "point stream_hub at the hub's ports (--host/--rest-port, STREAM_HUB_REST_PORT), or see "
            f"who holds it with `stream-hub ports --rest-port {port}`"
        )


class HubRefused(FollowError):
    """The hub answered but refused the subscription (a bad token, a bad
    parameter, not a stream_hub endpoint): retrying would not help."""

    def __init__(self, url: str, status: int, message: str) -> None:
        self.url = url
        self.status = status
        self.message = message
        hint = ""
        if status == 401:
            hint = " Pass token=... (the hub's read_token, STREAM_HUB_READ_TOKEN)."
        elif status == 404:
            hint = " Is this the hub's SSE port (events at /events) or its WebSocket port (ws://host:port/)?"
        super().__init__(f"{url} refused the subscription ({status}): {message}.{hint}")


class FollowTimeout(FollowError, TimeoutError):
    """No event arrived within ``idle_timeout`` seconds."""

    def __init__(self, url: str, seconds: float, last_seq: int | None) -> None:
        self.url = url
        self.seconds = seconds
        self.last_seq = last_seq
        where = "no event yet" if last_seq is None else f"the last was seq {last_seq}"
        super().__init__(f"no event from {url} within {seconds:g} s ({where})")
