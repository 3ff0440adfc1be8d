"""The ``"joined"`` and ``"forked"`` roles: this process's events go to
another process's hub, through a :class:`~stream_hub.processes.joined.Forwarder`.

``"joined"``: another process of this user serves the hub of these ports.
When that host hands over to this process, or dies and this process is
elected, the server switches to :class:`~stream_hub.roles.hosting.Hosting`
(the forwarder's thread asks it to: ``take_over`` / ``find_host``); this
role is then retired and gives back the events the hub never acknowledged.

``"forked"``: a child forked from a process that hosted or was joined sends
to that hub, each batch right away from the calling thread; it never hosts.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import StreamConfig
from ..core.intake import Intake, Notifier, Sink, Submission
from ..processes.channel import JoinTarget, decode_events
from ..processes.joined import FindHost, Forwarder, TakeOver
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
        self.forwarder = Forwarder(
            intake, target, find_host, take_over=take_over, role=self.name, rank=intake.rank
        )

    @property
    def target(self) -> JoinTarget:
        """The hub forwarded to now (it changes when the host moves)."""
        return self.forwarder.target

    @property
    def sink(self) -> Sink:
        return self.forwarder.take

    @property
    def numbered(self) -> bool:
        return False  # the host numbers the events

    @property
    def notifier(self) -> Notifier | None:
        return self.forwarder  # attached while joined (a forked child's never is)

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
        self.forwarder.start()
        logger.info("joined the stream_hub hub of pid %d: dashboard %s/", target.pid, target.urls.get("rest"))
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

    def stop(self, timeout: float) -> None:
        """Send what is queued (waiting at most ``timeout`` s for the host),
        then let go; what no hub took is spooled for the next one."""
        spool(event for batch in self.forwarder.close(timeout) for event in batch.events)

    def spool_the_rest(self) -> None:
        """This process ends (a forked child whose flush did not get
        everything through): keep what the hub never acknowledged."""
        spool(event for batch in self.forwarder.close(0.0, commit=False) for event in batch.events)

    def flush_before_exit(self, timeout: float) -> bool | None:
        """This process ends without a stop (a forked child): get what is
        queued to the host, ``timeout`` s at most; whether it all arrived
        (None: a flush was already under way)."""
        return self.forwarder.flush(timeout)

    def restart(self, timeout: float) -> None:
        """Reconnect to the host (never restarting another process's hub)."""
        self.forwarder.reconnect()

    def retire(self, acked: dict[str, int]) -> list[Submission]:
        """This process hosts now: the forwarder stops (its thread may be the
        caller), and the events the old host never acknowledged come back."""
        forwarder = self.forwarder
        left = forwarder.close(0.0, commit=False)
        took = int(acked.get(forwarder.source, 0))
        events: list[Submission] = []
        for batch in left:
            if batch.n > took:
                events.extend(decode_events(batch.events))
        return events

    def fork_target(self) -> JoinTarget | None:
        return self.target

    def disown_after_fork(self) -> None:
        self.forwarder.release_after_fork()

    def report(self, status: dict[str, Any]) -> None:
        forwarder = self.forwarder
        status["epoch"] = forwarder.target.epoch
        status["last_seq"] = forwarder.host_last_seq
        status["host"] = {"pid": forwarder.target.pid, "urls": forwarder.target.urls}
        status["forwarding"] = forwarder.status()

    def sources(self) -> list[dict[str, Any]]:
        return []

    def live_runs(self) -> set[str]:
        return set()

    def live_tracks(self) -> set[tuple[str, int | None]]:
        return set()
