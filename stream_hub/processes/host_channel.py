"""The host side: the channel joined processes and forked children publish
through, and the list of publishers ``/api/sources`` shows.

Runs on the host's loop thread. A joiner must say hello with the registry's
join token (and, on Linux, be this user: the host checks the peer's uid);
then each ``batch`` it sends goes into the hub's intake once (a batch number
already taken is acknowledged again, not taken again), and is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.hub import Hub
from ..core.intake import Submission
from ..events import validate_run
from .channel import ChannelClosed, ProtocolError, decode_events, frame, read_frame
from .host_rings import HostRings
from .registry import PROTOCOL_VERSION

__all__ = ["HostChannel", "Source"]

logger = logging.getLogger(__name__)

HELLO_TIMEOUT = 5.0
HELLO_LIMIT = 64 * 1024
BATCH_LIMIT = 64 * 1024 * 1024
# Sources that left are listed this long before they are forgotten.
FORGET_AFTER = 600.0


@dataclasses.dataclass
class Source:
    """One publisher of the hub: the host itself, a joined process or a forked child."""

    source: str
    pid: int
    rank: int | None
    host: str
    role: str
    connected_since: float
    events: int = 0
    dropped: int = 0
    connected: bool = True
    left_at: float | None = None
    runs: set[str] = dataclasses.field(default_factory=set)
    #: How its events come: ``"socket"`` (batches) or ``"shared-memory"`` (a ring).
    path: str = "socket"

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "host": self.host,
            "pid": self.pid,
            "rank": self.rank,
            "role": self.role,
            "events": self.events,
            "dropped": self.dropped,
            "connected": self.connected,
            "connected_since": self.connected_since,
            "path": self.path,
        }


class HostChannel:
    """Accepts joiners on the host's loop and feeds their batches to the hub.

    Args:
        hub: the hub batches go into.
        token: the join token of the registry record.
        welcome: what the host says about itself (epoch, pid, ports, urls).
    """

    def __init__(self, hub: Hub, token: str, welcome: Callable[[], dict[str, Any]]) -> None:
        self.hub = hub
        self.token = token
        self._welcome = welcome
        #: The shared-memory rings of joined processes (read while listening on a Unix socket).
        self.rings = HostRings(hub, self._credit)
        self.sources: dict[str, Source] = {}
        self.acked: dict[str, int] = {}
        self._server: asyncio.AbstractServer | None = None
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._path: Path | None = None
        self._path_id: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self.address = ""
        #: Set while no joiner is connected (a stopping host waits on it: see Hosting.stop).
        self.all_gone = threading.Event()
        self.all_gone.set()

    async def start(self, unix_path: Path | None) -> str:
        """Listen (a Unix socket at ``unix_path``, else loopback TCP); the address."""
        if unix_path is not None and hasattr(socket, "AF_UNIX"):
            with contextlib.suppress(FileNotFoundError):
                unix_path.unlink()
            # Owner-only, set on the socket file itself: the process's umask is
            # not touched (training threads create files meanwhile), and the
            # registry directory (0700) keeps others out before the chmod.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(str(unix_path))
                os.chmod(unix_path, 0o600)
                self._server = await asyncio.start_unix_server(self._handle, sock=sock)
            except BaseException:
                sock.close()
                raise
            self._path = unix_path
            info = unix_path.stat()
            self._path_id = (info.st_dev, info.st_ino)
            self.address = f"unix:{unix_path}"
            self.rings.start(unix_path)
        else:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            port = self._server.sockets[0].getsockname()[1]
            self.address = f"tcp:127.0.0.1:{port}"
        return self.address

    def close(self) -> None:
        """Stop accepting and drop every joiner (they reconnect to whoever hosts next).

        On the loop's thread; once that thread has ended, from any thread
        (the listener of a closed loop still closes; its joiners' connections
        went with the loop's last pass). Safe more than once.
        """
        self.rings.stop()
        server, self._server = self._server, None
        if server is not None:
            try:
                server.close()
            except Exception:  # closing its socket is all that matters here
                logger.debug("closing the channel's listener failed", exc_info=True)
        writers = list(self._writers.values())
        self._writers.clear()
        self.all_gone.set()
        for writer in writers:
            with contextlib.suppress(RuntimeError):  # its loop is closed
                writer.close()
        path, self._path = self._path, None
        if path is not None:
            with contextlib.suppress(OSError):
                # Only our own socket file: a successor may have bound the path again.
                info = path.stat()
                if (info.st_dev, info.st_ino) == self._path_id:
                    path.unlink()

    @property
    def joiners(self) -> int:
        return len(self._writers)

    def describe_sources(self) -> list[dict[str, Any]]:
        now = time.time()
        for key, source in list(self.sources.items()):
            if source.left_at is not None and now - source.left_at > FORGET_AFTER:
                del self.sources[key]
        return [source.describe() for source in self.sources.values()]

    def live_runs(self) -> set[str]:
        """The runs some connected publisher has logged to."""
        return {run for source in self.sources.values() if source.connected for run in source.runs}

    def live_tracks(self) -> set[tuple[str, int | None]]:
        """(run, rank) of each run some connected publisher has logged to, with its rank."""
        return {(run, s.rank) for s in self.sources.values() if s.connected for run in s.runs}

    # -- hand-over ------------------------------------------------------------------------

    def successor(self) -> str | None:
        """The joiner that should host next: a joined process (not a forked
        child) connected the longest; None if there is none."""
        candidates = [
            s
            for s in self.sources.values()
            if s.connected and s.role == "joined" and s.source in self._writers
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda s: s.connected_since).source

    async def send(self, source: str, message: dict[str, Any]) -> bool:
        """Send one message to one joiner; whether it went."""
        writer = self._writers.get(source)
        if writer is None:
            return False
        try:
            writer.write(frame(message))
            await writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def tell_all(self, message: dict[str, Any]) -> int:
        """Send one message to every connected joiner; how many it reached."""
        sent = 0
        for source in list(self._writers):
            sent += await self.send(source, message)
        return sent

    # -- one joiner ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source: Source | None = None
        try:
            hello = await asyncio.wait_for(read_frame(reader, HELLO_LIMIT), HELLO_TIMEOUT)
            refusal = self._refusal(hello, writer)
            if refusal is not None:
                writer.write(frame({"op": "refused", "error": refusal}))
                await writer.drain()
                return
            source = self._register(hello)
            self._writers[source.source] = writer
            self.all_gone.clear()
            welcome = {"op": "welcome", **self._welcome(), "acked": self.acked.get(source.source, 0)}
            if "ring" in hello:
                welcome["ring"] = self.rings.adopt(hello["ring"])
                source.path = "shared-memory" if welcome["ring"] else "socket"
            welcome["last_seq"] = self.hub.last_seq
            writer.write(frame(welcome))
            while True:
                message = await read_frame(reader, BATCH_LIMIT)
                if message["op"] == "batch":
                    self._take(source, message)
                    writer.write(frame({"op": "ack", "n": message["n"], "last_seq": self.hub.last_seq}))
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await writer.drain()
                elif message["op"] == "flush":
                    # A joiner over shared memory stops: its ring read to the end now.
                    unread = self.rings.read_source(source.source)
                    writer.write(frame({"op": "flushed", "unread": unread, "last_seq": self.hub.last_seq}))
                elif message["op"] == "bye":
                    return
        except (ChannelClosed, ConnectionError, asyncio.TimeoutError):
            pass
        except ProtocolError as exc:
            logger.warning("dropping a joiner that broke the protocol: %s", exc)
            with contextlib.suppress(Exception):
                writer.write(frame({"op": "refused", "error": str(exc)}))
        finally:
            if source is not None:
                source.connected = False
                source.left_at = time.time()
                if self._writers.get(source.source) is writer:
                    del self._writers[source.source]
                if not self._writers:
                    self.all_gone.set()
            writer.close()

    def _refusal(self, hello: dict[str, Any], writer: asyncio.StreamWriter) -> str | None:
        if hello.get("op") != "hello":
            return "say hello first"
        if hello.get("version") != PROTOCOL_VERSION:
            return f"protocol version {hello.get('version')!r}; this hub speaks {PROTOCOL_VERSION}"
        token = hello.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
            return "wrong join token"
        uid = _peer_uid(writer)
        if uid is not None and hasattr(os, "getuid") and uid != os.getuid():
            return "joining is for processes of the hub's own user"
        if not isinstance(hello.get("source"), str) or not 0 < len(hello["source"]) <= 64:
            return "a source id is a short string"
        return None

    def _register(self, hello: dict[str, Any]) -> Source:
        key = hello["source"]
        rank = hello.get("rank")
        source = self.sources.get(key)
        if source is None:
            source = self.sources[key] = Source(
                source=key,
                pid=int(hello.get("pid") or 0),
                rank=rank if isinstance(rank, int) else None,
                host=str(hello.get("host") or "")[:100],
                role="forked" if hello.get("role") == "forked" else "joined",
                connected_since=time.time(),
            )
        else:
            source.connected, source.left_at = True, None
        return source

    def _credit(self, key: str, events: list[Submission]) -> None:
        """Events a source's ring gave (see HostRings)."""
        source = self.sources.get(key)
        if source is not None:
            source.events += len(events)
            source.runs.update(run for _t, run, *_rest in events if run is not None)

    def _take(self, source: Source, message: dict[str, Any]) -> None:
        """One batch: into the intake once, whatever the resends."""
        n = message.get("n")
        if not isinstance(n, int) or n < 1:
            raise ProtocolError("a batch needs its number n")
        dropped = message.get("dropped")
        if isinstance(dropped, int):
            source.dropped = dropped
        per_run = message.get("dropped_runs")
        if isinstance(per_run, dict):
            runs = self.hub.runs
            for run, total in per_run.items():
                try:
                    name = validate_run(run)
                except TypeError:  # not a run name: nothing to count it on (its events are taken)
                    continue
                if type(total) is int and total > 0:
                    runs.forwarder_dropped(name, source.source, total)
        if n <= self.acked.get(source.source, 0):
            return  # sent again after a reconnect: we have it
        events = decode_events(message.get("events"))
        if events:
            self.hub.submit_many(events)
            source.events += len(events)
            source.runs.update(run for _t, run, *_rest in events if run is not None)
        self.acked[source.source] = n


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux)."""
    sock = writer.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None or sock.family != getattr(socket, "AF_UNIX", None):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)
