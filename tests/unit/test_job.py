"""The rules that give a process its default run, rank and whether it owns
the run (stream_hub/job.py; contract v3 "Run identity"), with plain values:
no processes. tests/integration/test_run_identity.py proves them in real ones."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from stream_hub import job
from stream_hub.errors import StreamHubError
from stream_hub.home import RunClaims
from stream_hub.job import PARENT_MARKER, JobIdentity, ProcessFacts, default_name, program, resolve

STARTED = time.mktime((2026, 11, 29, 22, 15, 3, 0, 0, -1))
LAUNCHER_STARTED = STARTED - 7
BASE = "train-20261129-221503"
LAUNCHER_BASE = "train-20261129-221456"

FACTS = ProcessFacts(
    argv0="/home/me/train.py",
    pid=200,
    started=STARTED,
    host="node1",
    parent_pid=100,
    parent_started=LAUNCHER_STARTED,
)


class Claims:
    """A stand-in for RunClaims: names each launch ``base`` + the launch it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def __call__(self, base: str, launch: str) -> str:
        self.asked.append((base, launch))
        return base


@pytest.fixture
def claims() -> Claims:
    return Claims()


def test_a_launch_of_its_own_claims_program_and_start_time(claims: Claims) -> None:
    identity = resolve({}, FACTS, claims)
    assert identity == JobIdentity(BASE, None, None, owns_run=True, source="process")
    assert claims.asked == [(BASE, f"node1:200:{STARTED:.2f}")]


def test_explicit_run_wins_over_job_id_and_parent(claims: Claims) -> None:
    env = {
        "STREAM_HUB_RUN": " exp1 ",
        "TORCHELASTIC_RUN_ID": "job42",
        "RANK": "1",
        "WORLD_SIZE": "2",
        PARENT_MARKER: "100:parent-run",
    }
    identity = resolve(env, replace(FACTS, multiprocessing_parent=100), claims)
    assert (identity.run, identity.rank, identity.world_size, identity.source) == ("exp1", 1, 2, "explicit")
    assert identity.owns_run and not claims.asked


def test_an_explicit_run_inherited_from_the_parent_is_not_owned(claims: Claims) -> None:
    facts = replace(FACTS, multiprocessing_parent=100)
    identity = resolve({"STREAM_HUB_RUN": "exp1", PARENT_MARKER: "100:exp1"}, facts, claims)
    assert identity.run == "exp1" and not identity.owns_run


@pytest.mark.parametrize(
    ("env", "run"),
    [
        ({"TORCHELASTIC_RUN_ID": "job42", "RANK": "0", "WORLD_SIZE": "4"}, "job42"),
        ({"TORCHELASTIC_RUN_ID": "job42", "LOCAL_RANK": "0"}, "job42"),
        ({"TORCHELASTIC_RUN_ID": "a/b c", "RANK": "0"}, "a-b-c"),
        ({"SLURM_JOB_ID": "123", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "8"}, "123"),
        ({"SLURM_JOB_ID": "123", "SLURM_STEP_ID": "2", "SLURM_PROCID": "0"}, "123.2"),
        ({"SLURM_JOB_ID": "123", "SLURM_STEPID": "1", "SLURM_PROCID": "0"}, "123.1"),
    ],
)
def test_ranks_of_a_job_are_named_after_its_id(env: dict[str, str], run: str, claims: Claims) -> None:
    identity = resolve(env, FACTS, claims)
    assert (identity.run, identity.source, identity.owns_run) == (run, "job", True)
    assert not claims.asked


@pytest.mark.parametrize(
    "env",
    [
        {"TORCHELASTIC_RUN_ID": "none", "RANK": "0"},  # torchrun without a rendezvous id: see the launcher
        {"SLURM_JOB_ID": "123"},  # the batch script, or a sweep's trial inside an allocation
        {"SLURM_JOB_ID": "123", "SLURM_PROCID": "0", "SLURM_STEP_ID": "4294967294"},  # the batch step
        {"TORCHELASTIC_RUN_ID": "job42"},  # no rank variable: a launch of its own
    ],
)
def test_no_job_id_without_a_rank_of_a_launch(env: dict[str, str], claims: Claims) -> None:
    assert job.job_id_run(env) is None
    assert resolve(env, FACTS, claims).source in ("process", "launcher")


