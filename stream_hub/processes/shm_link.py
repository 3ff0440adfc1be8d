"""A joined process's link to its hub over shared memory: ``log()`` writes
into a ring (:mod:`.shm_ring`) the hub reads; no thread of ours does
anything per event.

The training thread's ``log()`` writes the encoded event into the ring
itself (:meth:`Intake.use_direct <stream_hub.core.intake.Intake.use_direct>`);
other events (``publish``, ``finish``) are committed inline by the caller
into the same ring. The hub polls the ring (see
:mod:`.host_rings`): no wake-up, no syscall per event.

What the forwarder's thread does besides sending (:mod:`.joined`) — noticing
that the host died, electing a successor, taking over a hand-over,
rejoining a host that restarts — is done by one *control thread* that
blocks in ``select`` on the channel's socket (and on a pipe that wakes it
to stop): it runs only when the host says something (``restarting``,
``handover``, ``go``, ``flushed``) or the connection breaks, so it never
takes the GIL while the process trains. A host's death closes the socket:
the thread wakes at once, elects (or hosts) and says hello to the new host
with the same ring, which goes on from the ring's tail. A forked child has
no such thread (it never hosts): its ring is read by whichever hub of its
parent's ports is up, announced by a hello or found by the hub's scan.

At a stop the link asks the host to read its ring to the end (``flush`` →
``flushed``), closes the ring (the host then removes it) and says goodbye;
what no hub took when none is there is read back and spooled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
import uuid
from typing import Any

from ..core.intake import FIELDS, Intake, Notifier, Submission
from ..errors import StreamHubError
from ..runtime.signals import block_sigterm_in_this_thread
from .channel import (
    ChannelClosed,
    JoinTarget,
    ProtocolError,
    connect,
    encode_events,
    frame,
    hello,
    let_go_after_fork,
    recv_frame,
    take_frames,
)
from .joined import RESTART_WINDOW, FindHost, TakeOver
from .registry import PROTOCOL_VERSION
from .shm_ring import RingCorrupt, RingReader, RingWriter, process_alive, ring_path

__all__ = ["RingLink", "RingRefused"]

logger = logging.getLogger(__name__)

#: Between two attempts to reach a host while there is none (not per event).
RETRY_INTERVAL = 0.2


class RingRefused(StreamHubError):
    """The hub does not read this process's ring (the caller joins over the socket instead)."""


