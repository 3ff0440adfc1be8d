"""The port resolver, decided with plain values: no sockets, no processes.

:func:`stream_hub.roles.placement.place` is given a :class:`FakeMachine`
saying which ports are held, by whom, and what a recorded hub is; each test
checks the decision (or the refusal) for one situation.
"""

from __future__ import annotations

import dataclasses

import pytest

from stream_hub import StreamConfig
from stream_hub.errors import ConfigError, PortInUseError, StreamHubError
from stream_hub.processes.channel import JoinTarget
from stream_hub.processes.registry import HubRecord
from stream_hub.roles.placement import Holder, Host, Join, Publish, Wait, place, uses_registry

PORTS = {"sse": 7001, "ws": 7002, "rest": 7003}


@dataclasses.dataclass
class FakeMachine:
    """What the resolver is told: held ports (port -> pid), guards, the record's hub."""

    held: dict[int, int] = dataclasses.field(default_factory=dict)
    refusals: dict[int, str] = dataclasses.field(default_factory=dict)
    hub: str = "live"
    production: bool = False
    now: float = 1000.0
    my_pid: int = 1
    probed: list[int] = dataclasses.field(default_factory=list)

    def in_use(self, port: int) -> bool:
        return port in self.held

    def holder(self, port: int, transport: str) -> Holder:
        pid = self.held.get(port)
        return Holder(port, transport, pid, f"prog{pid}" if pid else None, self.refusals.get(port))

    def next_free(self, port: int, transport: str, exclude: set[int]) -> int:
        candidate = port + 1
        while candidate in self.held or candidate in exclude:
            candidate += 1
        return candidate

    def hub_state(self, record: HubRecord, stale_timeout: float) -> str:
        self.probed.append(record.pid)
        return self.hub

    def target(self, record: HubRecord) -> JoinTarget:
        return JoinTarget(record.channel, record.token, record.pid, dict(record.ports), {}, record.epoch)


def config(**changes: object) -> StreamConfig:
    values: dict[str, object] = {
        "sse_port": 7001,
        "ws_port": 7002,
        "rest_port": 7003,
        "port_conflict": "auto",
    }
    values.update(changes)
    return StreamConfig(**values)  # type: ignore[arg-type]


def record(pid: int = 42, ports: dict[str, int] | None = None, **changes: object) -> HubRecord:
    rec = HubRecord(
        key="127.0.0.1-7001-7002-7003",
        pid=pid,
        host="127.0.0.1",
        configured=dict(PORTS),
        ports=dict(ports or PORTS),
        epoch="e1",
        token="t",
        channel="unix:/x",
        started=0.0,
    )
    return rec.replace(**changes) if changes else rec


# -- which configs meet others in the registry ----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, True),
        ({"port_conflict": "join"}, True),
        ({"port_conflict": "fail"}, False),
        ({"port_conflict": "next"}, False),
        ({"rest_port": 0}, False),
    ],
)
def test_uses_registry_only_with_fixed_ports_and_auto_or_join(
    changes: dict[str, object], expected: bool
) -> None:
    assert uses_registry(config(**changes)) is expected


# -- the simple inputs -------------------------------------------------------------------------------


def test_a_backend_without_replica_publishes_whatever_holds_the_ports() -> None:
    machine = FakeMachine(held={7001: 9, 7003: 9})
    assert (
        place(config(backend="redis://localhost:6379", replica=False), machine, record=record()) == Publish()
    )
    assert machine.probed == []


def test_a_restart_hosts_on_the_same_ports_without_probing() -> None:
    machine = FakeMachine(held={7001: 9})
    decision = place(config(), machine, restart_ports={"sse": 5, "ws": 6, "rest": 7})
    assert decision == Host({"sse": 5, "ws": 6, "rest": 7})


def test_a_successor_keeps_free_ports_and_moves_off_one_taken_meanwhile() -> None:
    machine = FakeMachine(held={7002: 77})
    decision = place(config(), machine, successor_ports=PORTS)
    assert decision == Host({"sse": 7001, "ws": 7004, "rest": 7003})


# -- the registry --------------------------------------------------------------------------------------