def test_ranks_without_a_job_id_share_their_launchers_claim(claims: Claims) -> None:
    for env in ({"RANK": "2", "WORLD_SIZE": "4", "MASTER_PORT": "29500"}, {"LOCAL_RANK": "0"}):
        identity = resolve(env, FACTS, claims)
        assert (identity.run, identity.source, identity.owns_run) == (LAUNCHER_BASE, "launcher", True)
    launcher = f"node1:100:{LAUNCHER_STARTED:.2f}"
    assert claims.asked == [(LAUNCHER_BASE, launcher)] * 2


def test_a_multiprocessing_child_of_the_marked_pid_takes_its_run_and_does_not_own_it(claims: Claims) -> None:
    facts = replace(FACTS, multiprocessing_parent=100)
    identity = resolve({PARENT_MARKER: "100:train-20261129-221456-2"}, facts, claims)
    assert identity == JobIdentity("train-20261129-221456-2", None, None, owns_run=False, source="parent")
    assert not claims.asked


@pytest.mark.parametrize(
    ("marker", "mp_parent"),
    [
        ("100:parent-run", None),  # an ordinary subprocess (a sweep's trial)
        ("100:parent-run", 101),  # a multiprocessing child of another process
        ("garbage", 100),
        ("100:", 100),
        (":run", 100),
    ],
)
def test_anything_else_does_not_inherit(marker: str, mp_parent: int | None, claims: Claims) -> None:
    facts = replace(FACTS, multiprocessing_parent=mp_parent)
    identity = resolve({PARENT_MARKER: marker}, facts, claims)
    assert (identity.run, identity.source, identity.owns_run) == (BASE, "process", True)


def test_a_job_id_wins_over_an_inherited_run(claims: Claims) -> None:
    facts = replace(FACTS, multiprocessing_parent=100)
    env = {"TORCHELASTIC_RUN_ID": "job42", "RANK": "0", "WORLD_SIZE": "2"}
    other = resolve({**env, PARENT_MARKER: "100:something-else"}, facts, claims)
    assert (other.run, other.source, other.owns_run) == ("job42", "job", True)
    # A DataLoader worker of a rank: the rank's run, which the rank owns.
    worker = resolve({**env, PARENT_MARKER: "100:job42"}, facts, claims)
    assert (worker.run, worker.rank, worker.owns_run) == ("job42", 0, False)


@pytest.mark.parametrize(
    ("env", "rank", "world"),
    [
        ({"RANK": "3", "WORLD_SIZE": "4"}, 3, 4),
        ({"RANK": "0", "WORLD_SIZE": "1"}, None, None),  # one process is not a distributed job
        ({"RANK": "x", "WORLD_SIZE": "4"}, None, None),
        ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8"}, 5, 8),
        ({"RANK": "1"}, 1, None),
    ],
)
def test_the_rank(env: dict[str, str], rank: int | None, world: int | None, claims: Claims) -> None:
    identity = resolve(env, FACTS, claims)
    assert (identity.rank, identity.world_size) == (rank, world)


@pytest.mark.parametrize(
    ("argv0", "name"),
    [
        ("/home/me/train.py", "train"),
        ("/site/pkg/__main__.py", "pkg"),
        ("-c", "python"),
        ("", "python"),
        ("/x/ipykernel_launcher.py", "python"),
        ("/home/me/exp 1.ipynb", "exp-1"),
        ("my run!.py", "my-run-"),
        ("..", "python"),
    ],
)
def test_program_names(argv0: str, name: str) -> None:
    assert program(argv0) == name


def test_default_name_is_program_and_local_start_second() -> None:
    assert default_name("/home/me/train.py", STARTED) == BASE


def test_with_real_claims_two_launches_in_one_second_differ(tmp_path: Path) -> None:
    real = RunClaims(tmp_path)
    first = resolve({}, FACTS, real.claim)
    second = resolve({}, replace(FACTS, pid=201), real.claim)
    again = resolve({}, FACTS, real.claim)
    assert (first.run, second.run, again.run) == (BASE, f"{BASE}-2", BASE)