class RingLink:
    """One process's link to its hub through a shared-memory ring (see the module docstring).

    Args:
        intake: the process's intake (its ``log()`` writes into the ring).
        target: the hub to join; its channel must be a Unix socket.
        find_host: called on the control thread when the host is lost.
        take_over: called on the control thread when the host hands over.
        role: ``"joined"`` or ``"forked"`` (no control thread).
        rank: the rank this process reports about itself.

    Raises:
        RingRefused: the target's channel is not a Unix socket.
        OSError, StreamHubError: the ring cannot be created.
    """

    path_name = "shared-memory"

    def __init__(
        self,
        intake: Intake,
        target: JoinTarget,
        find_host: FindHost,
        *,
        take_over: TakeOver | None = None,
        role: str = "joined",
        rank: int | None = None,
    ) -> None:
        if not target.channel.startswith("unix:"):
            raise RingRefused("the hub's channel is not a Unix socket")
        self.intake = intake
        self.target = target
        self.role = role
        self._rank = rank
        self.source = uuid.uuid4().hex
        self._find_host = find_host
        self._take_over = take_over
        self.ring = RingWriter(ring_path(target.channel[5:], os.getpid(), self.source), rank=rank)
        self.connected = False
        self.host_last_seq = 0
        self.host_restarting_until = 0.0
        self.connect_failures = 0
        self._sock: socket.socket | None = None
        self._send = threading.Lock()
        self._inbuf = bytearray()
        self._state: dict[str, Any] | None = None
        self._flushed = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._pid = os.getpid()

    # -- what the role asks ------------------------------------------------------------------

    @property
    def rank(self) -> int | None:
        """The rank this process reports about itself (said in its next hello)."""
        return self._rank

    @rank.setter
    def rank(self, rank: int | None) -> None:
        self._rank = rank
        self.ring.set_rank(rank)  # log()'s metric events, written straight into the ring

    @property
    def notifier(self) -> Notifier | None:
        return None  # nothing to wake: publish() commits inline, into the ring

    def take(self, batch: list[Any], count: int) -> None:
        """The intake's sink: events other than ``log()``'s (committed inline), into the ring."""
        ring = self.ring
        for k in range(0, count * FIELDS, FIELDS):
            try:
                # One at a time: an event that cannot be encoded (log() refuses
                # such values; this guards any source that skips validation)
                # must not cost the others.
                (event,) = encode_events(batch[k : k + FIELDS], 1)
                if ring.event(event):
                    continue
                logger.debug("an event of run %r came after the ring closed; dropped", batch[k + 3])
            except (TypeError, ValueError, OverflowError) as exc:
                logger.warning(
                    "an event of run %r dropped: it cannot be sent to the hub: %s", batch[k + 3], exc
                )
            ring.count_drop(batch[k + 3])

    def start(self) -> None:
        """Say hello with the ring; once the hub reads it, ``log()`` writes there.

        Raises:
            RingRefused: the hub does not read the ring (a joined process;
                a forked child's ring is found by the hub's scan anyway).
            OSError, ChannelClosed, ProtocolError: the hub cannot be reached.
        """
        try:
            if self.role == "forked":
                with contextlib.suppress(OSError, ChannelClosed, ProtocolError):
                    self._open(self.target, wait_welcome=False)
            else:
                self._open(self.target)
        except BaseException:
            self._discard()
            raise
        self.intake.use_direct(self.ring.metric)
        if self.role != "forked":
            self._thread = threading.Thread(target=self._run, name="stream-hub-control", daemon=True)
            self._thread.start()

    def status(self) -> dict[str, Any]:
        return {"path": self.path_name, "queued": 0, "sent": self.ring.written, **self.ring.status()}

    # -- the end ----------------------------------------------------------------------------

    def leave(self, timeout: float) -> list[list[Any]]:
        """Stop: the hub reads the ring to its end (``timeout`` s at most), the
        ring closes, the link goes. What no hub took, when the host is gone
        (channel form, for the spool)."""
        self.intake.use_direct(None)
        with contextlib.suppress(Exception):
            self.intake.commit()
        flushed = self.flush(timeout)
        self._stop_thread(timeout)
        self._say_goodbye()
        self.ring.close()
        if flushed or process_alive(self.target.pid):
            return []  # read, or its host reads it later (and removes it)
        return self._read_back()

    def abandon(self) -> list[list[Any]]:
        """This process ends now (a forked child whose flush did not finish):
        the ring closes and stays for its hub, which reads it and removes it;
        with the hub gone, what it holds comes back (for the spool: the next
        hub with a store takes it, whatever its ports)."""
        self.intake.use_direct(None)
        self._closing = True
        self.ring.close()
        if process_alive(self.target.pid):
            return []
        return self._read_back()

    def retire(self, acked: dict[str, int]) -> list[Submission]:
        """This process hosts now: the link goes (the control thread may be the
        caller); this process's own hub reads what is left in the ring."""
        self.intake.use_direct(None)
        self._stop_thread(0.0)
        self._disconnect()
        self.ring.close()
        return []

    def flush(self, timeout: float) -> bool:
        """Ask the hub to read the ring to its end and wait (``timeout`` s at
        most); whether it has everything."""
        deadline = time.monotonic() + timeout
        if self.ring.closed or self.ring.unread() == 0:
            return True
        sock = self._sock
        if sock is None and self.role == "forked":
            with contextlib.suppress(OSError, ChannelClosed, ProtocolError):
                self._open(self.target, wait_welcome=False)
            sock = self._sock
        if sock is None:
            return False
        self._flushed.clear()
        try:
            with self._send:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                sock.sendall(frame({"op": "flush"}))
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(None)
        while time.monotonic() < deadline and not self._flushed.is_set():
            left = deadline - time.monotonic()
            if self._thread is not None and self._thread.is_alive():
                self._flushed.wait(left)  # the control thread reads the answer
                continue
            try:
                self._read_answers(sock, wait=left)
            except (OSError, ChannelClosed, ProtocolError):
                break
        return self.ring.unread() == 0

    def reconnect(self) -> None:
        """Drop the connection; the control thread connects again."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def release_after_fork(self) -> None:
        """In a forked child: let go of the parent's ring and connection
        without closing them for the parent."""
        self.ring.release_after_fork()
        self._closing = True
        let_go_after_fork(self._sock)

    def _stop_thread(self, timeout: float) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.1, timeout))

    def _say_goodbye(self) -> None:
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError), self._send:
                sock.settimeout(0.5)
                sock.sendall(frame({"op": "bye"}))
        self._disconnect()

    def _read_back(self) -> list[list[Any]]:
        """The host is gone: take back what is still in the ring (for the spool)."""
        try:
            reader = RingReader(self.ring.path)
        except (OSError, StreamHubError, RingCorrupt) as exc:
            logger.debug("cannot read back ring %s: %s", self.ring.path, exc)
            return []
        try:
            events = reader.read(lambda notice: None)
        except RingCorrupt:
            events = []
        reader.remove()
        return [event for event in events if type(event) is list]

    def _discard(self) -> None:
        self.ring.close()
        with contextlib.suppress(OSError):
            self.ring.path.unlink()
        self._disconnect()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the channel --------------------------------------------------------------------------

    def _open(self, target: JoinTarget, wait_welcome: bool = True) -> None:
        sock = connect(target.channel)
        try:
            greeting = hello(target, self.source, self._rank, self.role, PROTOCOL_VERSION)
            sock.sendall(frame({**greeting, "ring": str(self.ring.path)}))
            if wait_welcome:
                welcome = recv_frame(sock)
                if welcome.get("op") != "welcome":
                    raise ProtocolError(str(welcome.get("error", welcome)))
                if not welcome.get("ring"):
                    raise RingRefused("the hub does not read this process's shared-memory ring")
                self.host_last_seq = int(welcome.get("last_seq", 0))
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._inbuf = bytearray()
        self.connected = True
        self.host_restarting_until = 0.0
        self.target = target
        logger.debug("joined the hub of pid %d over shared memory (%s)", target.pid, self.ring.path)

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        self.connected = False
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # -- the control thread --------------------------------------------------------------------

    def _run(self) -> None:
        # SIGTERM is the main thread's (see runtime/signals.py).
        block_sigterm_in_this_thread()
        while not self._closing:
            sock = self._sock
            if sock is None:
                if not self._reach_a_host():
                    with contextlib.suppress(OSError, ValueError):
                        select.select([self._wake_r], [], [], RETRY_INTERVAL)
                continue
            try:
                # Blocks without a timeout: the host speaks, the socket breaks, or we stop.
                self._read_answers(sock, wait=None)
            except (OSError, ChannelClosed, ProtocolError, ValueError) as exc:
                if self._closing:
                    return
                logger.info("lost the hub (%s); reconnecting", exc)
                self._disconnect()

    def _reach_a_host(self) -> bool:
        try:
            self._open(self.target)
            return True
        except (OSError, ChannelClosed, ProtocolError, RingRefused) as exc:
            logger.debug("cannot reach the hub at %s: %s", self.target.channel, exc)
        if time.monotonic() < self.host_restarting_until or self._closing:
            return False
        new = self._find_host()
        if new is None or self._closing:
            self.connect_failures += 1
            return False
        try:
            self._open(new)
            return True
        except (OSError, ChannelClosed, ProtocolError, RingRefused) as exc:
            logger.debug("cannot reach the new hub at %s: %s", new.channel, exc)
            self.connect_failures += 1
            return False

    def _read_answers(self, sock: socket.socket, wait: float | None) -> None:
        """Wait (``wait`` s; None: until something comes) and handle what the host said.

        Raises:
            ChannelClosed: the host closed the channel.
        """
        readable, _, _ = select.select([sock.fileno(), self._wake_r], [], [], wait)
        if self._wake_r in readable:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 64)
        if sock.fileno() not in readable:
            return
        data = sock.recv(1 << 16)
        if not data:
            raise ChannelClosed
        self._inbuf += data
        for message in take_frames(self._inbuf):
            op = message.get("op")
            if op == "flushed":
                self._flushed.set()
            elif op == "welcome":
                self.host_last_seq = int(message.get("last_seq", 0))
            elif op == "restarting":
                window = float(message.get("for", RESTART_WINDOW))
                self.host_restarting_until = time.monotonic() + min(window, RESTART_WINDOW)
            elif op == "refused":
                raise ProtocolError(str(message.get("error")))
            elif op == "handover":
                self._state = message.get("state")
            elif op == "go" and self._state is not None and self._take_over is not None:
                state, self._state = self._state, None
                self._take_over(state)  # this process hosts from now on
                return
