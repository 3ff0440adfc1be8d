"""The default store: one SQLite file per hub instance under
``STREAM_HUB_HOME/store/<machine>/``, and the retention over that directory.

Why a file per hub instance: every hub of a user persists by default — hubs
on other ports, several at once, hubs on several machines sharing an NFS
home — and none may be refused because another holds a lock, while one
SQLite file must never be written from two machines (its locks do not
reach across NFS clients). So each hosting process creates a file of its
own (:func:`new_store_file`), keeps it from its first start to its stop
(restarts keep it), and a successor after a hand-over continues it; readers
merge the files (:mod:`.catalog`). A file that ends up holding no run is
removed when its hub stops (:func:`discard_if_empty`), so processes that
host without logging leave nothing behind.

Retention (:func:`prune`): files of hubs that are gone (their lock is free)
older than ``max_days`` go, then the oldest until the directory is under
``max_bytes`` — whole files, so the oldest finished runs go first and a
live hub's file is never touched.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import StreamHubError
from ..home import ensure_home, ensure_private_directory, home_directory, machine_name
from .lock import StoreLock

if sys.platform == "win32":  # pragma: no cover - Windows
    fcntl = None
else:
    import fcntl

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DAYS",
    "StoreFile",
    "discard_if_empty",
    "is_default_store",
    "live_store_files",
    "new_store_file",
    "prune",
    "store_files",
    "stores_directory",
]

logger = logging.getLogger(__name__)

#: The default store's retention over its whole directory.
DEFAULT_MAX_BYTES = 2 << 30
DEFAULT_MAX_DAYS = 30.0

SUFFIX = ".db"
_COMPANIONS = ("-wal", "-shm", "-journal", ".lock")


def stores_directory() -> Path:
    """``<home>/store`` (not created)."""
    return home_directory() / "store"


def is_default_store(path: str) -> bool:
    """Whether ``path`` is a file of the default store (under this home)."""
    try:
        return Path(path).resolve().parent.parent == stores_directory().resolve()
    except OSError:
        return False


def new_store_file(now: float | None = None) -> str:
    """Create (owner-only, exclusively) and return a new, empty store file
    of this hub instance: ``<home>/store/<machine>/<UTC time>-<pid>.db``.

    Raises:
        StreamHubError: the data directory cannot be used.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    directory = ensure_private_directory(ensure_private_directory(ensure_home() / "store") / machine_name())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for n in range(1, 1000):
        path = directory / f"{stamp}-{os.getpid()}{'' if n == 1 else f'-{n}'}{SUFFIX}"
        try:
            os.close(os.open(path, flags, 0o600))
        except FileExistsError:
            continue
        except OSError as exc:
            raise StreamHubError(f"cannot create a store file in {directory}: {exc}") from exc
        return str(path)
    raise StreamHubError(f"cannot create a store file in {directory}: every name is taken")


@dataclass(frozen=True)
class StoreFile:
    """One file of the default store and what the directory listing says of it."""

    path: str
    bytes: int  # with its WAL
    modified: float


def store_files(directory: Path | None = None) -> list[StoreFile]:
    """Every file of the default store (every machine's), oldest first."""
    root = stores_directory() if directory is None else directory
    found: list[StoreFile] = []
    try:
        machines = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    for machine in machines:
        try:
            entries = list(os.scandir(machine.path))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.endswith(SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                size = info.st_size
                modified = info.st_mtime
                wal = entry.path + "-wal"
                if os.path.exists(wal):
                    wal_info = os.stat(wal)
                    size += wal_info.st_size
                    modified = max(modified, wal_info.st_mtime)
            except OSError:
                continue  # removed meanwhile
            found.append(StoreFile(entry.path, size, modified))
    found.sort(key=lambda f: (f.modified, f.path))
    return found


def _remove(path: str) -> int:
    """Remove a store file and its companions; the bytes freed."""
    freed = 0
    for name in (path, *(path + c for c in _COMPANIONS)):
        try:
            freed += os.stat(name, follow_symlinks=False).st_size
            os.unlink(name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("could not remove %s: %s", name, exc)
    return freed


def _gone(path: str) -> StoreLock | None:
    """The store's lock, taken, when no hub writes the file any more."""
    lock = StoreLock(path)
    try:
        lock.acquire()
    except (StreamHubError, OSError):
        return None
    return lock


def prune(
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_days: float | None = DEFAULT_MAX_DAYS,
    keep: str | None = None,
    now: float | None = None,
) -> tuple[int, int]:
    """Apply the default store's retention (see the module docstring);
    ``keep`` (this hub's own file) is never removed. Returns the files and
    bytes removed."""
    now = time.time() if now is None else now
    files = store_files()
    total = sum(f.bytes for f in files)
    removed = freed = 0
    for f in files:
        old = max_days is not None and now - f.modified > max_days * 86_400
        big = max_bytes is not None and total > max_bytes
        if not (old or big):
            continue  # oldest first: no later file is older, but the size may still be over
        if f.path == keep:
            continue
        lock = _gone(f.path)
        if lock is None:
            continue  # a live hub writes it
        try:
            size = _remove(f.path)
        finally:
            lock.release()
        total -= f.bytes
        removed += 1
        freed += size
    if removed:
        logger.info("default store retention: removed %d files (%d bytes)", removed, freed)
    return removed, freed


def discard_if_empty(path: str) -> bool:
    """Remove a default store file that holds no run (its hub logged
    nothing); called by the hub that wrote it, still holding its lock."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (runs,) = conn.execute("SELECT count(*) FROM runs").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    if runs:
        return False
    _remove(path)
    logger.debug("store %s held no run: removed", path)
    return True


def live_store_files(paths: Iterable[str]) -> set[str]:
    """Those of ``paths`` a live hub writes (their lock is held). Probing
    takes the lock for an instant with a read-only descriptor, writing
    nothing; where locks cannot be probed (Windows) none counts as live."""
    live: set[str] = set()
    if fcntl is None:  # pragma: no cover - Windows
        return live
    for path in paths:
        try:
            fd = os.open(
                path + ".lock", os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            )
        except OSError:
            continue  # no lock file: never opened by a hub, or removed
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            live.add(path)
        finally:
            os.close(fd)  # (closing lets go of a lock taken here)
    return live
