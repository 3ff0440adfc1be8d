"""Each role's state changes, and the server's one place of changing role,
with plain objects: no sockets, no threads, no sleeps.

The server is built (building binds nothing) and given stand-in roles, so
:meth:`TrainingStreamServer._switch` and ``_leave`` are checked on their own:
where events go before, during and after a change, and what a failed start
leaves behind.
"""

from __future__ import annotations

from typing import Any

import pytest

from stream_hub import StreamConfig, TrainingStreamServer
from stream_hub.core.intake import Notifier, Sink, Submission
from stream_hub.processes.channel import JoinTarget
from stream_hub.roles.joined import Joined
from stream_hub.roles.publishing import Publishing


class FakeRole:
    """A role that records what the server asked of it; its sink keeps batches."""

    def __init__(
        self, name: str = "host", fail_start: bool = False, leftovers: list[Submission] | None = None
    ):
        self.name = name
        self.fail_start = fail_start
        self.leftovers = leftovers or []
        self.calls: list[str] = []
        self.batches: list[int] = []
        self.acked: dict[str, int] | None = None

    def _take(self, batch: list[Any], count: int) -> None:
        self.batches.append(count)

    @property
    def sink(self) -> Sink:
        return self._take

    @property
    def numbered(self) -> bool:
        return False

    @property
    def notifier(self) -> Notifier | None:
        return None

    @property
    def running(self) -> bool:
        return "start" in self.calls and "stop" not in self.calls

    @property
    def ports(self) -> dict[str, int]:
        return {"sse": 1, "ws": 2, "rest": 3}

    @property
    def urls(self) -> dict[str, str]:
        return {}

    def start(self) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise OSError("cannot start")

    def stop(self, timeout: float) -> None:
        self.calls.append("stop")

    def restart(self, timeout: float) -> None:
        self.calls.append("restart")

    def retire(self, acked: dict[str, int]) -> list[Submission]:
        self.calls.append("retire")
        self.acked = acked
        return self.leftovers

    def fork_target(self) -> JoinTarget | None:
        return None

    def disown_after_fork(self) -> None:
        self.calls.append("disown")

    def report(self, status: dict[str, Any]) -> None:
        status["fake"] = self.name

    def sources(self) -> list[dict[str, Any]]:
        return []

    def live_runs(self) -> set[str]:
        return {"theirs"}

    def live_tracks(self) -> set[tuple[str, int | None]]:
        return {("theirs", None)}


@pytest.fixture
def server() -> TrainingStreamServer:
    return TrainingStreamServer(StreamConfig(sse_port=0, ws_port=0, rest_port=0, port_conflict="fail"))


def test_a_new_server_has_no_role_and_numbers_into_its_own_hub(server: TrainingStreamServer) -> None:
    assert server.role is None and not server.running and server.ports == {}
    assert server.log({"loss": 1.0}) == 1
    assert server.hub.head == 1


def test_switch_routes_to_the_new_role_and_what_was_pending_follows(server: TrainingStreamServer) -> None:
    role = FakeRole("joined")
    server._switch(role)
    assert server.role == "joined" and server.running
    assert server.log({"loss": 1.0}) is None  # not numbered by this process
    assert role.batches == [1] and server.hub.head == 0
    assert server.status()["role"] == "joined" and server.status()["fake"] == "joined"
    assert "theirs" in server.live_runs()


def test_a_role_that_cannot_start_leaves_the_previous_one_in_place(server: TrainingStreamServer) -> None:
    first = FakeRole("joined")
    server._switch(first)
    with pytest.raises(OSError):
        server._switch(FakeRole("host", fail_start=True))
    assert server.role == "joined"
    server.log({"loss": 1.0})
    assert first.batches == [1]  # events still go to the role in place
    assert first.calls == ["start"]  # never retired


