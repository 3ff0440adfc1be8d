"""The ``"joined"`` and ``"forked"`` roles: this process's events go to
another process's hub, through a :class:`~stream_hub.processes.joined.Forwarder`.

``"joined"``: another process of this user serves the hub of these ports.
When that host hands over to this process, or dies and this process is
elected, the server switches to :class:`~stream_hub.roles.hosting.Hosting`
(the forwarder's thread asks it to: ``take_over`` / ``find_host``); this
role is then retired and gives back the events the hub never acknowledged.

``"forked"``: a child forked from a process that hosted or was joined sends
to that hub, each batch right away from the calling thread; it never hosts.

How the events get there, the *path*: on this machine, over shared memory
(a :class:`~stream_hub.processes.shm_link.RingLink`: ``log()`` writes into a
ring the hub reads, no thread of ours works per event) unless the
``shared_memory`` setting is off or the hub's channel is not a Unix socket;
otherwise, or when the hub does not read the ring, over the socket channel
(a :class:`~stream_hub.processes.joined.Forwarder`). ``status()["forwarding"]["path"]``
says which.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import StreamConfig
from ..core.intake import Intake, Notifier, Sink, Submission
from ..errors import StreamHubError
from ..processes.channel import ChannelClosed, JoinTarget, ProtocolError
from ..processes.joined import FindHost, Forwarder, TakeOver
from ..processes.shm_link import RingLink, RingRefused
from ..processes.spool import spool

__all__ = ["Joined"]

logger = logging.getLogger(__name__)


class Joined:
    """Forward to ``target`` (see the module docstring).

    Args:
        config: this process's settings (compared with the hub's, to warn).
        intake: the server's intake (the forwarder commits it, unless forked).
        target: the hub to join.
        find_host: the forwarder's thread asks it when the host is lost.
        take_over: the forwarder's thread calls it when the host hands over
            to this process (None: a forked child, which never hosts).
        forked: a forked child (``"forked"``).
    """

    def __init__(
        self,
        config: StreamConfig,
        intake: Intake,
        target: JoinTarget,
        *,
        find_host: FindHost,
        take_over: TakeOver | None,
        forked: bool = False,
    ) -> None:
        self.name = "forked" if forked else "joined"
        self.config = config
        self._intake = intake
        self._find_host = find_host
        self._take_over = take_over
        # The socket's until start() finds that the hub reads a ring of ours.
        self.link: Forwarder | RingLink = Forwarder(
            intake, target, find_host, take_over=take_over, role=self.name, rank=intake.rank
        )

    @property
    def target(self) -> JoinTarget:
        """The hub forwarded to now (it changes when the host moves)."""
        return self.link.target

    @property
    def sink(self) -> Sink:
        return self._take

    def _take(self, batch: list[Any], count: int) -> None:
        self.link.take(batch, count)  # the link of the moment (start() may change it)

    @property
    def numbered(self) -> bool:
        return False  # the host numbers the events

    @property
    def notifier(self) -> Notifier | None:
        return self.link.notifier  # a forwarder attached while joined (a forked child's never is)

    @property
    def running(self) -> bool:
        return True

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.target.ports)

    @property
    def urls(self) -> dict[str, str]:
        return dict(self.target.urls)

    def start(self) -> None:
        target = self.target
        if not (
            self.config.shared_memory
            and target.channel.startswith("unix:")
            and self._over_shared_memory(target)
        ):
            self.link.start()
        logger.info(
            "joined the stream_hub hub of pid %d over %s: dashboard %s/",
            target.pid,
            self.link.path_name,
            target.urls.get("rest"),
        )
        # (A process with the default store has no store of its own to compare:
        # the hub's file, whichever it is, is where its events go.)
        differ = [
            n
            for n, v in target.settings.items()
            if getattr(self.config, n, None) != v and not (n == "store" and self.config.store is None)
        ]
        if differ:
            logger.warning(
                "this process's config differs from the hub's in %s; the hub's settings apply "
                "(the hub has %s)",
                ", ".join(differ),
                ", ".join(f"{n}={target.settings[n]!r}" for n in differ),
            )

    def _over_shared_memory(self, target: JoinTarget) -> bool:
        """Join over a shared-memory ring if the hub reads it; whether it does
        (if not, the socket's forwarder is still to start)."""
        try:
            link = RingLink(
                self._intake,
                target,
                self._find_host,
                take_over=self._take_over,
                role=self.name,
                rank=self._intake.rank,
            )
        except (OSError, StreamHubError) as exc:
            logger.info("joining over the socket channel: no shared-memory ring (%s)", exc)
            return False
        try:
            link.start()
        except (OSError, StreamHubError, ChannelClosed, ProtocolError) as exc:
            level = logging.DEBUG if isinstance(exc, RingRefused) else logging.INFO
            logger.log(level, "joining over the socket channel: %s", exc)
            return False
        # What the intake committed before (into the socket's outbox) goes first.
        for event in self.link.abandon():
            link.ring.event(event)
        self.link = link
        return True

    def stop(self, timeout: float) -> None:
        """Get what is queued to the host (waiting at most ``timeout`` s),
        then let go; what no hub took is spooled for the next one."""
        spool(self.link.leave(timeout))

    def spool_the_rest(self) -> None:
        """This process ends (a forked child whose flush did not get
        everything through): keep what the hub never took."""
        spool(self.link.abandon())

    def flush_before_exit(self, timeout: float) -> bool | None:
        """This process ends without a stop (a forked child): get what is
        queued to the host, ``timeout`` s at most; whether it all arrived
        (None: a flush was already under way)."""
        return self.link.flush(timeout)

    def restart(self, timeout: float) -> None:
        """Reconnect to the host (never restarting another process's hub)."""
        self.link.reconnect()

    def retire(self, acked: dict[str, int]) -> list[Submission]:
        """This process hosts now: the link stops (its thread may be the
        caller), and the events the old host never took come back."""
        return self.link.retire(acked)

    def fork_target(self) -> JoinTarget | None:
        return self.target

    def disown_after_fork(self) -> None:
        self.link.release_after_fork()

    def report(self, status: dict[str, Any]) -> None:
        link = self.link
        status["epoch"] = link.target.epoch
        status["last_seq"] = link.host_last_seq
        status["host"] = {"pid": link.target.pid, "urls": link.target.urls}
        status["forwarding"] = link.status()

    def sources(self) -> list[dict[str, Any]]:
        return []

    def live_runs(self) -> set[str]:
        return set()

    def live_tracks(self) -> set[tuple[str, int | None]]:
        return set()
