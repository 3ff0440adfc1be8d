"""The data directory, ``STREAM_HUB_HOME``: where a user's stream_hub keeps
what outlives a process (the default store, the claims on run names).

- Where it is: ``$STREAM_HUB_HOME`` when set, else the platform's per-user
  data directory: Linux and other POSIX ``$XDG_DATA_HOME/stream_hub``
  (``~/.local/share/stream_hub``), macOS ``~/Library/Application
  Support/stream_hub``, Windows ``%LOCALAPPDATA%\\stream_hub``.
- It is created owner-only (0700) the first time something needs it
  (:func:`ensure_home`), never by an import or by asking where it is.
- ``runs/claims/`` holds one file per default run name given out
  (:class:`RunClaims`): creating it with ``O_CREAT | O_EXCL`` is what makes a
  name one launch's, on one machine or across machines sharing the home
  (NFS creates exclusively too).
- ``runs/processes/<machine>/`` holds the run of each live process that
  worked one out (:class:`ProcessRuns`), for its multiprocessing children
  that could not inherit it through the environment (a forkserver started
  before the parent knew its run).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import StreamHubError

__all__ = [
    "CLAIM_MAX_AGE_S",
    "HOME_VARIABLE",
    "Claim",
    "ProcessRuns",
    "RunClaims",
    "default_home",
    "ensure_home",
    "ensure_private_directory",
    "home_directory",
    "machine_name",
]

logger = logging.getLogger(__name__)

HOME_VARIABLE = "STREAM_HUB_HOME"

CLAIM_MAX_AGE_S = 30 * 86_400
"""Claims untouched for this long are pruned. A default name carries the
launch's date and time, so no new launch asks for an old name again; a
launch that keeps finding its claim (ranks restarted) refreshes it."""

_MAX_SUFFIX = 1000
_READ_PATIENCE_S = 2.0  # how long a claim created an instant ago may stay empty


# -- where ------------------------------------------------------------------------------


def default_home(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The platform's per-user data directory for stream_hub (``STREAM_HUB_HOME`` aside)."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    user_home = Path(env.get("HOME") or env.get("USERPROFILE") or os.path.expanduser("~"))
    if platform.startswith("win"):
        local = env.get("LOCALAPPDATA", "").strip()
        return (Path(local) if local else user_home / "AppData" / "Local") / "stream_hub"
    if platform == "darwin":
        return user_home / "Library" / "Application Support" / "stream_hub"
    # XDG: a relative value is invalid and must be ignored.
    xdg = env.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else user_home / ".local" / "share"
    return base / "stream_hub"


def home_directory(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """``$STREAM_HUB_HOME`` (``~`` expanded) when set and not empty, else
    :func:`default_home`. Creates nothing."""
    env = os.environ if environ is None else environ
    configured = env.get(HOME_VARIABLE, "").strip()
    if configured:
        return Path(os.path.expanduser(configured))
    return default_home(env, platform)


def ensure_home(environ: Mapping[str, str] | None = None) -> Path:
    """The data directory, created owner-only (0700) if it does not exist yet.

    An existing directory is used as it is (a user may have pointed
    ``STREAM_HUB_HOME`` at a directory of their own, or symlinked it to a
    larger disk); it must be a directory of this user.

    Raises:
        StreamHubError: it cannot be created, is not a directory, or belongs
            to another user (the message says to set ``STREAM_HUB_HOME``).
    """
    path = home_directory(environ)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(path)
    except OSError as exc:
        raise StreamHubError(
            f"cannot create the stream_hub data directory {path}: {exc}; "
            f"set {HOME_VARIABLE} to a writable directory"
        ) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise StreamHubError(f"the stream_hub data directory {path} is not a directory; set {HOME_VARIABLE}")
    _check_owner(path, info, "data directory")
    return path


def ensure_private_directory(path: Path, remedy: str | None = None) -> Path:
    """``path`` (under the data directory) as a directory of this user with
    mode 0700: created so, tightened if it is open to others, refused when it
    is a symlink or another user's. ``remedy``: what an error tells the user
    to do (by default, to set ``STREAM_HUB_HOME``).

    Raises:
        StreamHubError: as :func:`ensure_home`.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise StreamHubError(
            f"cannot create {path}: {exc}; {remedy or f'set {HOME_VARIABLE} to a writable directory'}"
        ) from exc
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StreamHubError(f"{path} is not a directory (a symlink?); remove it")
    _check_owner(path, info, "directory", remedy)
    if hasattr(os, "getuid") and info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _check_owner(path: Path, info: os.stat_result, what: str, remedy: str | None = None) -> None:
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise StreamHubError(
            f"the stream_hub {what} {path} belongs to uid {info.st_uid}, not to this user "
            f"({os.getuid()}): {remedy or f'set {HOME_VARIABLE} to a directory of your own'}"
        )


