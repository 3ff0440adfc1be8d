"""Files only their owner may read or write: the store and its lock, the hub
registry's records and locks (contract v3, "Same user by default").

:func:`open_private` opens such a file the one safe way:

- never through a symbolic link (``O_NOFOLLOW``): a link planted in a shared
  directory would have us write, truncate or chmod the file it points at;
- created owner-only (0600) by the ``open`` itself, whatever the umask, so
  there is no moment when another user could open it;
- checked on the descriptor it opened (``fstat``: no race with the path): a
  regular file of this user. Another user's is refused, neither trusted
  nor written; one of ours that is open to others is tightened to 0600,
  with a warning.

It never truncates (``O_TRUNC`` would act before the checks): a caller
truncates once the file is known to be its own. Where there are no uids nor
``O_NOFOLLOW`` (Windows) it is a plain open.

:func:`private_opener` hands the same to :func:`open` as its ``opener``.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable

from .errors import StreamHubError

__all__ = ["open_private", "private_opener"]

logger = logging.getLogger(__name__)

_REMEDY = "remove it (its owner or root can), or use a path of your own"


def open_private(
    path: str | os.PathLike[str],
    flags: int,
    *,
    what: str,
    error: type[StreamHubError] = StreamHubError,
    remedy: str = _REMEDY,
) -> int:
    """Open ``path`` with ``os.open`` ``flags`` (``O_CREAT`` creates it
    0600) as a private file, see the module docstring; the descriptor
    (close-on-exec). ``what`` names the file in messages ("store lock
    file"), ``remedy`` says what to do about a file that is not ours.

    Raises:
        error: ``path`` is a symbolic link, not a regular file, or another
            user's (the message names it, its owner and ``remedy``).
        OSError: it cannot be opened (``FileNotFoundError`` without ``O_CREAT``).
    """
    if flags & os.O_TRUNC:
        raise ValueError("open_private never truncates: truncate after it returns")
    # O_NONBLOCK: a FIFO planted under the name must not make the open wait
    # for a writer; the descriptor is made blocking again once checked.
    nonblock = getattr(os, "O_NONBLOCK", 0)
    extra = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags | extra | nonblock, 0o600)
    except OSError:
        if os.path.islink(path):  # ELOOP on Linux, EMLINK on FreeBSD: ask the path instead
            raise error(
                f"{what} {os.fspath(path)} is a symbolic link; stream_hub never follows one there "
                f"(another user may have planted it): {remedy}"
            ) from None
        raise
    try:
        _check(fd, path, what, error, remedy)
        if nonblock:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_opener(
    what: str, error: type[StreamHubError] = StreamHubError, remedy: str = _REMEDY
) -> Callable[[str, int], int]:
    """An ``opener`` for :func:`open` that opens with :func:`open_private`."""

    def opener(path: str, flags: int) -> int:
        return open_private(path, flags, what=what, error=error, remedy=remedy)

    return opener


def _check(
    fd: int, path: str | os.PathLike[str], what: str, error: type[StreamHubError], remedy: str
) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {os.fspath(path)} is not a regular file: {remedy}")
    if not hasattr(os, "geteuid"):  # pragma: no cover - Windows: no uids, no modes to tighten
        return
    uid = os.geteuid()
    if info.st_uid != uid:
        raise error(
            f"{what} {os.fspath(path)} belongs to uid {info.st_uid}, not to this user (uid {uid}); "
            f"stream_hub neither trusts nor writes another user's file: {remedy}"
        )
    if info.st_mode & 0o077:
        os.fchmod(fd, 0o600)
        logger.warning(
            "%s %s was open to other users (mode %04o); made it owner-only (0600)",
            what,
            os.fspath(path),
            stat.S_IMODE(info.st_mode),
        )