def test_no_record_and_free_ports_hosts_on_the_configured_ports() -> None:
    assert place(config(), FakeMachine(), record=None) == Host(dict(PORTS))


def test_a_live_hub_of_this_user_is_joined() -> None:
    decision = place(config(), FakeMachine(held={7001: 42, 7002: 42, 7003: 42}), record=record())
    assert isinstance(decision, Join) and decision.target.pid == 42


def test_a_record_naming_this_very_process_is_not_joined() -> None:
    with pytest.raises(StreamHubError, match="this very process"):
        place(config(), FakeMachine(my_pid=42), record=record(pid=42))


def test_a_host_handing_over_makes_newcomers_wait_until_its_deadline() -> None:
    machine = FakeMachine()
    decision = place(config(), machine, record=record(successor=43, handover_until=1005.0))
    assert decision == Wait(1005.0)
    assert machine.probed == []  # nothing is probed while a successor is on its way


def test_an_expired_hand_over_is_probed_like_any_record() -> None:
    machine = FakeMachine(hub="dead")
    decision = place(config(), machine, record=record(successor=43, handover_until=999.0))
    assert isinstance(decision, Host) and machine.probed == [42]


@pytest.mark.parametrize("state", ["dead", "gone"])
def test_a_dead_or_gone_hub_is_forgotten_and_its_ports_hosted(state: str) -> None:
    rec = record()
    decision = place(config(), FakeMachine(hub=state), record=rec)
    assert decision == Host(dict(PORTS), forget=rec)


def test_a_busy_hub_is_joined_never_ended_nor_moved_off() -> None:
    machine = FakeMachine(hub="busy", held={7001: 42, 7002: 42, 7003: 42})
    decision = place(config(), machine, record=record())
    assert isinstance(decision, Join) and decision.target.pid == 42


def test_a_wedged_hub_is_ended_in_development_and_its_ports_count_as_free() -> None:
    rec = record()
    machine = FakeMachine(hub="wedged", held={7001: 42, 7002: 42, 7003: 42})
    decision = place(config(), machine, record=rec)
    assert decision == Host(dict(PORTS), end_wedged=rec, forget=rec)


def test_a_wedged_hub_is_refused_in_production() -> None:
    machine = FakeMachine(hub="wedged", production=True, held={7003: 42})
    with pytest.raises(PortInUseError, match="production never ends a process"):
        place(config(), machine, record=record())


@pytest.mark.parametrize("state", ["stopped", "foreign"])
def test_a_stopped_or_foreign_holder_is_never_ended_the_hub_moves(state: str) -> None:
    machine = FakeMachine(hub=state, held={7001: 42, 7002: 42, 7003: 42})
    decision = place(config(), machine, record=record())
    # REST first: it is the lock between hubs, so it takes the first port up.
    assert decision == Host({"sse": 7005, "ws": 7006, "rest": 7004})
    assert not decision.evict and decision.end_wedged is None


def test_a_foreign_program_on_one_port_moves_only_that_port() -> None:
    decision = place(config(), FakeMachine(held={7003: 99}), record=None)
    assert decision == Host({"sse": 7001, "ws": 7002, "rest": 7004})


def test_a_moved_port_never_takes_a_port_another_transport_asked_for() -> None:
    # sse is held; the next port up is ws's own.
    decision = place(config(), FakeMachine(held={7001: 99}), record=None)
    assert decision == Host({"sse": 7004, "ws": 7002, "rest": 7003})


def test_production_refuses_a_foreign_holder_naming_it() -> None:
    machine = FakeMachine(held={7002: 99}, production=True)
    with pytest.raises(PortInUseError) as info:
        place(config(), machine, record=None)
    assert info.value.port == 7002 and info.value.pid == 99


def test_join_without_a_live_hub_raises() -> None:
    with pytest.raises(StreamHubError, match='port_conflict="join"'):
        place(config(port_conflict="join"), FakeMachine(hub="dead"), record=record())