def test_a_failed_first_start_routes_back_to_the_servers_own_hub(server: TrainingStreamServer) -> None:
    with pytest.raises(OSError):
        server._switch(FakeRole("host", fail_start=True))
    assert server.role is None
    assert server.log({"loss": 1.0}) == 1


def test_the_previous_role_is_retired_after_the_next_started_and_its_leftovers_resubmitted(
    server: TrainingStreamServer,
) -> None:
    leftover: Submission = ("metric", "r", 7, {"loss": 3.0}, 1.0, None)
    old = FakeRole("joined", leftovers=[leftover])
    server._switch(old)
    new = FakeRole("host")
    order: list[str] = []
    new.start = lambda: order.append(f"new started, old calls {old.calls}")  # type: ignore[method-assign]
    server._switch(new, acked={"src": 4})
    assert order == ["new started, old calls ['start']"]
    assert old.calls == ["start", "retire"] and old.acked == {"src": 4}
    assert server.role == "host"
    assert sum(new.batches) == 1  # the leftover event, into the new role's sink


def test_leave_stops_the_role_and_routes_back_to_the_hub(server: TrainingStreamServer) -> None:
    role = FakeRole("joined")
    server._switch(role)
    server._leave(1.0)
    assert role.calls == ["start", "stop"]
    assert server.role is None and server.status()["role"] == "stopped"
    assert server.log({"loss": 1.0}) == 1  # numbered into its own hub again


def test_restart_keeps_the_role_and_counts(server: TrainingStreamServer) -> None:
    role = FakeRole("joined")
    server._switch(role)
    server.restart()
    assert role.calls == ["start", "restart"] and server.role == "joined" and server.restarts == 1


# -- the roles themselves -----------------------------------------------------------------------------


class FakeBackend:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.taken: list[int] = []

    def sink(self, batch: list[Any], count: int) -> None:
        self.taken.append(count)

    def start_publishing(self) -> None:
        self.calls.append("start")

    def stop_publishing(self, timeout: float) -> None:
        self.calls.append(f"stop {timeout}")


def test_publishing_starts_stops_and_restarts_its_backend() -> None:
    backend = FakeBackend()
    role = Publishing(backend)  # type: ignore[arg-type]
    assert role.name == "publisher" and role.ports == {} and not role.numbered
    role.start()
    role.restart(2.0)
    role.stop(1.0)
    assert backend.calls == ["start", "stop 2.0", "start", "stop 1.0"]
    role.sink([], 3)
    assert backend.taken == [3]
    assert role.fork_target() is None


def _target() -> JoinTarget:
    return JoinTarget(
        "unix:/nowhere", "tok", 4242, {"sse": 1, "ws": 2, "rest": 3}, {"rest": "http://h:3"}, "ep"
    )


def test_joined_queues_batches_and_a_retire_gives_back_what_the_hub_did_not_acknowledge(
    server: TrainingStreamServer,
) -> None:
    intake = server.hub.intake
    role = Joined(server.config, intake, _target(), find_host=lambda: None, take_over=None, forked=False)
    assert role.name == "joined" and role.ports == {"sse": 1, "ws": 2, "rest": 3}
    server._route(role)
    for step in range(3):  # three committed batches, numbered 1, 2, 3 by the forwarder
        intake.log({"loss": float(step)}, step=step, run="r")
        intake.commit()
    assert role.link.queued == 3
    events = role.retire({role.link.source: 1})
    assert [event[2] for event in events] == [1, 2]  # batch 1 was acknowledged
    assert role.link.queued == 0


def test_joined_reports_its_host_and_forwarding(server: TrainingStreamServer) -> None:
    role = Joined(
        server.config, server.hub.intake, _target(), find_host=lambda: None, take_over=None, forked=True
    )
    assert role.name == "forked" and role.fork_target() == _target()
    status: dict[str, Any] = {}
    role.report(status)
    assert status["host"]["pid"] == 4242 and status["epoch"] == "ep"
    assert status["forwarding"] == {"path": "socket", "queued": 0, "sent": 0, "dropped": 0}
