"""The spool: events a process accepted (``log()`` returned) but could not
hand to any hub before it ended — its host was gone and none took over, a
forked child's parent stopped reading — kept on disk until a hub with a
store takes them.

- Writing (:func:`spool`): one file per ending process,
  ``<home>/spool/<machine>-<pid>-<time>.json``, written to a temporary name
  and renamed into place (owner-only), so a reader never sees half a file.
  The events are kept in the form joined processes send them (``ts``,
  type, run, step, payload, rank): not numbered yet.
- Taking (:func:`ingest`): a hub that hosts with a store (the default store,
  ``stream-hub serve``) claims each file by renaming it (only one hub wins a
  rename), submits its events — numbered now, their times kept, so they
  land in their runs' curves where they belong — and removes it.

An event the host received but whose acknowledgement was lost with the
host may be spooled too, and then appear twice: the spool prefers a
duplicate to a loss.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..core.intake import Submission
from ..errors import StreamHubError
from ..home import ensure_home, ensure_private_directory, home_directory, machine_name
from .channel import ProtocolError, decode_events
from .shm_ring import process_alive

__all__ = ["ingest", "spool", "spool_directory"]

logger = logging.getLogger(__name__)

_SUFFIX = ".json"
_TAKEN = ".taken-"
#: A claimed file older than this whose taker is gone is claimed again.
_STALE_CLAIM_S = 600.0
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def spool_directory() -> Path:
    """``<home>/spool`` (not created)."""
    return home_directory() / "spool"


def spool(events: Iterable[list[Any]]) -> str | None:
    """Keep ``events`` (channel form) for the next hub; the file written,
    None when there were none or it could not be written (logged: these
    events are then lost, and the message says how many)."""
    kept = list(events)
    if not kept:
        return None
    try:
        directory = ensure_private_directory(ensure_home() / "spool")
        name = f"{machine_name()}-{os.getpid()}-{time.time_ns()}{_SUFFIX}"
        temporary = directory / f".{name}.tmp"
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        )
        fd = os.open(temporary, flags, 0o600)
        try:
            data = orjson.dumps({"pid": os.getpid(), "events": kept})
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, directory / name)
    except (OSError, StreamHubError, TypeError, orjson.JSONEncodeError) as exc:
        logger.error("%d events no hub took are lost: they could not be spooled (%s)", len(kept), exc)
        return None
    logger.warning(
        "%d events no hub took are kept in %s; the next hub with a store (or `stream-hub serve`) takes them",
        len(kept),
        directory / name,
    )
    return str(directory / name)


def _claim(directory: Path) -> list[Path]:
    """Rename every spool file (and stale claims) to a claim of this process."""
    claimed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return claimed
    now = time.time()
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue  # being written
        stale = False
        if _TAKEN in name:
            with contextlib.suppress(OSError, ValueError):
                taker = int(name.rsplit(_TAKEN, 1)[1])
                stale = now - entry.stat(
                    follow_symlinks=False
                ).st_mtime > _STALE_CLAIM_S and not process_alive(taker)
            if not stale:
                continue
        elif not name.endswith(_SUFFIX):
            continue
        base = name.rsplit(_TAKEN, 1)[0] if stale else name
        target = directory / f"{base}{_TAKEN}{os.getpid()}"
        try:
            os.rename(entry.path, target)
        except OSError:
            continue  # another hub took it first
        claimed.append(target)
    return claimed


def ingest(submit: Callable[[Sequence[Submission]], object], directory: Path | None = None) -> int:
    """Submit the events of every spool file to a hub (``submit``: its
    ``submit_many``) and remove the files; how many events."""
    directory = spool_directory() if directory is None else directory
    if not directory.is_dir():
        return 0
    total = 0
    for path in sorted(_claim(directory)):
        try:
            with open(path, "rb") as f:
                document = orjson.loads(f.read())
            events = decode_events(document["events"])
        except (OSError, orjson.JSONDecodeError, ProtocolError, KeyError, TypeError) as exc:
            logger.error("spool file %s cannot be read (%s); left as it is", path, exc)
            continue
        submit(events)
        total += len(events)
        with contextlib.suppress(OSError):
            os.unlink(path)
        logger.info("took %d spooled events of pid %s from %s", len(events), document.get("pid"), path.name)
    return total