def machine_name() -> str:
    """This machine's name as one safe path component (the data directory's
    per-machine subdirectories: its store files, its registry, its
    processes' runs — on an NFS home shared by several machines)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in socket.gethostname())[:64] or "localhost"


# -- run names ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """What a claim file says: the run name, the launch that holds it (an
    opaque key that every process of the launch computes alike), and who
    wrote it."""

    run: str
    launch: str
    pid: int
    at: float

    def to_bytes(self) -> bytes:
        return json.dumps({"run": self.run, "launch": self.launch, "pid": self.pid, "at": self.at}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Claim | None:
        """The claim, or None for a file still being written or not a claim."""
        try:
            raw = json.loads(data)
            return cls(str(raw["run"]), str(raw["launch"]), int(raw["pid"]), float(raw["at"]))
        except (ValueError, TypeError, KeyError):
            return None


def candidates(base: str) -> list[str]:
    """The names a launch asks for, in order: ``base``, ``base-2``, ``base-3``, ..."""
    return [base, *(f"{base}-{n}" for n in range(2, _MAX_SUFFIX + 1))]


class RunClaims:
    """The run names given out to launches: one file per name in
    ``<home>/runs/claims/`` (0700 directory, 0600 files).

    :meth:`claim` gives a launch the first of ``base``, ``base-2``, ... that
    is free or already its own; every process of one launch (every rank)
    calling it with the same ``base`` and ``launch`` gets the same name, and
    two launches never get the same one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def in_home(cls, environ: Mapping[str, str] | None = None) -> RunClaims:
        """The claims of the data directory, created on first use.

        Raises:
            StreamHubError: the data directory cannot be used.
        """
        runs = ensure_private_directory(ensure_home(environ) / "runs")
        return cls(ensure_private_directory(runs / "claims"))

    def claim(self, base: str, launch: str, now: float | None = None) -> str:
        """The run name of ``launch``: the first of :func:`candidates` that
        this call creates, or that an earlier call with the same ``launch``
        created. Claims older than :data:`CLAIM_MAX_AGE_S` are pruned first.

        Raises:
            OSError: the directory cannot be written.
            StreamHubError: every candidate is taken.
        """
        now = time.time() if now is None else now
        self.prune(now)
        mine = Claim(base, launch, os.getpid(), now)
        for name in candidates(base):
            path = self.directory / name
            for _ in range(3):  # a claim pruned between our two looks: ask again
                if self._create(path, Claim(name, mine.launch, mine.pid, mine.at)):
                    logger.debug("claimed run name %s for %s", name, launch)
                    return name
                held = self._read(path)
                if held is None:
                    continue
                if held.launch == launch:
                    _touch(path)  # still in use: keep it from being pruned
                    return name
                break
        raise StreamHubError(
            f"every run name from {base} to {base}-{_MAX_SUFFIX} is taken in {self.directory}"
        )

    def prune(self, now: float | None = None, max_age: float = CLAIM_MAX_AGE_S) -> int:
        """Remove claims untouched for ``max_age`` seconds; how many went."""
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        for entry in entries:
            try:
                if (
                    entry.is_file(follow_symlinks=False)
                    and now - entry.stat(follow_symlinks=False).st_mtime > max_age
                ):
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue  # another process pruned it first
        return removed

    def holder(self, name: str) -> Claim | None:
        """Who holds ``name`` (None when nobody does)."""
        return self._read(self.directory / name)

    @staticmethod
    def _create(path: Path, claim: Claim) -> bool:
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        )
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, claim.to_bytes())  # a few dozen bytes: one write
        finally:
            os.close(fd)
        return True

    @staticmethod
    def _read(path: Path) -> Claim | None:
        """The claim in ``path``; a file created an instant ago by another
        process may still be empty, so an unreadable one is read again for a
        moment before it counts as someone else's."""
        deadline = time.monotonic() + _READ_PATIENCE_S
        delay = 0.001
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
            except FileNotFoundError:
                return None
            except OSError:  # a symlink planted there, or unreadable: not ours
                return Claim(path.name, "", 0, 0.0)
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
            claim = Claim.from_bytes(data)
            if claim is not None or time.monotonic() > deadline:
                return claim if claim is not None else Claim(path.name, "", 0, 0.0)
            # Another process created the claim and writes it next: no event
            # crosses processes here, so a short bounded poll (capped backoff).
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


class ProcessRuns:
    """The run of each live process of this machine that worked one out:
    one file per process, ``<pid>``, saying its run and start time (a pid is
    reused, not with the same start time). Files of processes that are gone
    are removed when a process records its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def in_home(cls, environ: Mapping[str, str] | None = None) -> ProcessRuns:
        """Raises:
        StreamHubError: the data directory cannot be used."""
        runs = ensure_private_directory(ensure_home(environ) / "runs")
        processes = ensure_private_directory(runs / "processes")
        return cls(ensure_private_directory(processes / machine_name()))

    def record(self, pid: int, started: float, run: str, alive: Callable[[int], bool]) -> None:
        """Say that process ``pid`` (started at ``started``) logs into ``run``.

        Raises:
            OSError: the directory cannot be written.
        """
        self._prune(alive)
        temporary = self.directory / f".{pid}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(temporary, flags, 0o600)
        try:
            os.write(fd, json.dumps({"run": run, "started": started}).encode())
        finally:
            os.close(fd)
        os.replace(temporary, self.directory / str(pid))

    def lookup(self, pid: int, started: float | None) -> str | None:
        """The run process ``pid`` recorded, if it is the process started at ``started``."""
        try:
            fd = os.open(self.directory / str(pid), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            raw = json.loads(os.read(fd, 4096))
            run, when = str(raw["run"]), float(raw["started"])
        except (ValueError, TypeError, KeyError, OSError):
            return None
        finally:
            os.close(fd)
        if started is not None and abs(when - started) > 0.01:
            return None  # another process that had the same pid
        return run

    def _prune(self, alive: Callable[[int], bool]) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            if entry.name.isdigit() and not alive(int(entry.name)):
                try:
                    os.unlink(entry.path)
                except OSError:
                    continue
