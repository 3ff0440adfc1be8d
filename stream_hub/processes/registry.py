"""The per-user registry of hubs on this machine: where processes meet.

A hub records itself in a directory only its user can enter (0700, under
``$XDG_RUNTIME_DIR`` or the temp dir), in a file only its user can read
(0600), keyed by its *configured* ports: its pid, the ports it really bound,
its epoch, the protocol version, a random join token and the address of its
channel (:mod:`stream_hub.processes.channel`). A process that wants the same
ports reads the record first, so a hub that had to take other ports (a
foreign program held the configured ones) is still found, and the machine
never splits into several hubs by accident.

Decisions about a record are taken under an advisory lock on the key
(``flock`` on POSIX), held by whoever is deciding to host, so two processes
starting at once cannot both decide to host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import secrets
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import StreamHubError

__all__ = ["PROTOCOL_VERSION", "HubRecord", "LockHolderStopped", "Registry", "record_key"]

logger = logging.getLogger(__name__)

#: Bumped when what processes say to each other changes: hubs of another
#: protocol version are never joined (they count as foreign programs).
PROTOCOL_VERSION = 1

_UNSAFE = re.compile(r"[^A-Za-z0-9.]+")
#: How long a process waits for another that is deciding whether to host.
LOCK_TIMEOUT = 30.0


def record_key(host: str, configured: Mapping[str, int]) -> str:
    """The key of a hub's record: its bind address and configured ports."""
    name = _UNSAFE.sub("_", host.strip("[]")) or "any"
    return f"{name}-{configured['sse']}-{configured['ws']}-{configured['rest']}"


@dataclasses.dataclass(frozen=True)
class HubRecord:
    """What a hub tells the processes of its user about itself."""

    key: str
    pid: int
    host: str
    configured: dict[str, int]
    ports: dict[str, int]
    epoch: str
    token: str
    channel: str
    started: float
    version: int = PROTOCOL_VERSION
    # Settings of the host that a joiner's own config should agree with.
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    # While a host hands over to a successor: its pid, and until when the
    # others should wait for it rather than elect a host themselves.
    successor: int | None = None
    handover_until: float | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> HubRecord:
        """The record in ``data``.

        Raises:
            ValueError: it is not a hub record: not a JSON object, a field
                missing or of the wrong type (named in the message).
        """
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a hub record is a JSON object")
        values = {k: v for k, v in raw.items() if k in _FIELD_CHECKS}
        missing = [name for name in _REQUIRED if name not in values]
        if missing:
            raise ValueError(f"a hub record needs {', '.join(missing)}")
        for name, value in values.items():
            if not _FIELD_CHECKS[name](value):
                raise ValueError(f"field {name!r} of a hub record has the wrong type or value: {value!r:.80}")
        return cls(**values)

    def replace(self, **changes: Any) -> HubRecord:
        return dataclasses.replace(self, **changes)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _is_text(value: Any) -> bool:
    return type(value) is str


def _is_pid(value: Any) -> bool:
    return type(value) is int and value > 0


def _is_ports(value: Any) -> bool:
    return (
        type(value) is dict
        and {"sse", "ws", "rest"} <= value.keys()
        and all(type(port) is int and 0 <= port <= 65535 for port in value.values())
    )


