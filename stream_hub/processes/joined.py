"""The joined side: a process whose events go to another process's hub.

A joined process keeps the publish path of a host (the same
:class:`~stream_hub.core.intake.Intake`: validate, append under one lock,
wake once per batch) and gives it a :class:`Forwarder` as notifier and sink:
a thread that takes each batch, numbers it, sends it to the host over the
channel (:mod:`.channel`) and keeps it until the host acknowledges it. After
a reconnect, unacknowledged batches are sent again; the host takes each batch
number once, so every event arrives once.

A forked child (``fork()`` without ``exec``: DataLoader and multiprocessing
workers) forwards the same way to its parent's hub, but sends each batch
right away from the calling thread (a non-blocking write to a local socket):
pool workers are often ended with SIGTERM the moment their task returns,
and what is in the socket by then still reaches the hub.

Everything here is bounded: at most ``buffer_events`` events wait for the
host; older ones are dropped first and counted (``status()["forwarding"]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import select
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import orjson

from ..core.intake import FIELDS, Intake, Submission
from ..runtime.signals import block_sigterm_in_this_thread
from .channel import (
    ChannelClosed,
    JoinTarget,
    ProtocolError,
    connect,
    decode_events,
    encode_events,
    frame,
    hello,
    let_go_after_fork,
    recv_frame,
    send_whole,
    take_frames,
)
from .registry import PROTOCOL_VERSION

__all__ = ["Forwarder", "JoinTarget"]

logger = logging.getLogger(__name__)

# Spacing between two sends while publishers keep the forwarder busy. A send
# costs the training process about 40-50 us of CPU however few events it
# carries (benchmarks, "processes"): at most 200 sends/s keeps that under 1 %
# of a core, for at most 5 ms more latency.
MIN_INTERVAL = 0.005
_RUN = itemgetter(2)  # an event's run, in a batch message's events

#: Batches sent as one frame by a flush at exit.
FLUSH_GROUP = 1000
#: The longest a host's restart is waited for before its joiners look for another host.
RESTART_WINDOW = 30.0
# How often the forwarder looks for acknowledgements and a lost host when idle.
POLL_INTERVAL = 0.05


@dataclasses.dataclass
class _Batch:
    n: int
    count: int
    events: list[list[Any]]
    sent: bool = False


#: What the forwarder asks when it lost its host: a hub to join now, or None
#: (this process has become the host, or none could be found yet).
FindHost = Callable[[], "JoinTarget | None"]
#: Called (on the forwarder's thread) when the host hands its history over:
#: this process is to host next, with that state.
TakeOver = Callable[[dict[str, Any]], None]


class Forwarder:
    """One process's link to its hub, and the intake's notifier and sink.

    Args:
        intake: the process's intake (``numbered`` is turned off while joined).
        target: the hub to join first.
        find_host: called on the forwarder's thread when the host is lost.
        take_over: called on the forwarder's thread when the host hands over.
        role: ``"joined"`` or ``"forked"`` (sends eagerly from the caller).
        rank: the rank this process reports about itself.
    """

    def __init__(
        self,
        intake: Intake,
        target: JoinTarget,
        find_host: FindHost,
        *,
        take_over: TakeOver | None = None,
        role: str = "joined",
        rank: int | None = None,
        buffer_events: int = 100_000,
    ) -> None:
        self.intake = intake
        self.target = target
        self.role = role
        self.rank = rank
        self.buffer_events = buffer_events
        self.source = uuid.uuid4().hex
        self.sent = 0  # events acknowledged by a host
        self.dropped = 0  # events dropped because the buffer was full
        # The same per run, with what the intake forgot (its ``shed_runs``):
        # every batch message carries the totals, so the host shows them per run.
        self.dropped_runs: Counter[str] = Counter()
        self.connected = False
        self.host_last_seq = 0
        self._find_host = find_host
        self._take_over = take_over
        self._state: dict[str, Any] | None = None  # a history handed to us
        self._outbox: deque[_Batch] = deque()
        self._queued = 0  # events in the outbox
        self._next = 1
        self._sock: socket.socket | None = None
        self._io = threading.RLock()  # sending, and the outbox (re-entered by a forked child)
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()
        self._urgent = False
        self._inbuf = bytearray()
        self._reading = threading.RLock()  # one reader of the host's answers at a time
        self._linked = threading.Event()  # set while connected
        self.connect_failures = 0  # attempts that found no host to connect to
        self._flushing = False
        #: Until when the host said it restarts (monotonic): no election meanwhile.
        self.host_restarting_until = 0.0

    # -- the intake's notifier (any thread, outside the intake's locks) ----------------

    def wake(self) -> None:
        self._ensure_thread()
        self._wake.set()

    def wake_urgent(self) -> None:
        self._urgent = True
        self.wake()

    def committed(self) -> None:
        pass  # nobody reads a joined process's ring

    # -- the intake's sink (the committing thread) ---------------------------------------

    def take(self, batch: list[Any], count: int) -> None:
        """Number a committed batch and queue it (or, forked, send it now)."""
        events = self._encodable(batch, count)
        count = len(events)
        if self.intake.shed_runs:  # the intake forgot events before this commit
            self.dropped_runs.update(self.intake.take_shed_runs())
        with self._io:
            self._outbox.append(_Batch(self._next, count, events))
            self._next += 1
            self._queued += count
            while self._queued > self.buffer_events and len(self._outbox) > 1:
                lost = self._outbox.popleft()
                self._queued -= lost.count
                self.dropped += lost.count
                self.dropped_runs.update(run for run in map(_RUN, lost.events) if run is not None)
            if self.role == "forked":
                if self._sock is None and not self._closing:
                    self._open_quietly()
                self._send_unsent()
        if self.role == "forked":
            self._ensure_thread()

    def _encodable(self, batch: list[Any], count: int) -> list[list[Any]]:
        """The batch's events as a batch message carries them. An event that
        cannot be encoded is dropped and counted in ``dropped`` (log() refuses
        such values; this guards any source that skips validation): raising
        here would end the forwarder's thread, and a batch that cannot be
        framed would fail every later send (issue 22 M7)."""
        try:
            events = encode_events(batch, count)
            orjson.dumps(events)  # what frame() does later, and must not fail there
            return events
        except Exception:  # whatever it is, one event must not cost the others: one at a time
            pass
        events = []
        for k in range(0, count * FIELDS, FIELDS):
            try:
                one = encode_events(batch[k : k + FIELDS], 1)
                orjson.dumps(one)
            except Exception as exc:
                self.dropped += 1
                if batch[k + 3] is not None:
                    self.dropped_runs[batch[k + 3]] += 1
                logger.warning(
                    "an event of run %r dropped: it cannot be sent to the hub: %s", batch[k + 3], exc
                )
                continue
            events += one
        return events

    # -- state ------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Events waiting for the host's acknowledgement."""
        return self._queued

    path_name = "socket"

    @property
    def notifier(self) -> Forwarder | None:
        """The intake's notifier while joined (a forked child's commits inline)."""
        return self

    def status(self) -> dict[str, Any]:
        return {"path": self.path_name, "queued": self._queued, "sent": self.sent, "dropped": self.dropped}

    def leave(self, timeout: float) -> list[list[Any]]:
        """Stop: send what is queued (``timeout`` s at most for the host);
        what no hub took (channel form, for the spool)."""
        return [event for batch in self.close(timeout) for event in batch.events]

    def abandon(self) -> list[list[Any]]:
        """This process ends now: what the hub never acknowledged."""
        return [event for batch in self.close(0.0, commit=False) for event in batch.events]

    def retire(self, acked: dict[str, int]) -> list[Submission]:
        """This process hosts now: the forwarder stops (its thread may be the
        caller); the events the old host never acknowledged come back."""
        left = self.close(0.0, commit=False)
        took = int(acked.get(self.source, 0))
        events: list[Submission] = []
        for batch in left:
            if batch.n > took:
                events.extend(decode_events(batch.events))
        return events

    def start(self) -> None:
        """From now on the intake's batches go to the host: a joined process's
        through this forwarder's thread (its notifier); a forked child's from
        the caller's thread, at once (no notifier: each batch is committed
        inline), the thread only reading acknowledgements."""
        if self.role != "forked":
            self.intake.attach(self)
            self._ensure_thread()

    def close(self, timeout: float = 2.0, commit: bool = True) -> list[_Batch]:
        """Send what is queued (waiting at most ``timeout`` s for the host to
        take it) and stop. Returns the batches the host never acknowledged
        (for a successor to take). ``commit``: commit the intake's pending
        events first (not when this process has just started hosting: its
        loop commits them, into its own hub)."""
        deadline = time.monotonic() + timeout
        if commit:
            with contextlib.suppress(Exception):
                self.intake.commit()
        failures = self.connect_failures
        while self._queued and time.monotonic() < deadline:
            pause = min(0.05, max(0.0, deadline - time.monotonic()))
            self._wake.set()
            if self.connected:
                with contextlib.suppress(Exception):
                    self._drain_acks(wait=pause)
                continue
            # Between connections (a restart, a lost host): let the thread
            # reconnect and resend, unless it finds no host to connect to.
            thread = self._thread
            if thread is None or not thread.is_alive() or self.connect_failures > failures:
                break
            self._linked.wait(pause)
        self._closing = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.1, deadline - time.monotonic()))
        self._disconnect()
        with self._io:
            left = list(self._outbox)
            self._outbox.clear()
            self._queued = 0
        return left

    def flush(self, timeout: float) -> bool | None:
        """Get every queued batch to the host before this process ends
        (a forked child's last step: its exit skips the usual stop): send
        what is unsent, waiting for room in the socket, then wait for the
        host's acknowledgements — ``timeout`` s at most in all. Whether the
        host has everything.

        Not re-entered: a call made while one runs (a SIGTERM handler
        interrupting the flush at exit) returns None at once; re-entering
        would take this forwarder's locks in the opposite order of its thread.
        """
        if self._flushing:
            return None
        self._flushing = True
        try:
            return self._flush(time.monotonic() + timeout)
        finally:
            self._flushing = False

    def _flush(self, deadline: float) -> bool:
        with self._io:
            if self._sock is None and not self._closing:
                self._open_quietly()
            sock = self._sock
            if sock is None:
                return not self._outbox
            try:
                # Unsent batches go as few frames (numbered by their last batch):
                # the host has none of them (what it took was acknowledged in
                # its welcome), and a child that logged event by event would
                # otherwise send thousands of frames while its exit waits.
                unsent = [batch for batch in self._outbox if not batch.sent]
                for first in range(0, len(unsent), FLUSH_GROUP):
                    group = unsent[first : first + FLUSH_GROUP]
                    events = [event for batch in group for event in batch.events]
                    data = frame(self._batch_message(group[-1].n, events))
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    sock.sendall(data)
                    for batch in group:
                        batch.sent = True
            except OSError as exc:
                logger.debug("could not send the last batches to the hub: %s", exc)
                return False
            finally:
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
        while self._queued and time.monotonic() < deadline:
            try:
                self._drain_acks(wait=min(0.05, max(0.0, deadline - time.monotonic())))
            except (OSError, ChannelClosed, ProtocolError):
                break
        return not self._queued

    def release_after_fork(self) -> None:
        """In a forked child: let go of this (the parent's) connection without
        closing it for the parent (its descriptor now points at /dev/null)."""
        let_go_after_fork(self._sock)

    def reconnect(self) -> None:
        """Drop the connection; the forwarder thread connects again (and resends)."""
        self._disconnect()
        self._wake.set()

    # -- the forwarder thread -------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._closing:
            return
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stream-hub-forwarder", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        # SIGTERM's handler (runtime/signals.py; a forked child's flush,
        # runtime/forking.chain_sigterm) runs in the main thread, whose blocking
        # waits (a pool worker's queue) only a signal delivered to it interrupts.
        # Delivered to this thread, the handler would never run and SIGTERM
        # would no longer end the process.
        block_sigterm_in_this_thread()
        last_send = 0.0
        while not self._closing:
            if self._sock is None and not self._connect():
                if self._closing:
                    return
                self._wake.wait(POLL_INTERVAL * 4)
                self._wake.clear()
                continue
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()
            if self._closing:
                return
            spacing = last_send + MIN_INTERVAL - time.monotonic()
            if spacing > 0 and not self._urgent:
                self._wake.wait(spacing)  # let a tight publishing loop fill the batch
            self._urgent = False
            try:
                self._drain_acks(wait=0.0)  # first what the host said: acks, a hand-over
                if self._closing:
                    return
                if self.role != "forked":
                    self.intake.commit()
                with self._io:
                    self._send_unsent()
                last_send = time.monotonic()
            except (OSError, ChannelClosed, ProtocolError) as exc:
                # A hand-over may be waiting in the socket behind the error.
                with contextlib.suppress(OSError, ChannelClosed, ProtocolError):
                    self._drain_acks(wait=0.0)
                if self._closing:
                    return
                logger.info("lost the hub (%s); reconnecting", exc)
                self._disconnect()

    def _connect(self) -> bool:
        """Connect (again) to the target, or find a new host; whether connected."""
        if self._open_any():
            return True
        self.connect_failures += 1
        return False

    def _open_any(self) -> bool:
        target = self.target
        try:
            self._open(target)
            return True
        except (OSError, ChannelClosed, ProtocolError) as exc:
            logger.debug("cannot reach the hub at %s: %s", target.channel, exc)
        if time.monotonic() < self.host_restarting_until:
            return False  # it said it restarts: keep buffering and try it again
        new = self._find_host()
        if new is None or self._closing:
            return False
        self.target = new
        try:
            self._open(new)
            return True
        except (OSError, ChannelClosed, ProtocolError) as exc:
            logger.debug("cannot reach the new hub at %s: %s", new.channel, exc)
            return False

    def _open(self, target: JoinTarget, wait_welcome: bool = True) -> None:
        """Connect and say hello; with ``wait_welcome``, read the host's answer
        before sending anything else (it says what it already has)."""
        sock = connect(target.channel)
        try:
            sock.sendall(frame(hello(target, self.source, self.rank, self.role, PROTOCOL_VERSION)))
            acked = 0
            if wait_welcome:
                welcome = recv_frame(sock)
                if welcome.get("op") != "welcome":
                    raise ProtocolError(str(welcome.get("error", welcome)))
                acked = int(welcome.get("acked", 0))
                self.host_last_seq = int(welcome.get("last_seq", 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        with self._io:
            self._sock = sock
            self._inbuf = bytearray()
            self.connected = True
            self._linked.set()
            self.host_restarting_until = 0.0
            self._acknowledge(acked)
            for batch in self._outbox:
                batch.sent = False  # a new connection: everything unacknowledged goes again
            self._send_unsent()
        logger.debug("joined the hub of pid %d (%s)", target.pid, target.channel)

    def _open_quietly(self) -> None:
        """A forked child's first connection, from the caller (``_io`` held):
        hello and the first batches go out at once; the welcome is read later."""
        try:
            self._open(self.target, wait_welcome=False)
        except (OSError, ChannelClosed, ProtocolError) as exc:
            logger.debug("cannot reach the parent's hub at %s: %s", self.target.channel, exc)

    def _send_unsent(self) -> None:
        """Send every batch not yet sent on this connection (``_io`` held)."""
        sock = self._sock
        if sock is None:
            return
        for batch in self._outbox:
            if batch.sent:
                continue
            data = frame(self._batch_message(batch.n, batch.events))
            try:
                send_whole(sock, data)
            except BlockingIOError:
                return  # the host is slow to read: the thread sends the rest later
            batch.sent = True

    def _batch_message(self, n: int, events: list[list[Any]]) -> dict[str, Any]:
        """A ``batch`` message: the events, and what this process dropped so
        far (in all, and per run when it dropped any)."""
        message = {"op": "batch", "n": n, "events": events, "dropped": self.dropped + self.intake.shed}
        if self.dropped_runs:
            message["dropped_runs"] = dict(self.dropped_runs)
        return message

    def _drain_acks(self, wait: float) -> None:
        """Read what the host sent (waiting at most ``wait`` s for something)."""
        with self._reading:
            self._read_answers(wait)

    def _read_answers(self, wait: float) -> None:
        sock = self._sock
        if sock is None:
            return
        if wait > 0:
            select.select([sock], [], [], wait)
        closed = False
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                break
            if not data:
                closed = True
                break
            self._inbuf += data
        for message in take_frames(self._inbuf):
            op = message.get("op")
            if op in ("ack", "welcome"):
                with self._io:
                    self._acknowledge(int(message.get("n", message.get("acked", 0))))
                self.host_last_seq = int(message.get("last_seq", self.host_last_seq))
            elif op == "restarting":
                # The host restarts in place: wait for it, never elect (that would split the job).
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
        if closed:
            raise ChannelClosed

    def _acknowledge(self, n: int) -> None:
        """Forget the batches the host has (``_io`` held)."""
        outbox = self._outbox
        while outbox and outbox[0].n <= n:
            batch = outbox.popleft()
            self._queued -= batch.count
            self.sent += batch.count

    def _disconnect(self) -> None:
        with self._io:
            sock, self._sock = self._sock, None
            self.connected = False
            self._linked.clear()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
