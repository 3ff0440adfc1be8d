"""One run per experiment, with real processes (contract v3 "Run identity"):
launches of one program in the same second get distinct runs, the ranks of
a launch share one, multiprocessing children (spawn, forkserver, fork) log
into their parent's run without owning it, a plain subprocess does not
inherit, and an explicit run wins. The rules themselves are unit-tested in
tests/unit/test_job.py.

Each test has a data directory of its own (``STREAM_HUB_HOME`` under its
``tmp_path``), so the claims of one test never push another's names.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ..processes import PYTHON, Spawner, child_env, run

# Prints this process's identity as one JSON line, then, by mode:
#   report                    nothing more
#   mp METHOD...              the identity of a multiprocessing child per start method
#   mp-early                  the same for forkserver, its server started before the parent's identity
#   subprocess                the identity of a plain `python this report` child
#   launch N                  like torchrun: N ranks (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_PORT),
#                             each a plain subprocess; the launcher prints nothing of its own
SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, os, subprocess, sys
    import psutil
    from stream_hub import job

    def identity():
        marker = os.environ.get(job.PARENT_MARKER)  # what this process was given
        me = job.current()
        return {"run": me.run, "rank": me.rank, "owns_run": me.owns_run, "source": me.source,
                "pid": os.getpid(), "started": int(psutil.Process().create_time()), "given": marker}

    # AT_IMPORT: children work their identity out while importing this module
    # (spawn: before multiprocessing has told them who their parent is).
    IMPORTED = identity() if __name__ == "__mp_main__" and os.environ.get("AT_IMPORT") else None

    def child(queue):
        queue.put(identity())

    def nothing():
        pass

    if __name__ == "__main__":
        mode = sys.argv[1]
        if mode == "mp-early":  # the forkserver starts (and keeps its environment) before the parent's run
            early = multiprocessing.get_context("forkserver").Process(target=nothing)
            early.start()
            early.join(60)
            mode = "mp"
            sys.argv[2:] = ["forkserver"]
        if mode == "launch":
            n = int(sys.argv[2])
            ranks = [
                subprocess.Popen(
                    [sys.executable, __file__, "report"], stdout=subprocess.PIPE, text=True,
                    env={**os.environ, "RANK": str(r), "WORLD_SIZE": str(n), "LOCAL_RANK": str(r),
                         "MASTER_PORT": "29500"},
                )
                for r in range(n)
            ]
            for rank in ranks:
                print(rank.communicate(timeout=60)[0].strip(), flush=True)
            sys.exit(max(rank.returncode for rank in ranks))
        print(json.dumps(identity()), flush=True)
        if mode == "mp":
            for method in sys.argv[2:]:
                context = multiprocessing.get_context(method)
                queue = context.Queue()
                process = context.Process(target=child, args=(queue,))
                process.start()
                got = queue.get(timeout=60)
                process.join(60)
                print(json.dumps({"method": method, **got}), flush=True)
        elif mode == "subprocess":
            done = subprocess.run([sys.executable, __file__, "report"], capture_output=True, text=True,
                                  check=True, timeout=60)
            print(done.stdout.strip(), flush=True)
    """
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "trainjob.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return child_env(STREAM_HUB_HOME=str(tmp_path / "home"))


