"""The shared-memory ring a joined process writes its events into, and its hub reads.

One ring per writing process (a joined process or a forked child): a file
``<registry directory>/hub-<key>.ring-<pid>-<source>``, owner-only
(:func:`~stream_hub.private_files.open_private`, never through a symlink),
mapped with ``mmap`` by the writer and by the hub. A file, not
``multiprocessing.shared_memory``: Python 3.11 unlinks a segment when its
creator exits, and a dying process's last events must stay readable. In
``$XDG_RUNTIME_DIR`` (tmpfs) its pages never go to a disk.

Layout (little-endian)::

    0    magic "SHRING01", u32 layout version, u32 header size
    16   u64 capacity (bytes of the data area), u64 writer pid, f64 created
    64   u64 head      (writer: bytes written since creation)
    72   u64 dropped   (writer: events dropped so far, the ring being full)
    80   u64 closed    (writer: 1 once it writes no more)
    128  u64 tail      (reader: bytes read; on its own cache line)
    256  the data area, used as a circular buffer of records

A record: ``u32 length`` (the whole record), ``u8 kind``, ``u8 flags``,
``u16 run length``, ``f64 ts``, ``i64 step``, ``i32 rank``, the run's name
(UTF-8), then the body: a metric's values as a JSON object (NaN and the
infinities as the strings the channel uses); another event as the JSON
array a ``batch`` message carries (:func:`~.channel.encode_events`); a drop
notice as ``{"dropped": total, "runs": {run: total}}``.

One writer (its threads take the writer's lock), one reader (the hub holds
an exclusive ``flock`` on the file while it reads, so two hubs never read
one ring). The writer publishes a record by storing ``head`` after the
record's bytes; the reader stores ``tail`` after it has handed the records
to its hub. On x86-64 stores are seen in program order (TSO), so a reader
that sees a head sees the bytes before it; on weakly ordered CPUs a reader
that finds a record it cannot parse leaves it and tries again at its next
read (:attr:`RingReader.torn`), before it gives the rest up as corrupt.

Full: the event is dropped and counted (``dropped``, and per run); once
there is room again, a drop notice goes in before the next event, so the
hub announces the loss (a ``gap``) where it happened.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ..events import wire_numbers
from ..private_files import open_private

__all__ = [
    "KIND_EVENT",
    "KIND_METRIC",
    "KIND_NOTICE",
    "RING_BYTES",
    "RingCorrupt",
    "RingReader",
    "RingWriter",
    "process_alive",
    "ring_path",
    "ring_prefix",
    "rings_of",
    "writer_pid",
]

MAGIC = b"SHRING01"
LAYOUT = 1
HEADER = 256
#: The data area of a ring: about 80 000 metric events of four values.
RING_BYTES = 8 * 1024 * 1024
_IDENT = struct.Struct("<8sII")
_GEOMETRY = struct.Struct("<QQd")
_U64 = struct.Struct("<Q")
HEAD_AT, DROPPED_AT, CLOSED_AT, TAIL_AT = 64, 72, 80, 128
#: length, kind, flags, run length, ts, step, rank
RECORD = struct.Struct("<IBBHdqi")
KIND_METRIC, KIND_EVENT, KIND_NOTICE = 1, 2, 3
_RECORD_SIZE = RECORD.size
_pack_record = RECORD.pack_into
_pack_u64 = _U64.pack_into
_dumps = orjson.dumps
_HAS_STEP, _HAS_RANK = 1, 2
#: A record larger than this share of the ring is refused (it could never
#: fit beside the others).
_LARGEST_SHARE = 4


def ring_path(channel_path: str, pid: int, source: str) -> Path:
    """Where a process's ring lives, beside the hub's channel socket."""
    return Path(f"{ring_prefix(channel_path)}{pid}-{source}")


def ring_prefix(channel_path: str) -> str:
    """The start of the names of the rings of the hub whose channel socket is ``channel_path``."""
    base = channel_path[:-5] if channel_path.endswith(".sock") else channel_path
    return f"{base}.ring-"


#: The suffix of a ring being made.
NEW = ".new"


def rings_of(channel_path: str, making: bool = False) -> list[Path]:
    """Every ring file of the hub whose channel socket is ``channel_path``
    (``making``: also those being made)."""
    prefix = ring_prefix(channel_path)
    directory, _, start = prefix.rpartition("/")
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [
        Path(directory) / name
        for name in names
        if name.startswith(start) and ("." not in name[len(start) :] or (making and name.endswith(NEW)))
    ]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped yet, does not)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def writer_pid(path: Path) -> int | None:
    """The pid a ring's name says made it."""
    pid = path.name.rsplit(".ring-", 1)[-1].partition("-")[0]
    return int(pid) if pid.isdigit() else None