def test_without_a_usable_home_the_name_is_still_unique_and_training_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(base: str, launch: str) -> str:
        raise StreamHubError("read-only")

    with caplog.at_level(logging.WARNING, logger="stream_hub.job"):
        identity = resolve({}, FACTS, broken)
    assert identity.run == f"{BASE}-p200"
    assert "could not claim" in caplog.text


# -- this process ------------------------------------------------------------------------


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(job, "_CURRENT", None)
    monkeypatch.setattr(job, "_CURRENT_PID", 0)
    monkeypatch.delenv(PARENT_MARKER, raising=False)
    monkeypatch.delenv("STREAM_HUB_RUN", raising=False)
    yield


def test_current_is_worked_out_once_and_leaves_the_marker(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_HUB_RUN", "exp7")
    identity = job.current()
    assert identity.run == "exp7" and identity.owns_run
    assert os.environ[PARENT_MARKER] == f"{os.getpid()}:exp7"
    monkeypatch.setenv("STREAM_HUB_RUN", "other")
    assert job.current() is identity


def test_a_child_forked_after_its_parent_worked_it_out_keeps_the_run_without_owning_it(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = JobIdentity("train-1", 2, 4)
    monkeypatch.setattr(job, "_CURRENT", parent)
    monkeypatch.setattr(job, "_CURRENT_PID", os.getpid() + 1)  # as seen by the forked child
    child = job.current()
    assert child == JobIdentity("train-1", 2, 4, owns_run=False, source="parent")
    assert os.environ[PARENT_MARKER] == f"{os.getpid()}:train-1"


# -- Lightning's own launcher (one ``python train.py``, ranks re-launched without RANK) ----------

LIGHTNING = {"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "29500"}


def test_lightnings_local_rank_0_is_the_launcher_and_claims_for_itself(claims: Claims) -> None:
    identity = resolve(LIGHTNING, FACTS, claims)
    assert (identity.run, identity.rank, identity.world_size, identity.source) == (BASE, 0, 2, "launcher")
    assert claims.asked == [(BASE, f"node1:200:{STARTED:.2f}")]  # its own launch, as before the launch


def test_a_rank_lightning_relaunched_finds_its_launchers_claim(claims: Claims) -> None:
    # rank 1's parent is local rank 0: FACTS' parent (100) stands for it here
    identity = resolve({**LIGHTNING, "LOCAL_RANK": "1"}, FACTS, claims)
    assert (identity.run, identity.rank, identity.world_size) == (LAUNCHER_BASE, 1, 2)
    assert claims.asked == [(LAUNCHER_BASE, f"node1:100:{LAUNCHER_STARTED:.2f}")]


@pytest.mark.parametrize(
    "env",
    [
        {**LIGHTNING, "LOCAL_RANK": "1", "NODE_RANK": "1"},  # another node: the global rank is unknown
        {**LIGHTNING, "WORLD_SIZE": "1"},  # one process
        {"LOCAL_RANK": "1", "WORLD_SIZE": "2"},  # no NODE_RANK: not Lightning's launcher
    ],
)
def test_no_rank_from_lightnings_variables_when_they_do_not_tell_it(
    env: dict[str, str], claims: Claims
) -> None:
    assert resolve(env, FACTS, claims).rank is None


def test_torchrun_variables_win_over_lightnings(claims: Claims) -> None:
    env = {**LIGHTNING, "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    identity = resolve(env, FACTS, claims)
    assert (identity.rank, identity.source) == (3, "launcher") and identity.run == LAUNCHER_BASE


def test_a_rank_adopted_later_is_kept_and_a_known_one_is_not_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(job, "_CURRENT", JobIdentity("r", None, None))
    monkeypatch.setattr(job, "_CURRENT_PID", os.getpid())
    assert job.adopt_rank(1, 2) == JobIdentity("r", 1, 2)
    assert job.current().rank == 1
    assert job.adopt_rank(0, 2).rank == 1  # known: kept
    for bad in ((-1, None), (2, 2), (True, None)):
        with pytest.raises(ValueError, match="rank"):
            job.adopt_rank(*bad)  # type: ignore[arg-type]


def test_no_notebook_outside_a_running_ipython_shell() -> None:
    # JPY_SESSION_NAME inherited by a program started from a notebook (!python train.py)
    assert job.notebook_path({"JPY_SESSION_NAME": "/home/me/exp.ipynb"}) is None