# What each field of a record read from disk must be: a record of another
# version of stream_hub, or edited by hand, is ignored, not acted on (issue 22 L3).
_FIELD_CHECKS: dict[str, Any] = {
    "key": _is_text,
    "pid": _is_pid,
    "host": _is_text,
    "configured": _is_ports,
    "ports": _is_ports,
    "epoch": _is_text,
    "token": _is_text,
    "channel": _is_text,
    "started": _is_number,
    "version": _is_int,
    "settings": lambda value: type(value) is dict,
    "successor": lambda value: value is None or _is_pid(value),
    "handover_until": lambda value: value is None or _is_number(value),
}
_REQUIRED = tuple(
    f.name
    for f in dataclasses.fields(HubRecord)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


def new_token() -> str:
    """A join token: 256 random bits."""
    return secrets.token_urlsafe(32)


def default_directory() -> Path:
    """``$XDG_RUNTIME_DIR/stream_hub`` if usable, else ``<tmp>/stream_hub-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "stream_hub"
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"stream_hub-{user}"


class Registry:
    """The records of one user's hubs, in one private directory.

    Raises:
        StreamHubError: the directory exists but is not this user's private
            directory (another user made it, or it is open to others): nothing
            in it can be trusted.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_directory()
        self._ensure_private()

    def _ensure_private(self) -> None:
        path = self.directory
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StreamHubError(f"cannot create the hub registry {path}: {exc}") from exc
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise StreamHubError(f"the hub registry {path} is not a directory (a symlink?); remove it")
        if hasattr(os, "getuid"):
            if info.st_uid != os.getuid():
                raise StreamHubError(
                    f"the hub registry {path} belongs to uid {info.st_uid}, not to this user "
                    f"({os.getuid()}): set XDG_RUNTIME_DIR or TMPDIR to a private directory"
                )
            if info.st_mode & 0o077:
                os.chmod(path, 0o700)

    # -- files ---------------------------------------------------------------------------

    def record_path(self, key: str) -> Path:
        return self.directory / f"hub-{key}.json"

    def channel_path(self, key: str) -> Path:
        """Where the hub of ``key`` listens for joiners (a Unix socket)."""
        return self.directory / f"hub-{key}.sock"

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold the advisory lock of ``key``, waiting for another process that
        holds it (while it decides whether to host) at most ``timeout`` s.

        The holder writes its pid into the lock file, so a waiter can tell a
        holder that is merely slow from one that is stopped (Ctrl-Z, a
        debugger), which would make every newcomer wait for nothing.

        Raises:
            LockHolderStopped: the holder is stopped (found at once, not after ``timeout``).
            StreamHubError: the lock was not free within ``timeout``.
        """
        handle = open(self.directory / f"hub-{key}.lock", "a+b")
        os.chmod(handle.name, 0o600)
        if not _acquire(handle, timeout):  # the helper thread now owns (and closes) the handle
            raise StreamHubError(
                f"another process has held the hub registry lock {handle.name} for over {timeout:g} s; "
                "resume or end it"
            )
        try:
            _note_holder(handle, os.getpid())
            yield
        finally:
            _note_holder(handle, None)
            _unlock_file(handle)
            handle.close()

    def read(self, key: str) -> HubRecord | None:
        """The record of ``key``, or None (absent, unreadable or not ours)."""
        path = self.record_path(key)
        try:
            info = os.stat(path)
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.debug("cannot read hub record %s: %s", path, exc)
            return None
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            return None
        try:
            return HubRecord.from_json(data)
        except (ValueError, TypeError) as exc:
            logger.warning("ignoring a damaged hub record %s: %s", path, exc)
            return None

    def write(self, record: HubRecord) -> None:
        """Write ``record`` atomically, readable by this user only."""
        path = self.record_path(record.key)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, record.to_json())
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def remove(self, key: str, pid: int) -> bool:
        """Remove the record of ``key`` if it is still ``pid``'s; whether it was."""
        record = self.read(key)
        if record is None or record.pid != pid:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.record_path(key).unlink()
        return True


class LockHolderStopped(StreamHubError):
    """The registry lock's holder is stopped (Ctrl-Z, a debugger): waiting for it is pointless."""

    def __init__(self, path: str, pid: int) -> None:
        self.pid = pid
        super().__init__(f"pid {pid} holds the hub registry lock {path} and is stopped (Ctrl-Z?)")


#: How often a waiter looks at whether the lock's holder is stopped.
HOLDER_CHECK = 0.2


def _note_holder(handle: IO[bytes], pid: int | None) -> None:
    """Write (or clear) the holder's pid in the lock file (opened for appending:
    after the truncation, the write lands at the start)."""
    with contextlib.suppress(OSError):
        os.ftruncate(handle.fileno(), 0)
        if pid is not None:
            os.write(handle.fileno(), str(pid).encode())


def _holder(handle: IO[bytes]) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(handle.fileno(), 32, 0).strip()
        return int(text) if text else None
    return None


def _stopped(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


def _acquire(handle: IO[bytes], timeout: float) -> bool:
    """Take the file's lock, waiting at most ``timeout`` s; whether it was taken.

    The blocking wait happens on a helper thread, so it ends the moment the
    holder lets go. If we stop waiting first, the handle is the helper's: it
    releases the lock as soon as it gets it, and closes the file.

    Raises:
        LockHolderStopped: the holder is stopped (we stop waiting at once).
    """
    got = threading.Event()
    state = {"abandoned": False}
    guard = threading.Lock()

    def take() -> None:
        _lock_file(handle)
        with guard:
            if state["abandoned"]:
                _unlock_file(handle)
                handle.close()
                return
            got.set()

    threading.Thread(target=take, name="stream-hub-registry-lock", daemon=True).start()
    deadline = time.monotonic() + timeout
    stopped: int | None = None
    while not got.wait(max(0.0, min(HOLDER_CHECK, deadline - time.monotonic()))):
        holder = _holder(handle)
        if holder is not None and holder != os.getpid() and _stopped(holder):
            stopped = holder
            break
        if time.monotonic() >= deadline:
            break
    with guard:
        if got.is_set():
            return True
        state["abandoned"] = True
    if stopped is not None:
        raise LockHolderStopped(handle.name, stopped)
    return False


def _lock_file(handle: IO[bytes]) -> None:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        handle.seek(0)
        while True:
            try:
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)


def _unlock_file(handle: IO[bytes]) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
