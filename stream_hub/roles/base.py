"""What every role of a server is: the protocol the server calls.

A server (:class:`stream_hub.TrainingStreamServer`) holds at most one role
object at a time. Each role owns its state, where the intake's committed
batches go (its *sink*), its start, its stop and what it gives up when it is
replaced. The server changes role in one method
(:meth:`~stream_hub.TrainingStreamServer._switch`): the next role is built
and started first — events then go where it says — and only then is the
previous one retired, so from start to stop ``server.role`` is always a real
role and every event has exactly one place to go.

The roles: :class:`~stream_hub.roles.hosting.Hosting` (``"host"``: serves
the hub), :class:`~stream_hub.roles.joined.Joined` (``"joined"``, or
``"forked"`` in a forked child: forwards to another process's hub) and
:class:`~stream_hub.roles.publishing.Publishing` (``"publisher"``: sends to
Redis, serves nothing).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..core.intake import Notifier, Sink, Submission
from ..processes.channel import JoinTarget

__all__ = ["Role"]


class Role(Protocol):
    """One way of taking part in a hub (see the module docstring)."""

    #: ``"host"``, ``"joined"``, ``"forked"`` or ``"publisher"``.
    name: str

    @property
    def sink(self) -> Sink:
        """Where a committed batch goes while this role is the server's."""

    @property
    def numbered(self) -> bool:
        """Whether this process numbers its events (``log()`` returns the seq)."""

    @property
    def notifier(self) -> Notifier | None:
        """The intake's notifier this role leaves attached when it stops (the
        server releases it as it routes the intake elsewhere), if any."""

    @property
    def running(self) -> bool:
        """Whether the role does its work now (a host whose loop died does not)."""

    @property
    def ports(self) -> dict[str, int]:
        """The ports of the hub this role serves or forwards to (empty: none)."""

    @property
    def urls(self) -> dict[str, str]:
        """The base URLs of that hub's transports."""

    def start(self) -> None:
        """Begin. On failure nothing this role took is kept (ports, threads)."""

    def stop(self, timeout: float) -> None:
        """End for good, within ``timeout`` s (a host hands over to a joined process)."""

    def restart(self, timeout: float) -> None:
        """Stop and start again in place (a host: the same ports and history)."""

    def retire(self, acked: dict[str, int]) -> list[Submission]:
        """Let go without ending the hub: this process has taken another role
        (already started). Returns the events it held that the hub has not
        got (``acked``: what the hub acknowledged per source)."""

    def fork_target(self) -> JoinTarget | None:
        """The hub a child forked now sends to (None: the child starts stopped)."""

    def disown_after_fork(self) -> None:
        """In a forked child: let go of the parent's sockets and threads."""

    def report(self, status: dict[str, Any]) -> None:
        """Add this role's part to the status dict (``host``, ``forwarding``, ...)."""

    def sources(self) -> list[dict[str, Any]]:
        """The other processes publishing through this role (``/api/sources``)."""

    def live_runs(self) -> set[str]:
        """Runs other live processes publish to through this role."""

    def live_tracks(self) -> set[tuple[str, int | None]]:
        """(run, rank) of each run another live process publishes to through
        this role, with that process's rank."""
