"""The ingest side of a hub: where events enter, are numbered and wait in a
batch for whoever commits them (I/O-free).

Every source goes through one :class:`Intake`: the training threads
(``log``/``publish``, the hot path), ``POST /api/publish`` and, with many
processes, the batches forwarded by joined processes. Each event gets the
next seq and joins the pending batch; the first event of a batch wakes the
committer once. What committing means is the intake's *sink*, given at
construction: the hub stores the batch in its ring; a joined process's
forwarder ships it to the host instead.

Who commits: the thread of the :class:`Notifier` attached to the intake (the
server's loop thread), or, with none attached, the submitting thread itself,
inline. :meth:`Intake.attach` and :meth:`Intake.detach` switch between the two
atomically: no commit ever runs on a training thread while a notifier is
attached, and detaching commits everything pending.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from time import time as _time
from typing import Any, Protocol

from ..events import (
    INT64_MAX,
    INT64_MIN,
    encode_data,
    validate_data,
    validate_metrics,
    validate_run,
    validate_step,
    validate_type,
)

__all__ = ["FIELDS", "Direct", "Intake", "Notifier", "Sink"]

FIELDS = 7  # values per event in a flat batch: seq, ts, type, run, step, payload, rank

#: Takes a flat batch (FIELDS values per event, oldest first) and its event count.
Sink = Callable[[list[Any], int], None]
#: Writes one checked metric event (ts, run, step, values) where it goes, from
#: the caller's thread (a shared-memory ring); False: not taken, submit it as usual.
Direct = Callable[[float, str, "int | None", dict[str, Any]], bool]

#: One already checked event: (type, run, step, payload, ts or None for "now",
#: rank or None).
Submission = tuple[str, "str | None", "int | None", Any, "float | None", "int | None"]


class Notifier(Protocol):
    """What the intake tells the thread that commits for it (the server's loop).

    ``wake`` and ``wake_urgent`` are called from any thread, outside the
    intake's locks, and raise ``RuntimeError`` once the notifier's loop has
    closed; ``committed`` is called on the committing thread after each batch.
    """

    def wake(self) -> None: ...

    def wake_urgent(self) -> None: ...

    def committed(self) -> None: ...


class Intake:
    """Numbering and batching of submitted events, shared by every thread.

    Args:
        sink: what committing a batch does (called on the committing thread).
        pending_limit: events publishers may get ahead of the committer before
            it is asked to commit at once; four times that, the oldest are
            forgotten (counted in ``shed``) so memory never grows without bound.
        numbered: whether ``log``/``publish`` return the seq (``True`` while
            this process numbers the hub's events; ``False`` when another
            process does, and they return ``None``).
        run: the run of events logged without one (this job's default run).
        rank: the rank stamped on this process's own events (None: not a
            distributed job).
    """

    def __init__(
        self,
        sink: Sink,
        pending_limit: int = 50_000,
        numbered: bool = True,
        run: str = "default",
        rank: int | None = None,
    ) -> None:
        self._sink = sink
        self.numbered = numbered
        self.default_run = run
        self.rank = rank
        # The runs this process's own threads logged to (finished at exit),
        # and those it finished itself.
        self.local_runs: set[str] = set()
        self.finished_runs: set[str] = set()
        self._last_run: str | None = None
        self.shed = 0  # events forgotten before commit (publishers outran the committer)
        # The same per run, until the committing thread takes them (take_shed_runs).
        self.shed_runs: Counter[str | None] = Counter()
        self._lock = threading.Lock()
        self._seq = 0
        # Submitted, not yet committed events, flattened: FIELDS values each
        # (seq, ts, type, run, step, payload, rank). Flat, because a list of tuples
        # holding dicts would keep every one of them tracked by the garbage
        # collector, whose full passes then grow with the backlog.
        self._pending: list[Any] = []
        self._pending_limit = FIELDS * pending_limit
        self._wake_scheduled = False
        self._urgent_sent = False
        # Set when the sink itself submitted events while committing (the hub's
        # alerts): the same commit takes them too (see submit_from_sink).
        self._again = False
        # Who commits: the attached notifier's thread, or (None) the submitter.
        # Written only with both locks held; read under either.
        self._notifier: Notifier | None = None
        self._commit_lock = threading.Lock()
        # Where log() writes its events itself, bypassing the batch (see use_direct).
        self._direct: Direct | None = None

    # -- who commits -------------------------------------------------------------------

    def attach(self, notifier: Notifier) -> None:
        """From now on, commits happen on ``notifier``'s thread.

        Waits for an inline commit in progress to finish, so once this
        returns no other thread commits. The caller commits what is pending
        on the notifier's thread.
        """
        with self._commit_lock, self._lock:
            self._notifier = notifier

    def detach(self, notifier: Notifier) -> None:
        """Commit inline again (if ``notifier`` is still the attached one), and
        commit everything submitted so far.

        Call it once the notifier's thread no longer reads what the sink writes.
        """
        with self._commit_lock, self._lock:
            if self._notifier is notifier:
                self._notifier = None
        self.commit()

    @property
    def notifier(self) -> Notifier | None:
        return self._notifier

    def use_direct(self, direct: Direct | None) -> None:
        """From now on ``log()`` hands each checked metric event to ``direct``
        in the caller's thread (a shared-memory ring: no batch, no wake-up),
        or, with None, submits it as usual. Any change of sink ends it.

        Events already submitted keep their order only within each path: call
        it with nothing pending (a role's start, after the sink changed).
        """
        with self._lock:
            self._direct = direct

    def set_sink(self, sink: Sink, numbered: bool, release: Notifier | None = None) -> None:
        """Send committed batches somewhere else from now on (a role change:
        hosting stores them in the hub, joined forwards them).

        ``release``: a notifier that no longer commits (a stopped forwarder),
        detached in the same step, so no batch can reach the old sink in
        between. With no notifier attached, what is pending is committed to
        the new sink at once.
        """
        with self._commit_lock, self._lock:
            self._sink = sink
            self.numbered = numbered
            self._direct = None
            if release is not None and self._notifier is release:
                self._notifier = None
            inline = self._notifier is None
        if inline:
            self.commit()

    # -- submission (any thread) ---------------------------------------------------------

    def log(self, metrics: Any, step: Any = None, run: Any = None) -> int | None:
        """Validate and submit one metric event; returns its seq (None when
        another process numbers the events).

        Raises:
            TypeError: a value is not a real number, or step/run have the wrong type.
            ValueError: ``step`` is outside the signed 64-bit range, or an int
                value is too large for a float (JSON could not carry either).
        """
        # HOT PATH (training thread): one dict copy, one type check per float
        # and one range comparison per int, one uncontended lock, one append;
        # the wake-up happens once per batch. No logging, no I/O.
        # ``validate_metrics`` and ``submit_many`` are inlined here on purpose.
        direct = self._direct
        if type(metrics) is dict:
            # A direct writer encodes the values at once: no snapshot to take.
            values = metrics if direct is not None else metrics.copy()
            for key, value in values.items():
                if type(key) is not str or (
                    type(value) is not float
                    and (type(value) is not int or not INT64_MIN <= value <= INT64_MAX)
                ):
                    values = validate_metrics(metrics)
                    break
        else:
            values = validate_metrics(metrics)
        if run is None or run is not self._last_run:
            # A name is checked unless it is the run of the last call (noted
            # once checked): an empty or overlong one is refused, as in publish.
            run = validate_run(run, self.default_run)
            if run is not self._last_run:
                self._note_run(run)
        if step is not None and (type(step) is not int or not INT64_MIN <= step <= INT64_MAX):
            step = validate_step(step)
        ts = _time()
        if direct is not None:
            if direct(ts, run, step, values):
                return None  # written where it goes (a shared-memory ring): never numbered here
            values = values.copy()  # (not written: it waits in the batch like any other)
        lock = self._lock
        lock.acquire()  # explicit acquire/release: half the cost of ``with``
        try:
            seq = self._seq = self._seq + 1
            pending = self._pending
            pending += (seq, ts, "metric", run, step, values, self.rank)
            if self._wake_scheduled:
                if len(pending) > self._pending_limit:
                    self._backlog(pending)
                return seq if self.numbered else None
            self._wake_scheduled = True
            notifier = self._notifier
        finally:
            lock.release()
        self._kick(notifier)
        return seq if self.numbered else None

    def publish(self, event_type: Any, data: Any = None, run: Any = None, step: Any = None) -> int | None:
        """Submit any JSON-able event; returns its seq (as :meth:`log`).

        ``data`` is encoded here, in the caller's thread: the event keeps a
        snapshot (later changes to ``data`` do not reach it).

        Raises:
            TypeError: ``event_type`` is not a plain word or is reserved, or
                ``data`` cannot be encoded as JSON (an int beyond 64 bits in it, too),
                or an ``alert``'s, ``histogram``'s or ``image``'s data is not of
                its shape (:func:`~stream_hub.events.validate_data`).
            ValueError: ``step`` is outside the signed 64-bit range, or a field
                of an ``alert``, ``histogram`` or ``image`` is out of range.
        """
        if event_type == "metric":
            return self.log(data, step=step, run=run)
        validate_type(event_type)
        data = validate_data(event_type, data)  # an alert's, a histogram's, an image's fields
        run = validate_run(run, self.default_run)
        self.local_runs.add(run)
        submission = (event_type, run, validate_step(step), encode_data(data), None, self.rank)
        seq = self.submit_many([submission])
        return seq[0] if self.numbered else None

    def forget_runs(self) -> None:
        """Forget which runs this process logged to and finished (they were
        ended): the next event of any run notes it again."""
        self.local_runs = set()
        self.finished_runs = set()
        self._last_run = None

    def ended(self, run: str) -> None:
        """Note that this process ended ``run`` (its ``run_end`` is submitted):
        the end at exit leaves it alone, until a metric is logged to it again
        (the run index then counts it running again, and so does this)."""
        self.finished_runs.add(run)
        self._last_run = None  # the next log() to it notes it again

    def _note_run(self, run: str) -> None:
        """A metric's run, when it is not the last call's (not per event)."""
        self._last_run = run
        self.local_runs.add(run)
        self.finished_runs.discard(run)

    def submit(
        self,
        event_type: str,
        run: str | None,
        step: int | None,
        payload: Any,
        ts: float | None = None,
        rank: int | None = None,
    ) -> int:
        """Number an already checked event and queue it; returns its seq.

        ``payload`` is the metrics dict of a metric event, else the data
        (pre-encoded bytes, or a JSON-able object the caller no longer changes).
        """
        return self.submit_many([(event_type, run, step, payload, ts, rank)])[0]

    def submit_many(self, events: Sequence[Submission]) -> list[int]:
        """:meth:`submit` for several events at once: consecutive seqs, one wake-up."""
        now = time.time()
        with self._lock:
            first = self._seq + 1
            pending = self._pending
            for seq, (event_type, run, step, payload, ts, rank) in enumerate(events, first):
                pending += (seq, now if ts is None else ts, event_type, run, step, payload, rank)
            self._seq = first + len(events) - 1
            seqs = list(range(first, self._seq + 1))
            if self._wake_scheduled:
                if len(pending) > self._pending_limit:
                    self._backlog(pending)
                return seqs
            self._wake_scheduled = True
            notifier = self._notifier
        self._kick(notifier)
        return seqs

    def submit_from_sink(self, events: Sequence[Submission]) -> None:
        """Queue events the sink raised while it commits a batch (the hub's own
        alerts, on the committing thread): numbered after what is pending, and
        committed by the same commit right after that batch. No wake-up: the
        committing thread is the caller, and a commit lock it holds would
        deadlock an inline commit."""
        with self._lock:
            first = self._seq + 1
            pending = self._pending
            now = time.time()
            for seq, (event_type, run, step, payload, ts, rank) in enumerate(events, first):
                pending += (seq, now if ts is None else ts, event_type, run, step, payload, rank)
            self._seq = first + len(events) - 1
            self._again = True

    def _kick(self, notifier: Notifier | None) -> None:
        """Get the batch just started committed: wake the notifier, or commit here."""
        if notifier is not None:
            try:
                notifier.wake()
                return
            except RuntimeError:
                # Its loop has closed: nothing reads what the sink writes there
                # any more, and nothing waits there to be told.
                with self._commit_lock:
                    self._drain()
                return
        with self._commit_lock:
            notifier = self._notifier
            if notifier is None:
                self._drain()
                return
        self._kick(notifier)  # attached in the meantime: its thread commits

    def _backlog(self, pending: list[Any]) -> None:
        """Publishers are far ahead of the committer (called with ``_lock`` held).

        First ask for a commit now, whatever its spacing. If it still does not
        come (the loop is stuck or dead), forget the oldest events rather than
        grow without bound; followers see a gap.
        """
        notifier = self._notifier
        if not self._urgent_sent and notifier is not None:
            self._urgent_sent = True
            try:
                notifier.wake_urgent()
            except RuntimeError:
                pass  # the loop is closing; the limit below still holds
        if len(pending) > 4 * self._pending_limit:
            # Cut back to twice the limit, so the cut happens rarely.
            excess = (len(pending) - 2 * self._pending_limit) // FIELDS
            self.shed_runs.update(pending[3 : excess * FIELDS : FIELDS])  # C-level counting
            del pending[: excess * FIELDS]
            self.shed += excess

    def take_shed_runs(self) -> dict[str, int]:
        """How many events of each run were forgotten since the last call
        (see ``pending_limit``); for the committing thread, which counts them
        on the runs."""
        with self._lock:
            shed, self.shed_runs = self.shed_runs, Counter()
        return {run: n for run, n in shed.items() if run is not None}

    @property
    def last_seq(self) -> int:
        """The seq given to the newest submitted event (committed or not)."""
        return self._seq

    def continue_from(self, seq: int) -> None:
        """Number the next event ``seq + 1`` (a hub taking over a history)."""
        with self._lock:
            self._seq = max(self._seq, seq)

    # -- commit (the committing thread) ----------------------------------------------------

    def commit(self) -> int:
        """Hand every submitted event to the sink; returns how many.

        Call it on the notifier's thread (or, with none attached, any thread).
        """
        with self._commit_lock:
            count = self._drain()
        notifier = self._notifier
        if count and notifier is not None:
            notifier.committed()
        return count

    def _drain(self) -> int:
        total = 0
        while True:
            with self._lock:
                batch = self._pending
                self._pending = []
                self._wake_scheduled = False
                self._urgent_sent = False
                self._again = False
            if not batch:
                return total
            count = len(batch) // FIELDS
            self._sink(batch, count)
            total += count
            if not self._again:  # the sink raised nothing of its own (see submit_from_sink)
                return total

    def reinit_after_fork(self) -> None:
        """In a forked child: fresh locks (another thread may have held them
        at fork time), nothing pending of the parent's, and no notifier."""
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._pending = []
        self.shed_runs = Counter()
        self._wake_scheduled = False
        self._urgent_sent = False
        self._again = False
        self._notifier = None
        self._direct = None