def lines(args: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    done = run(args, env=env, prefix=PYTHON, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_launches_of_one_program_in_the_same_second_get_distinct_runs(
    spawn: Spawner, script: Path, env: dict[str, str], tmp_path: Path
) -> None:
    for attempt in range(5):  # until four launches start within one second (nearly always the first)
        # A data directory of its own per attempt: an earlier attempt's claims would shift the suffixes.
        env = {**env, "STREAM_HUB_HOME": str(tmp_path / f"home{attempt}")}
        procs = [spawn.start([str(script), "report"], env=env, prefix=PYTHON) for _ in range(4)]
        assert all(proc.wait(60) == 0 for proc in procs), [proc.err.text[-2000:] for proc in procs]
        got = [json.loads(proc.out.lines[0]) for proc in procs]
        if len({g["started"] for g in got}) == 1:
            break
    else:
        pytest.fail("four launches never started within one second")
    runs = sorted(g["run"] for g in got)
    assert len(set(runs)) == 4, runs
    base = min(runs, key=len)
    assert base.startswith("trainjob-") and runs == sorted([base, *(f"{base}-{n}" for n in (2, 3, 4))])
    assert all(g["source"] == "process" and g["owns_run"] for g in got)
    claims = Path(env["STREAM_HUB_HOME"]) / "runs" / "claims"
    assert sorted(os.listdir(claims)) == runs


def test_the_data_directory_is_made_owner_only_on_first_use_not_at_import(
    tmp_path: Path, env: dict[str, str]
) -> None:
    home = Path(env["STREAM_HUB_HOME"])
    code = "import stream_hub, stream_hub.job, stream_hub.home, os, sys; print(os.path.exists(sys.argv[1]))"
    assert run(["-c", code, str(home)], env=env, prefix=PYTHON).stdout.strip() == "False"
    code = "from stream_hub import job; print(job.current().run)"
    name = run(["-c", code], env=env, prefix=PYTHON).stdout.strip()
    assert name.startswith("python-")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert os.listdir(home / "runs" / "claims") == [name]


def test_ranks_of_a_launch_share_one_run_and_two_launches_do_not(
    spawn: Spawner, script: Path, env: dict[str, str]
) -> None:
    launchers = [spawn.start([str(script), "launch", "3"], env=env, prefix=PYTHON) for _ in range(2)]
    assert all(launcher.wait(120) == 0 for launcher in launchers), [p.err.text[-2000:] for p in launchers]
    runs = []
    for launcher in launchers:
        ranks = [json.loads(line) for line in launcher.out.lines]
        assert [r["rank"] for r in ranks] == [0, 1, 2]
        assert len({r["run"] for r in ranks}) == 1, ranks
        assert all(r["source"] == "launcher" and r["owns_run"] for r in ranks)
        runs.append(ranks[0]["run"])
    assert runs[0] != runs[1] and all(r.startswith("trainjob-") for r in runs)


def test_ranks_with_a_job_id_are_named_after_it(script: Path, env: dict[str, str]) -> None:
    ranks = lines([str(script), "launch", "3"], {**env, "TORCHELASTIC_RUN_ID": "job42"})
    assert [(r["run"], r["rank"], r["source"]) for r in ranks] == [("job42", n, "job") for n in range(3)]


METHODS = ["spawn", "forkserver", "fork"] if sys.platform != "win32" else ["spawn"]


@pytest.mark.parametrize("at_import", [False, True], ids=["after-start-up", "at-import"])
def test_multiprocessing_children_log_into_their_parents_run_without_owning_it(
    script: Path, env: dict[str, str], at_import: bool
) -> None:
    if at_import:
        env = {**env, "AT_IMPORT": "1"}
    parent, *children = lines([str(script), "mp", *METHODS], env)
    assert parent["source"] == "process" and parent["owns_run"] and parent["run"].startswith("trainjob-")
    assert [c["method"] for c in children] == METHODS
    for c in children:
        assert (c["run"], c["owns_run"], c["source"]) == (parent["run"], False, "parent"), c
        assert c["pid"] != parent["pid"]
    # Nothing claimed for the children: the parent's run is the only one.
    assert os.listdir(Path(env["STREAM_HUB_HOME"]) / "runs" / "claims") == [parent["run"]]


def test_a_plain_subprocess_does_not_inherit_although_it_sees_the_marker(
    script: Path, env: dict[str, str]
) -> None:
    parent, child = lines([str(script), "subprocess"], env)
    assert child["given"] == f"{parent['pid']}:{parent['run']}"  # it was there, and not taken
    assert child["run"] != parent["run"] and child["source"] == "process" and child["owns_run"]


def test_an_explicit_run_wins_and_the_children_still_do_not_own_it(script: Path, env: dict[str, str]) -> None:
    explicit = {**env, "STREAM_HUB_RUN": "myexp", "TORCHELASTIC_RUN_ID": "job42", "RANK": "0"}
    parent, *children = lines([str(script), "mp", *METHODS], explicit)
    assert (parent["run"], parent["source"], parent["owns_run"]) == ("myexp", "explicit", True)
    assert all((c["run"], c["owns_run"]) == ("myexp", False) for c in children), children
    assert not (Path(env["STREAM_HUB_HOME"]) / "runs" / "claims").exists()  # nothing to claim


@pytest.mark.skipif(sys.platform == "win32", reason="forkserver is a POSIX start method")
def test_a_forkserver_started_before_the_parent_knew_its_run_still_gives_children_that_run(
    script: Path, env: dict[str, str]
) -> None:
    # The forkserver's environment is the parent's before its run existed, so
    # the child finds no marker there: it asks the data directory instead.
    parent, child = lines([str(script), "mp-early"], env)
    assert child["given"] is None
    assert (child["run"], child["owns_run"], child["source"]) == (parent["run"], False, "parent"), child
    assert os.listdir(Path(env["STREAM_HUB_HOME"]) / "runs" / "claims") == [parent["run"]]
