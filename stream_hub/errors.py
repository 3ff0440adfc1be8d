"""The exception hierarchy: everything stream_hub raises on purpose derives from
:class:`StreamHubError`."""

from __future__ import annotations

import os
import sys

__all__ = [
    "ConfigError",
    "KillRefusedError",
    "LoopThreadError",
    "PortInUseError",
    "StoreError",
    "StoreLockedError",
    "StreamHubError",
    "port_holder",
]


class StreamHubError(Exception):
    """Base class of every error stream_hub raises on purpose."""


class ConfigError(StreamHubError, ValueError):
    """A :class:`~stream_hub.StreamConfig` field has an invalid value.

    ``field`` names the field; the message also says which values are accepted.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"StreamConfig.{field}: {message}")


class LoopThreadError(StreamHubError, RuntimeError):
    """A blocking call was made from the server's own event-loop thread.

    Waiting there for the loop to do work would deadlock; call it from another
    thread, or use the ``async`` variant (``await server.aclose()``).
    """


def _find_commands(port: int) -> str:
    if sys.platform == "win32":
        return f"netstat -ano | findstr :{port}"
    return f"lsof -i :{port}"


def port_holder(pid: int | None, process: str | None, me: int | None = None) -> str:
    """Who holds a port, for a message: this process (``me``, default
    ``os.getpid()``), another one (its pid and command line), or nobody this
    user can see."""
    if pid is None:
        return "an unknown process (its PID is not visible to this user)"
    if pid == (os.getpid() if me is None else me):
        return (
            f"this process (pid {pid}): a socket opened here, e.g. a server not stopped "
            "or one started by an earlier notebook cell"
        )
    return f"process {pid}" + (f" ({process})" if process else "")


class PortInUseError(StreamHubError, OSError):
    """A port stream_hub needs is held by another socket or process.

    Attributes:
        port: the TCP port.
        pid: the PID of the process listening on it, or ``None`` if unknown.
        process: the holder's name and command line, or ``None``.
        reason: why stream_hub did not free it (production, a guard, policy).
    """

    def __init__(
        self,
        port: int,
        pid: int | None = None,
        process: str | None = None,
        *,
        host: str = "127.0.0.1",
        reason: str | None = None,
        transport: str | None = None,
    ) -> None:
        self.port = port
        self.pid = pid
        self.process = process
        self.host = host
        self.reason = reason
        self.transport = transport
        super().__init__(self._compose())

    def _compose(self) -> str:
        what = f"{self.transport} port" if self.transport else "port"
        mine = self.pid is not None and self.pid == os.getpid()
        lines = [
            f"{what} {self.port} on {self.host} is already in use by {port_holder(self.pid, self.process)}."
        ]
        if self.reason:
            lines.append(f"Not freed automatically: {self.reason}.")
        env_name = {
            "sse": "STREAM_HUB_SSE_PORT",
            "ws": "STREAM_HUB_WS_PORT",
            "rest": "STREAM_HUB_REST_PORT",
        }.get(self.transport or "", "STREAM_HUB_<SSE|WS|REST>_PORT")
        if mine:
            lines += [
                "What to do:",
                "  1. stop what holds it in this program: server.stop() or release_stream_server() "
                "for a server of yours, close() for a socket",
                "  2. in a notebook, get_stream_server() gives the running server instead of a second one",
                f'  3. or use another port: {env_name}=... or StreamConfig(port_conflict="next")',
            ]
            return "\n".join(lines)
        lines += [
            "What to do:",
            f"  1. find the holder: {_find_commands(self.port)}",
            "  2. check whether it should still be running (a previous training run?)",
            "  3. if it is safe, stop it by hand"
            + (f" (kill {self.pid})" if self.pid is not None and sys.platform != "win32" else ""),
            f'  4. or use another port: {env_name}=... or StreamConfig(port_conflict="next")',
        ]
        return "\n".join(lines)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_port_error,
            (self.port, self.pid, self.process, self.host, self.reason, self.transport),
        )


def _rebuild_port_error(
    port: int,
    pid: int | None,
    process: str | None,
    host: str,
    reason: str | None,
    transport: str | None,
) -> PortInUseError:
    return PortInUseError(port, pid, process, host=host, reason=reason, transport=transport)


class KillRefusedError(StreamHubError, PermissionError):
    """stream_hub refused to signal a process because a safety guard forbids it.

    Raised by :func:`stream_hub.ports.kill_process` for this process, PID 1, an
    ancestor of this process, or another user's process. ``pid`` is the target,
    ``reason`` says which guard.
    """

    def __init__(self, pid: int, reason: str) -> None:
        self.pid = pid
        self.reason = reason
        super().__init__(f"refusing to signal pid {pid}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.pid, self.reason))


class StoreError(StreamHubError):
    """The store (``StreamConfig.store``) cannot be used: not a store file,
    written by a newer stream_hub, or unreadable; the message says which."""


class StoreLockedError(StoreError):
    """Another hub has the store open for writing (a store has one writer).

    ``path`` is the store, ``pid`` the process holding it (None if unknown),
    ``urls`` the base URLs its hub serves (empty if unknown).
    """

    def __init__(self, path: str, pid: int | None, urls: dict[str, str] | None = None) -> None:
        self.path = path
        self.pid = pid
        self.urls = dict(urls or {})
        if pid is None:
            who = "another stream_hub hub"
        elif pid == os.getpid():
            who = f"another server of this process (pid {pid})"
        else:
            who = f"the stream_hub hub of pid {pid}"
        where = f" (dashboard {self.urls['rest']}/)" if "rest" in self.urls else ""
        super().__init__(
            f"store {path} is already open for writing by {who}{where}; a store has one writer. "
            "Its runs are on that hub's dashboard (a training process joins that hub by using "
            "the same ports); otherwise stop that hub first, or give this one another file "
            "(StreamConfig(store=...) / STREAM_HUB_STORE)."
        )
