"""One writer per store: an exclusive ``flock`` on a file next to it
(``runs.db.lock``), which says who holds it.

The kernel lets go of the lock when its holder exits or is killed (even with
SIGKILL), so a successor never waits for a dead hub. The lock file itself
stays: removing it would let two processes lock two different files of the
same name. A forked child lets go of its copy of the descriptor (the lock
stays its parent's).

The lock file is this user's own (:func:`~stream_hub.private_files.open_private`):
created 0600, never opened through a symlink (one planted in a shared
directory would have the lock record overwrite its target), and refused when
another user's: what such a file says about a holder is not believed (it
could name any pid and any dashboard), and it is never written.

On Windows the lock is ``msvcrt.locking`` on the lock file's first byte
(also released when its holder dies); who holds it cannot be read there.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import weakref

import orjson

from ..errors import StoreError, StoreLockedError
from ..private_files import open_private
from ..runtime import hooks

if sys.platform == "win32":  # pragma: no cover - Windows
    import msvcrt
else:
    import fcntl

__all__ = ["StoreLock"]

_HELD: weakref.WeakSet[StoreLock] = weakref.WeakSet()


class StoreLock:
    """The exclusive lock of the store at ``path`` (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lock"
        self._fd: int | None = None
        hooks.after_fork_in_child("store.lock", _after_fork_in_child)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, trying for up to ``wait`` seconds.

        Raises:
            StoreLockedError: another process (or server) holds it; its
                message names the holder and its dashboard.
            StoreError: the lock file is a symlink, not a file, or another
                user's (the message names it and its owner).
        """
        fd = open_private(
            self.lock_path,
            os.O_RDWR | os.O_CREAT,
            what="store lock file",
            error=StoreError,
            remedy=(
                "remove it (its owner or root can) if no hub of theirs writes this store, or give "
                "this hub a store of your own (StreamConfig(store=...) / STREAM_HUB_STORE)"
            ),
        )
        deadline = time.monotonic() + wait
        pause = threading.Event()  # never set: a bounded wait between attempts
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    pid, urls = holder.get("pid"), holder.get("urls")
                    raise StoreLockedError(
                        self.path,
                        pid if isinstance(pid, int) else None,
                        {str(k): str(v) for k, v in urls.items()} if isinstance(urls, dict) else None,
                    )
                pause.wait(0.02)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _HELD.add(self)
        self.describe()

    def describe(self, urls: dict[str, str] | None = None) -> None:
        """Write who holds the lock (this process, and its hub's URLs once serving)."""
        fd = self._fd
        if fd is None:
            return
        text = orjson.dumps({"pid": os.getpid(), "urls": urls or {}, "since": time.time()})
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, text)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        _HELD.discard(self)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last descriptor releases the flock

    def forget_after_fork(self) -> None:
        """In a forked child: close this copy of the descriptor (the parent keeps the lock)."""
        self.release()


def _holder(fd: int) -> dict[str, object]:
    """What the lock file open at ``fd`` (ours: checked when opened) says
    about its holder (empty if it says nothing readable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        value = orjson.loads(os.read(fd, 4096) or b"{}")
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - Windows
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _after_fork_in_child() -> None:
    for lock in list(_HELD):
        lock.forget_after_fork()
