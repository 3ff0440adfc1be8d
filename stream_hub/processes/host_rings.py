"""The host side of joining over shared memory: reading every ring of this hub.

Runs on the host's loop. A ring (:mod:`.shm_ring`) is read from the moment
its writer says hello with its path (:meth:`HostRings.adopt`), or, for a
ring nobody announced — a forked child of a host that died, a process
SIGKILLed while its host changed — from the next scan of the registry
directory (every ``SCAN_INTERVAL``). Each read hands the events to the
hub's intake (numbered there, like a batch from the socket channel) and
only then moves the ring's tail, so an event is taken once, whichever host
reads it: a host that stops reads every ring one last time and lets go of
them before it hands its history over; its successor goes on from each
ring's tail.

Wake-ups: none from the writer (a training thread pays no syscall per
event). The hub polls: every ``ACTIVE_POLL`` while some ring had events in
the last ``ACTIVE_FOR`` seconds, else every ``IDLE_POLL``. So an event
waits at most ``IDLE_POLL`` (10 ms) before the hub takes it, 2 ms in a
steady stream; with no ring at all, only the scan runs, and a joiner's
hello wakes the poller at once.

A ring whose writer closed it or died (its pid gone) is read to its end,
its last drops announced, and its file removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.hub import Hub
from ..core.intake import Submission
from ..errors import StreamHubError
from .channel import ProtocolError, decode_events
from .shm_ring import NEW, RingCorrupt, RingReader, process_alive, ring_prefix, rings_of, writer_pid

__all__ = ["ACTIVE_POLL", "IDLE_POLL", "HostRings"]

logger = logging.getLogger(__name__)

#: Seconds between two reads of the rings while events flow.
ACTIVE_POLL = 0.002
#: ... and when none came for ``ACTIVE_FOR`` seconds.
IDLE_POLL = 0.010
ACTIVE_FOR = 1.0
#: Seconds between two scans of the directory for rings nobody announced,
#: and checks of whether each ring's writer is still there.
SCAN_INTERVAL = 1.0


@dataclasses.dataclass
class _Ring:
    reader: RingReader
    source: str  # the writer's source id (from the file name)
    runs: dict[str, int] = dataclasses.field(default_factory=dict)  # drops per run said so far
    events: int = 0


class HostRings:
    """Every ring of one hub (see the module docstring).

    Args:
        hub: the hub the events go into.
        credit: told, per read, which source's ring gave which events (the
            channel's list of publishers counts them).
    """

    def __init__(self, hub: Hub, credit: Callable[[str, list[Submission]], None] | None = None) -> None:
        self.hub = hub
        self._credit = credit
        self.rings: dict[str, _Ring] = {}
        self._channel_path: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._nudge: asyncio.Event | None = None  # set by a hello while no ring is read
        self._active_until = 0.0
        self._next_scan = 0.0
        self.read_events = 0  # events taken from rings
        self.announced_drops = 0  # events the writers dropped, announced as gaps
        self.corrupt = 0  # rings given up as corrupt

    # -- lifecycle (the loop) -------------------------------------------------------------

    def start(self, channel_path: Path) -> None:
        """Read the rings beside ``channel_path`` from now on (a task on the running loop)."""
        self._channel_path = str(channel_path)
        self._nudge = asyncio.Event()
        self.scan()
        self._task = asyncio.get_running_loop().create_task(self._poll(), name="stream-hub-rings")

    def stop(self) -> None:
        """Read every ring one last time and let go of them all (a stop,
        before the history is handed over: the successor goes on from here)."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed: it runs no more anyway
                task.cancel()
        try:
            self.read_all()
            self._remove_finished()
        except Exception:  # letting go of the rings matters more: a successor reads them
            logger.exception("the last read of the shared-memory rings failed")
        rings, self.rings = self.rings, {}
        for ring in rings.values():
            ring.reader.close()

    def release_after_fork(self) -> None:
        """In a forked child of the host: let go of the parent's rings (and
        so of their locks, which a successor would otherwise wait for)."""
        rings, self.rings = self.rings, {}
        for ring in rings.values():
            ring.reader.close()
        self._task = None

    # -- rings ------------------------------------------------------------------------------

    def adopt(self, path: Any) -> bool:
        """A joiner's hello names its ring: read it from now on; whether it is read."""
        if self._channel_path is None or not isinstance(path, str):
            return False
        if path in self.rings:
            return True
        if Path(path) not in rings_of(self._channel_path):
            logger.warning("a joiner named a ring that is not one of this hub's: %r", path[:200])
            return False
        return self._open(Path(path))

    def _open(self, path: Path) -> bool:
        try:
            reader = RingReader(path)
        except BlockingIOError:
            logger.debug("ring %s is read by another hub", path)
            return False
        except (OSError, StreamHubError, RingCorrupt) as exc:
            pid = writer_pid(path)
            if isinstance(exc, RingCorrupt) and pid is not None and not process_alive(pid):
                logger.warning("removing %s, left by a process that died: %s", path, exc)
                with contextlib.suppress(OSError):
                    path.unlink()
            else:
                logger.warning("cannot read ring %s: %s", path, exc)
            return False
        name = path.name
        source = name.rsplit(".ring-", 1)[-1].partition("-")[2] or name
        self.rings[str(path)] = _Ring(reader, source)
        self._active_until = time.monotonic() + ACTIVE_FOR
        if self._nudge is not None:
            self._nudge.set()  # (on the loop: hellos and scans run there)
        return True

    def scan(self) -> None:
        """Adopt the rings nobody announced; remove those whose writer is
        done (closed, or dead) once read to the end."""
        if self._channel_path is None:
            return
        for path in rings_of(self._channel_path, making=True):
            if path.name.endswith(NEW):
                pid = writer_pid(path)
                if pid is not None and not process_alive(pid):  # its writer died making it: nothing in it
                    with contextlib.suppress(OSError):
                        path.unlink()
            elif str(path) not in self.rings:
                self._open(path)
        self._remove_finished()

    def _remove_finished(self) -> None:
        """Read to the end and remove the rings whose writer is done (closed, or dead)."""
        for key, ring in list(self.rings.items()):
            reader = ring.reader
            if not (reader.writer_closed or not process_alive(reader.pid)):
                continue
            self._read(ring)
            if reader.pending() == 0:
                self._announce_rest(ring)
                del self.rings[key]
                reader.remove()
                logger.debug("ring %s read to its end and removed", reader.path)

    async def _poll(self) -> None:
        nudge = self._nudge
        assert nudge is not None  # made by start(), which runs this
        while True:
            now = time.monotonic()
            if not self.rings:
                # Nothing to read until the next scan, or a joiner's hello (a nudge).
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(nudge.wait(), max(0.0, self._next_scan - now))
                nudge.clear()
            else:
                await asyncio.sleep(ACTIVE_POLL if now < self._active_until else IDLE_POLL)
            try:
                if self.read_all():
                    self._active_until = time.monotonic() + ACTIVE_FOR
                if time.monotonic() >= self._next_scan:
                    self._next_scan = time.monotonic() + SCAN_INTERVAL
                    self.scan()
            except Exception:  # a bug here must not end the reads of every other ring
                logger.exception("reading the shared-memory rings failed")

    def read_all(self) -> int:
        """Take what every ring holds into the hub; how many events."""
        return sum(self._read(ring) for ring in list(self.rings.values()))

    def read_source(self, source: str) -> int:
        """Take what one joiner's ring holds (it asked: a flush); what it still holds, in bytes."""
        for ring in list(self.rings.values()):
            if ring.source == source:
                self._read(ring)
                return ring.reader.pending()
        return 0

    def _read(self, ring: _Ring) -> int:
        reader = ring.reader
        if reader.closed_map:
            return 0
        try:
            events = reader.read(lambda notice: self._notice(ring, notice))
        except RingCorrupt as exc:
            self.corrupt += 1
            logger.error("a shared-memory ring is corrupt, the rest of it is skipped: %s", exc)
            reader.done()
            self._gap(None, {"lost": None, "reason": "rejected", "pid": reader.pid})
            return 0
        if not events:
            self._announce_idle(ring)
            return 0
        submissions = self._submissions(events)
        if submissions:
            self.hub.submit_many(submissions)
            if self._credit is not None:
                self._credit(ring.source, submissions)
        reader.done()  # only now: the writer may reuse the room
        ring.events += len(events)
        self.read_events += len(events)
        return len(events)

    def _submissions(self, events: list[Any]) -> list[Submission]:
        out: list[Submission] = []
        stretch: list[Any] = []
        for event in events:
            if type(event) is tuple:  # a gap (see _notice)
                out += self._decode(stretch)
                stretch = []
                out.append(event)
            else:
                stretch.append(event)
        out += self._decode(stretch)
        return out

    def _decode(self, events: list[Any]) -> list[Submission]:
        if not events:
            return []
        try:
            return decode_events(events)
        except ProtocolError:
            pass
        kept: list[Submission] = []
        for event in events:  # one bad event must not cost the others
            try:
                kept += decode_events([event])
            except ProtocolError as exc:
                self.hub.counters.rejected += 1
                logger.warning("an event in a shared-memory ring is rejected: %s", exc)
        return kept

    def take_orphans(self, directory: Path, hub_alive: Callable[[str], bool]) -> int:
        """Rings of other hubs' keys in ``directory`` whose writer died and
        whose hub is gone too (``hub_alive(key)`` false: no host of that key
        would ever read them): read into this hub, like the spool, and
        removed; how many events. For a hub with a store (what it takes is
        kept). One reader at a time, so a hub of that key starting meanwhile
        never reads an event twice."""
        own = Path(ring_prefix(self._channel_path)).name if self._channel_path else None
        taken = 0
        for path in sorted(directory.glob("hub-*.ring-*")):
            name = path.name
            key = name[len("hub-") :].rsplit(".ring-", 1)[0]
            pid = writer_pid(path)
            if name.endswith(NEW) or (own is not None and name.startswith(own)) or pid is None:
                continue
            if process_alive(pid) or hub_alive(key):
                continue  # its writer or its hub will see to it
            try:
                reader = RingReader(path)
            except (OSError, StreamHubError, RingCorrupt) as exc:
                logger.debug("left orphan ring %s: %s", path, exc)
                continue
            ring = _Ring(reader, name.rsplit(".ring-", 1)[1].partition("-")[2] or name)
            taken += self._read(ring)
            self._announce_rest(ring)
            reader.remove()
            logger.info("took %d events from ring %s, left by pid %d with no hub", ring.events, name, pid)
        return taken

    # -- drops -----------------------------------------------------------------------------

    def _notice(self, ring: _Ring, notice: dict[str, Any]) -> Any:
        """A drop notice in a ring: counted on the runs, announced as a ``gap``
        where the events went missing."""
        total = notice.get("dropped")
        runs = notice.get("runs")
        if type(total) is not int or not isinstance(runs, dict):
            return None
        per_run: dict[str, int] = {}
        for run, count in runs.items():
            if isinstance(run, str) and type(count) is int and count > ring.runs.get(run, 0):
                per_run[run] = count - ring.runs.get(run, 0)
                ring.runs[run] = count
                self.hub.runs.forwarder_dropped(run, ring.source, count)
        lost = total - ring.reader.announced
        if lost <= 0:
            return None  # announced already, from the header (see _announce_idle)
        ring.reader.announced = total
        self.announced_drops += lost
        data = {"lost": lost, "reason": "overflow", "pid": ring.reader.pid, "runs": per_run}
        return ("gap", None, None, data, time.time(), None)

    def _announce_idle(self, ring: _Ring) -> None:
        """Drops the header counts that no notice said, while nothing follows
        them in the ring (the writer had no room since): announced now, where
        they happened (after everything read); their runs are counted when
        the writer's notice comes."""
        reader = ring.reader
        dropped = reader.dropped  # before the head: a record after it would be read first
        if dropped > reader.announced and reader.pending() == 0:
            lost = dropped - reader.announced
            reader.announced = dropped
            self.announced_drops += lost
            self._gap(None, {"lost": lost, "reason": "overflow", "pid": reader.pid})

    def _announce_rest(self, ring: _Ring) -> None:
        """The writer is gone: drops its header counts that no notice said."""
        lost = ring.reader.dropped - ring.reader.announced
        if lost > 0:
            ring.reader.announced += lost
            self.announced_drops += lost
            self._gap(None, {"lost": lost, "reason": "overflow", "pid": ring.reader.pid})

    def _gap(self, run: str | None, data: dict[str, Any]) -> None:
        self.hub.submit_many([("gap", run, None, data, time.time(), None)])

    def status(self) -> dict[str, int]:
        return {
            "rings": len(self.rings),
            "events": self.read_events,
            "dropped": self.announced_drops,
            "corrupt": self.corrupt,
        }