def test_a_process_that_may_not_host_joins_or_raises() -> None:
    decision = place(config(), FakeMachine(), record=record(), may_host=False)
    assert isinstance(decision, Join)
    with pytest.raises(StreamHubError):
        place(config(), FakeMachine(hub="dead"), record=record(), may_host=False)


# -- the other policies ------------------------------------------------------------------------------


def test_fail_refuses_a_busy_port_before_anything_is_done() -> None:
    with pytest.raises(PortInUseError, match="never frees a port"):
        place(config(port_conflict="fail"), FakeMachine(held={7002: 99}))


def test_free_evicts_each_holder_after_examining_them_all() -> None:
    decision = place(config(port_conflict="free"), FakeMachine(held={7001: 98, 7003: 99}))
    assert isinstance(decision, Host) and decision.ports == PORTS
    assert sorted(h.pid for h in decision.evict if h.pid) == [98, 99]


def test_free_refuses_a_guarded_holder_and_evicts_none() -> None:
    machine = FakeMachine(held={7001: 98, 7003: 99}, refusals={7003: "pid 99 is your shell"})
    with pytest.raises(PortInUseError, match="your shell"):
        place(config(port_conflict="free"), machine)


def test_next_takes_the_next_free_ports_distinct() -> None:
    decision = place(config(port_conflict="next"), FakeMachine(held={7001: 9, 7004: 9}))
    assert isinstance(decision, Host)
    assert decision.ports["sse"] not in (7001, 7002, 7003, 7004)
    assert len(set(decision.ports.values())) == 3


def test_auto_with_a_port_zero_moves_off_a_holder_and_never_ends_it() -> None:
    decision = place(config(sse_port=0), FakeMachine(held={7003: 99}))
    assert decision == Host({"sse": 0, "ws": 7002, "rest": 7004})


def test_port_zero_is_never_busy() -> None:
    assert place(config(sse_port=0, ws_port=0, rest_port=0), FakeMachine()) == Host(
        {"sse": 0, "ws": 0, "rest": 0}
    )


def test_two_transports_on_one_port_name_the_field() -> None:
    with pytest.raises(ConfigError, match="each transport needs its own port"):
        place(config(port_conflict="fail", ws_port=7001), FakeMachine())


# -- busy, stopped, wedged: from the process state and the CPU it used ------------------------------


@pytest.mark.parametrize(
    ("status", "cpu", "wall", "expected"),
    [
        ("running", 1.4, 1.5, "busy"),  # a long C call holding the GIL
        ("running", 0.3, 1.5, "busy"),  # the same, on a machine loaded 5x
        ("disk-sleep", 0.0, 1.5, "busy"),  # waiting on a big read
        ("sleeping", 0.0, 1.5, "wedged"),  # a blocking call holding the GIL
        ("sleeping", 0.01, 1.5, "wedged"),  # a little noise from a C thread
        ("stopped", 0.0, 1.5, "stopped"),  # Ctrl-Z
        ("tracing-stop", 0.0, 1.5, "stopped"),  # a debugger
        ("zombie", 0.0, 1.5, "dead"),
    ],
)
def test_a_hub_that_does_not_answer_is_classified_by_state_and_cpu(
    status: str, cpu: float, wall: float, expected: str
) -> None:
    from stream_hub.processes.rendezvous import unanswered_state

    assert unanswered_state(status, cpu, wall) == expected


# -- a stopped process holding the registry lock -------------------------------------------------------


def test_a_stopped_lock_holder_is_treated_like_a_stopped_hub_the_newcomer_moves() -> None:
    decision = place(config(), FakeMachine(), record=None, lock_held_by_stopped=77)
    assert isinstance(decision, Host)
    assert set(decision.ports.values()).isdisjoint(PORTS.values())


def test_a_stopped_lock_holder_still_lets_a_newcomer_join_a_live_hub() -> None:
    decision = place(config(), FakeMachine(), record=record(), lock_held_by_stopped=77)
    assert isinstance(decision, Join)


def test_a_stopped_lock_holder_is_refused_in_production() -> None:
    with pytest.raises(StreamHubError, match="pid 77 is stopped"):
        place(config(), FakeMachine(production=True), record=None, lock_held_by_stopped=77)
