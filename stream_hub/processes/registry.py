"""The per-user registry of hubs on this machine: where processes meet.

A hub records itself in a directory only its user can enter (0700), in a
file only its user can read (0600), keyed by its *configured* ports: its
pid, the ports it really bound, its epoch, the protocol version, a random
join token and the address of its channel
(:mod:`stream_hub.processes.channel`). A process that wants the same ports
reads the record first, so a hub that had to take other ports (a foreign
program held the configured ones) is still found, and the machine never
splits into several hubs by accident.

Decisions about a record are taken under an advisory lock on the key
(``flock`` on POSIX), held by whoever is deciding to host, so two processes
starting at once cannot both decide to host.

Where the directory is (:func:`default_directory`): ``$STREAM_HUB_REGISTRY``
when it is set (an absolute path; it must be this user's private directory
or not exist yet: it is never passed over — a user who names a place means
it, e.g. a directory shared by the processes of a container or a job that
see different ``XDG_RUNTIME_DIR``/``TMPDIR``), else the first usable of

1. ``$XDG_RUNTIME_DIR/stream_hub``, when ``XDG_RUNTIME_DIR`` is a directory
   of this user;
2. ``<temp dir>/stream_hub-<uid>``;
3. ``<data directory>/registry/<host name>`` (:mod:`stream_hub.home`): the
   user's own, where nobody else can take the name first (per host: a home
   directory may be shared by the machines of a cluster).

A place that exists but is not this user's private directory — another
user made it first (anyone can, in the temp dir), or it is a symlink — is
passed over with a warning, so it cannot keep the user's hubs from
starting; every process of the user passes over the same places, so they
still meet. Under ``sudo`` (root, ``SUDO_UID`` set) a hub is root's: the
places inside a directory of the user who ran sudo (their
``XDG_RUNTIME_DIR``, or a ``TMPDIR`` or data directory that ``sudo -E``
kept) are passed over, so no root-owned file is left among theirs.

The registry's files — records, locks — are owner-only and never opened
through a symlink (:mod:`stream_hub.private_files`).
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
from ..home import ensure_home, ensure_private_directory, home_directory, machine_name
from ..private_files import open_private, private_opener

__all__ = ["PROTOCOL_VERSION", "HubRecord", "LockHolderStopped", "Registry", "record_key"]

logger = logging.getLogger(__name__)

#: Bumped when what processes say to each other changes: hubs of another
#: protocol version are never joined (they count as foreign programs).
PROTOCOL_VERSION = 2

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


#: What to do about a registry place that is not this user's private directory.
_REMEDY = "remove it (its owner or root can), or set XDG_RUNTIME_DIR to a private directory of yours"
#: Places already warned about (once per process).
_WARNED: set[Path] = set()


def default_directory() -> Path:
    """Where this user's hubs meet (see the module docstring): the first
    place that does not exist yet or is this user's real directory. Creates
    nothing (:class:`Registry` does).

    Raises:
        StreamHubError: under sudo, every place is inside the invoking
            user's directories.
    """
    places = _places()
    for path in places:
        if _may_be_ours(path):
            return path
    return places[-1]


REGISTRY_VARIABLE = "STREAM_HUB_REGISTRY"


def registry_variable(environ: Mapping[str, str] | None = None) -> Path | None:
    """The directory ``STREAM_HUB_REGISTRY`` names (None when unset or empty).

    Raises:
        StreamHubError: it is not an absolute path (after ``~`` expansion).
    """
    env = os.environ if environ is None else environ
    value = env.get(REGISTRY_VARIABLE, "").strip()
    if not value:
        return None
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        raise StreamHubError(f"{REGISTRY_VARIABLE} must be an absolute path (a directory), got {value!r}")
    return path


def _places() -> list[Path]:
    """The places the registry may be, in order (see the module docstring)."""
    explicit = registry_variable()
    if explicit is not None:
        return [explicit]  # named by the user: used, or refused with the reason
    uid = _uid()
    places: list[Path] = []
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and _own_directory(runtime, uid):
        places.append(Path(runtime) / "stream_hub")
    user = uid if uid is not None else os.environ.get("USERNAME", "user")
    places.append(Path(tempfile.gettempdir()) / f"stream_hub-{user}")
    places.append(_home_place())
    invoker = _sudo_invoker(uid)
    if invoker is not None:
        kept = [path for path in places if not _inside_directory_of(path, invoker)]
        if not kept:
            raise StreamHubError(
                f"running as root under sudo, stream_hub keeps its hub registry out of the directories "
                f"of uid {invoker} (who ran sudo), and every place for it is in one: "
                f"{', '.join(map(str, places))}; set XDG_RUNTIME_DIR or TMPDIR to a directory of root's"
            )
        places = kept
    return places


def _home_place() -> Path:
    return home_directory() / "registry" / machine_name()


def _uid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def _own_directory(path: str, uid: int | None) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and uid in (None, info.st_uid) and os.access(path, os.W_OK)


def _may_be_ours(path: Path) -> bool:
    """``path`` does not exist (we would create it), or is a real directory of ours."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and _uid() in (None, info.st_uid)


def _sudo_invoker(uid: int | None) -> int | None:
    """Running as root under sudo: the uid of the user who ran it (``SUDO_UID``)."""
    if uid != 0:
        return None
    try:
        invoker = int(os.environ.get("SUDO_UID", ""))
    except ValueError:
        return None
    return invoker if invoker != 0 else None


def _inside_directory_of(path: Path, uid: int) -> bool:
    """Whether a directory above ``path`` belongs to ``uid``."""
    for parent in path.parents:
        try:
            if os.stat(parent).st_uid == uid:
                return True
        except OSError:
            continue
    return False


def _make_private(path: Path) -> Path:
    """``path`` as this user's 0700 directory (created so if absent).

    Raises:
        StreamHubError: it is a symlink, not a directory, another user's,
            or cannot be created.
    """
    if path == _home_place():  # made the way the data directory and its rooms are
        ensure_private_directory(ensure_home() / "registry", _REMEDY)
    return ensure_private_directory(path, _REMEDY)


def _open_default() -> Path:
    """The first of :func:`_places` made private; the ones passed over are
    warned about, once per process."""
    passed: list[tuple[Path, str]] = []
    for path in _places():
        try:
            made = _make_private(path)
        except StreamHubError as exc:
            passed.append((path, str(exc)))
            continue
        for place, why in passed:
            if place not in _WARNED:
                _WARNED.add(place)
                logger.warning(
                    "hub registry %s passed over: %s; this user's hubs meet in %s", place, why, made
                )
        return made
    raise StreamHubError("no usable hub registry: " + "; ".join(why for _, why in passed))


class Registry:
    """The records of one user's hubs, in one private directory.

    Raises:
        StreamHubError: ``directory`` exists but is not this user's private
            directory (another user made it, or it is a symlink): nothing in
            it can be trusted. Without ``directory``, such places are passed
            over (see the module docstring); the error comes only when none
            is usable.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is None:
            self.directory = _open_default()
        else:
            self.directory = _make_private(Path(directory))

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
        handle = open(
            self.directory / f"hub-{key}.lock",
            "a+b",
            opener=private_opener("hub registry lock", remedy=_REMEDY),
        )
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
            with open(path, "rb", opener=private_opener("hub record", remedy=_REMEDY)) as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except (OSError, StreamHubError) as exc:  # a symlink, another user's, unreadable
            logger.debug("cannot read hub record %s: %s", path, exc)
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
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a leftover of a process with our pid: written afresh, never through
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, what="hub record", remedy=_REMEDY)
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