class RingCorrupt(Exception):
    """A ring file that is not a ring of this layout, or holds a record that cannot be one."""


class RingWriter:
    """The writing end of a ring: creates the file, writes records (any thread).

    Raises:
        OSError, StreamHubError: the file cannot be created (an existing one,
            a symlink, another user's).
    """

    def __init__(self, path: Path, capacity: int = RING_BYTES, rank: int | None = None) -> None:
        self.path = path
        self.capacity = capacity
        # Made under another name and renamed once its header is written: a
        # hub never finds a ring half made (one left by a writer that died
        # meanwhile is removed by the hub's scan).
        making = path.with_name(path.name + NEW)
        fd = open_private(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, what="shared-memory ring")
        try:
            os.ftruncate(fd, HEADER + capacity)
            self._map = mmap.mmap(fd, HEADER + capacity)
            _IDENT.pack_into(self._map, 0, MAGIC, LAYOUT, HEADER)
            _GEOMETRY.pack_into(self._map, 16, capacity, os.getpid(), time.time())
            os.rename(making, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                making.unlink()
            raise
        self._fd = fd
        self._lock = threading.Lock()
        self._head = 0
        self._tail = 0  # the reader's, as last read (refreshed when the ring looks full)
        self._largest = capacity // _LARGEST_SHARE
        self._rank = -1 if rank is None else rank
        self._flags = _HAS_STEP | (0 if rank is None else _HAS_RANK)
        self._run: str | None = None
        self._run_bytes = b""
        self.closed = False
        self.written = 0  # events written
        self.dropped = 0  # events dropped: the ring was full (or an event too large for it)
        self.dropped_runs: Counter[str] = Counter()
        self._notice = False  # a drop notice is owed before the next event
        self._smooth = True  # open, no notice owed: metric() may take its short way

    # -- writing (the training threads) -----------------------------------------------------

    def set_rank(self, rank: int | None) -> None:
        """Stamp the metric events written from now on with ``rank`` (a rank
        the process learned after joining: ``TrainingStreamServer.adopt_rank``)."""
        with self._lock:
            self._rank = -1 if rank is None else rank
            self._flags = _HAS_STEP | (0 if rank is None else _HAS_RANK)

    def metric(self, ts: float, run: str, step: int | None, values: dict[str, Any]) -> bool:
        """Write one checked metric event; False when this ring takes no more
        (closed): the caller sends it another way."""
        # HOT PATH (training thread, every log() while joined over shared memory):
        # one orjson call, one header packed into the map, one copy, one 8-byte
        # store; the uncommon cases (a wrap, a full ring, a notice owed) below.
        body = _dumps(values)
        if b"null" in body:  # a NaN or an infinity (orjson writes null): the wire's strings
            body = _dumps(wire_numbers(values))
        if run is not self._run:
            self._run, self._run_bytes = run, run.encode()
        rest = self._run_bytes + body
        flags = self._flags
        if step is None:
            step, flags = 0, flags & ~_HAS_STEP
        size = _RECORD_SIZE + len(rest)
        lock = self._lock
        lock.acquire()  # explicit acquire/release: half the cost of ``with``
        try:
            head, capacity = self._head, self.capacity
            at = head % capacity
            if self._smooth and at + size <= capacity and head + size - self._tail <= capacity:
                at += HEADER
                mapped = self._map
                _pack_record(mapped, at, size, KIND_METRIC, flags, len(self._run_bytes), ts, step, self._rank)
                mapped[at + _RECORD_SIZE : at + size] = rest
                self._head = head = head + size
                _pack_u64(mapped, HEAD_AT, head)  # publishes the record
                self.written += 1
                return True
        finally:
            lock.release()
        record = RECORD.pack(size, KIND_METRIC, flags, len(self._run_bytes), ts, step, self._rank) + rest
        return self._put(record, run)

    def event(self, event: list[Any]) -> bool:
        """Write one event in the channel's form ``[ts, type, run, step, payload, rank]``."""
        body = orjson.dumps(event)
        return self._put(RECORD.pack(RECORD.size + len(body), KIND_EVENT, 0, 0, 0.0, 0, 0) + body, event[2])

    def _put(self, record: bytes, run: str | None) -> bool:
        size = len(record)
        with self._lock:
            if self.closed:
                return False
            need = size + (self._notice_size() if self._notice else 0)
            if size > self._largest or self._head + need - self._tail > self.capacity:
                self._tail = _U64.unpack_from(self._map, TAIL_AT)[0]
                if size > self._largest or self._head + need - self._tail > self.capacity:
                    self._drop(run)
                    return True
            if self._notice:
                self._notice = False
                self._copy(self._notice_record())
            self._copy(record)
            self.written += 1
            self._smooth = not (self.closed or self._notice)
        return True

    def count_drop(self, run: str | None) -> None:
        """An event of ``run`` that never got here (it could not be encoded):
        counted and announced like one the full ring refused."""
        with self._lock:
            if not self.closed:
                self._drop(run)

    def _drop(self, run: str | None) -> None:
        self.dropped += 1
        if run is not None:
            self.dropped_runs[run] += 1
        _U64.pack_into(self._map, DROPPED_AT, self.dropped)
        self._notice = True
        self._smooth = False

    def _notice_record(self) -> bytes:
        body = orjson.dumps({"dropped": self.dropped, "runs": dict(self.dropped_runs)})
        return RECORD.pack(RECORD.size + len(body), KIND_NOTICE, 0, 0, time.time(), 0, 0) + body

    def _notice_size(self) -> int:
        return len(self._notice_record())

    def _copy(self, record: bytes) -> None:
        head, capacity, size = self._head, self.capacity, len(record)
        at = head % capacity
        end = at + size
        if end <= capacity:
            self._map[HEADER + at : HEADER + end] = record
        else:
            first = capacity - at
            self._map[HEADER + at : HEADER + capacity] = record[:first]
            self._map[HEADER : HEADER + size - first] = record[first:]
        self._head = head + size
        _U64.pack_into(self._map, HEAD_AT, self._head)  # publishes the record

    # -- state --------------------------------------------------------------------------------

    def unread(self) -> int:
        """Bytes the reader has not taken yet."""
        return self._head - int(_U64.unpack_from(self._map, TAIL_AT)[0])

    def status(self) -> dict[str, Any]:
        return {
            "ring": str(self.path),
            "ring_bytes": self.capacity,
            "unread_bytes": self.unread() if not self._map.closed else 0,
            "written": self.written,
            "dropped": self.dropped,
        }

    def close(self) -> None:
        """Write no more (the reader then removes the file once it has read it all)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._smooth = False
            if self._notice:  # the last drops, said in the header all the same
                with contextlib.suppress(ValueError):
                    if self._head + self._notice_size() - self._tail <= self.capacity:
                        self._copy(self._notice_record())
            _U64.pack_into(self._map, CLOSED_AT, 1)
            self._map.close()
            os.close(self._fd)

    def release_after_fork(self) -> None:
        """In a forked child: let go of the parent's ring (never written from here)."""
        self.closed = True
        self._smooth = False
        with contextlib.suppress(Exception):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)


class RingReader:
    """The reading end of a ring (a hub; or the writer itself reading out
    what no hub took). Holds the file's ``flock`` from open to close.

    Raises:
        BlockingIOError: another reader holds the ring.
        RingCorrupt: the file is not a ring of this layout.
        OSError, StreamHubError: it cannot be opened (gone, a symlink, another user's).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.closed_map = False
        import fcntl  # POSIX: rings are read only where the channel is a Unix socket

        fd = open_private(path, os.O_RDWR, what="shared-memory ring")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            size = os.fstat(fd).st_size
            if size < HEADER:
                raise RingCorrupt(f"{path} is not a shared-memory ring (too short)")
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        magic, layout, header = _IDENT.unpack_from(self._map, 0)
        capacity, pid, created = _GEOMETRY.unpack_from(self._map, 16)
        if magic != MAGIC or layout != LAYOUT or header != HEADER or capacity + HEADER != size:
            self.close()
            raise RingCorrupt(f"{path} is not a shared-memory ring of layout {LAYOUT}")
        self.capacity = int(capacity)
        self.pid = int(pid)
        self.created = float(created)
        self.tail = _U64.unpack_from(self._map, TAIL_AT)[0]
        self.announced = 0  # drops already announced (by notices)
        self.torn = 0  # reads that found a record not complete yet
        self._read_to = self.tail

    @property
    def writer_closed(self) -> bool:
        return bool(_U64.unpack_from(self._map, CLOSED_AT)[0])

    @property
    def dropped(self) -> int:
        """Events the writer dropped so far (the ring full)."""
        return int(_U64.unpack_from(self._map, DROPPED_AT)[0])

    def pending(self) -> int:
        """Bytes written and not read yet."""
        return int(_U64.unpack_from(self._map, HEAD_AT)[0]) - int(self.tail)

    def read(self, on_notice: Callable[[dict[str, Any]], list[Any] | None]) -> list[Any]:
        """Every complete record since the last read, in the channel's event
        form (``[ts, type, run, step, payload, rank]``); a drop notice is
        handed to ``on_notice``, whose answer (an event, or None) takes its
        place. Does not move the tail: call :meth:`done` once the events are
        handed on.

        Raises:
            RingCorrupt: a record cannot be one (the rest of the ring is skipped).
        """
        head = int(_U64.unpack_from(self._map, HEAD_AT)[0])
        tail, capacity = self.tail, self.capacity
        if head == tail:
            self._read_to = tail
            return []
        if not 0 < head - tail <= capacity:
            self._read_to = head
            raise RingCorrupt(f"{self.path}: head {head} and tail {tail} are not a ring's")
        at, end = tail % capacity, (tail % capacity) + (head - tail)
        if end <= capacity:
            data = self._map[HEADER + at : HEADER + end]
        else:
            data = self._map[HEADER + at : HEADER + capacity] + self._map[HEADER : HEADER + end - capacity]
        events: list[Any] = []
        pos, total, unpack, loads = 0, len(data), RECORD.unpack_from, orjson.loads
        try:
            while pos < total:
                size, kind, flags, run_len, ts, step, rank = unpack(data, pos)
                if size < RECORD.size + run_len or pos + size > total:
                    raise RingCorrupt(f"{self.path}: a record of {size} bytes at {tail + pos}")
                start = pos + RECORD.size
                if kind == KIND_METRIC:
                    run = data[start : start + run_len].decode()
                    values = loads(data[start + run_len : pos + size])
                    events.append(
                        [
                            ts,
                            "metric",
                            run,
                            step if flags & _HAS_STEP else None,
                            values,
                            rank if flags & _HAS_RANK else None,
                        ]
                    )
                elif kind == KIND_EVENT:
                    events.append(loads(data[start : pos + size]))
                elif kind == KIND_NOTICE:
                    notice = loads(data[start : pos + size])
                    said = on_notice(notice) if isinstance(notice, dict) else None
                    if said is not None:
                        events.append(said)
                else:
                    raise RingCorrupt(f"{self.path}: a record of kind {kind} at {tail + pos}")
                pos += size
        except (struct.error, UnicodeDecodeError, orjson.JSONDecodeError, RingCorrupt) as exc:
            self.torn += 1
            if self.torn < 3 and events == [] and not isinstance(exc, RingCorrupt):
                self._read_to = tail  # maybe not all there yet (see the module docstring)
                return []
            self._read_to = head
            raise RingCorrupt(f"{self.path}: {exc}") from None
        self.torn = 0
        self._read_to = head
        return events

    def done(self) -> None:
        """The events of the last :meth:`read` are handed on: the writer may reuse their room."""
        self.tail = self._read_to
        _U64.pack_into(self._map, TAIL_AT, self.tail)

    def close(self) -> None:
        """Let go of the ring (and of its lock)."""
        if self.closed_map:
            return
        self.closed_map = True
        with contextlib.suppress(Exception):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def remove(self) -> None:
        """Delete the file (all read, its writer done) and let go of it."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.close()
