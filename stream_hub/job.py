"""What this process is part of: the run its events go to by default, whether
it owns that run, and its rank in a distributed job (contract v3, "Run
identity").

The default run, first rule that applies:

1. ``STREAM_HUB_RUN``, when set: the user named it.
2. The job's id, for one rank of a launch that has one: ``SLURM_JOB_ID``
   (``<job>`` for step 0, ``<job>.<step>`` for later ``srun`` steps) or
   ``TORCHELASTIC_RUN_ID`` (unless it is ``none``). Every rank computes the
   same name, on every node. A job id wins over an inherited run.
3. The parent's run, for a ``multiprocessing`` child (``spawn``,
   ``forkserver``, ``fork``): the parent leaves :data:`PARENT_MARKER`
   (``<pid>:<run>``) in its environment when it works out its run, and a
   child takes it only if it is a multiprocessing child of that very pid —
   any other subprocess (a sweep's trials) is a launch of its own. A child
   whose environment lacks the marker (forked from a forkserver started
   before its parent worked out its run) asks the data directory, where
   each process records its run (:class:`stream_hub.home.ProcessRuns`).
4. ``<program>-<start time>`` (``train-20261129-221503``; in a notebook's
   kernel the program is the notebook, when it is known: ``exp-20261129-221503``
   for ``exp.ipynb``, see :func:`notebook_path`), claimed under
   ``STREAM_HUB_HOME`` (:class:`stream_hub.home.RunClaims`) so that two
   launches never share it: the second launch of a program in the same second
   gets ``train-20261129-221503-2``. For one rank of several without a job id
   (``RANK``/``LOCAL_RANK`` set, by ``torchrun``, ``mpirun``, ...) the time
   and the claim are the launcher's (the parent process: its pid and start
   time), so all its ranks find the same name. Lightning's own launcher
   (``Trainer(strategy="ddp")`` started as one ``python train.py``) runs
   local rank 0 in the process the user started and re-launches the script
   for the others (``LOCAL_RANK``, ``NODE_RANK``, ``WORLD_SIZE``, no
   ``RANK``): its local rank 0 is the launcher, so it claims for itself and
   the other ranks (its children) find the same name.

A process *owns* its run unless it took it from its parent (rule 3, or the
same run by rules 1-2 as the parent that started it): a multiprocessing child
never ends its parent's run.

The rank comes from ``RANK`` (torchrun) or ``SLURM_PROCID`` (srun), when the
job has more than one process (``WORLD_SIZE``/``SLURM_NTASKS``); under
Lightning's launcher on its first node (``NODE_RANK`` 0) it is ``LOCAL_RANK``.
A framework that learns the rank later (Lightning's rank 0, whose variables
are set after it started; other nodes) gives it with :func:`adopt_rank`.

The identity is worked out once per process, the first time a hub needs it
(at the latest when a server is made), never at import. A child forked
without exec keeps its parent's run and rank, and does not own the run.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import psutil

from .errors import StreamHubError
from .home import ProcessRuns, RunClaims

__all__ = [
    "PARENT_MARKER",
    "RUN_VARIABLE",
    "JobIdentity",
    "ProcessFacts",
    "adopt_rank",
    "current",
    "notebook_path",
    "resolve",
]

logger = logging.getLogger(__name__)

RUN_VARIABLE = "STREAM_HUB_RUN"
PARENT_MARKER = "_STREAM_HUB_PARENT_RUN"
"""``<pid>:<run>``: set by a process when it works out its run, read by its
multiprocessing children. Internal, and distinct from ``STREAM_HUB_RUN``: a
subprocess that is not a multiprocessing child ignores it."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Slurm's pseudo-steps (batch script, extern, interactive): not an srun launch.
_SLURM_SPECIAL_STEPS = 0xFFFFFFF0

Claimer = Callable[[str, str], str]
"""``claim(base, launch) -> name``: see :meth:`stream_hub.home.RunClaims.claim`."""
ParentRun = Callable[[int, "float | None"], "str | None"]
"""``recorded(pid, started) -> run``: see :meth:`stream_hub.home.ProcessRuns.lookup`."""


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """This process's default run and rank.

    Attributes:
        run: the run events go to when ``log``/``publish`` name none.
        rank: the rank in a distributed job (None outside one).
        world_size: the job's number of processes (None when unknown).
        owns_run: whether this process may end ``run`` when it finishes.
            False for a process that took its parent's run (a multiprocessing
            child, a child forked without exec): the parent ends it. The ranks
            of a job each own it; it ends with the last of them.
        source: which rule chose ``run``: ``"explicit"`` (``STREAM_HUB_RUN``),
            ``"job"`` (the job's id), ``"parent"`` (inherited), ``"launcher"``
            (claimed for the launcher of several ranks) or ``"process"``
            (claimed for this process's own launch).
    """

    run: str
    rank: int | None
    world_size: int | None
    owns_run: bool = True
    source: str = "process"

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        argv0: str | None = None,
        claim: Claimer | None = None,
    ) -> JobIdentity:
        """Work out the identity of this process from ``environ`` (default:
        ``os.environ``), claiming a name under ``STREAM_HUB_HOME`` when rule 4
        applies (``claim`` replaces that, for tests)."""
        env = os.environ if environ is None else environ
        facts = ProcessFacts.of_this_process()
        if argv0 is not None:
            facts = replace(facts, argv0=argv0)
        if claim is not None:
            return resolve(env, facts, claim)
        return resolve(env, facts, _claim_in_home(env), _recorded_in_home(env))


@dataclass(frozen=True, slots=True)
class ProcessFacts:
    """What the rules need to know about this process beyond its environment."""

    argv0: str
    pid: int
    started: float
    host: str
    parent_pid: int | None = None
    parent_started: float | None = None
    multiprocessing_parent: int | None = None
    """The pid of the process whose multiprocessing child this is (None if it is not one)."""
    multiprocessing_parent_started: float | None = None

    @classmethod
    def of_this_process(cls) -> ProcessFacts:
        pid = os.getpid()
        started = time.time()
        parent_pid: int | None = None
        parent_started: float | None = None
        try:
            proc = psutil.Process(pid)
            started = float(proc.create_time())
            parent = proc.parent()
            if parent is not None and parent.pid > 1:
                parent_pid, parent_started = parent.pid, float(parent.create_time())
        except (psutil.Error, OSError):
            pass
        mp_parent = _multiprocessing_parent()
        mp_parent_started: float | None = None
        if mp_parent is not None:
            try:
                mp_parent_started = float(psutil.Process(mp_parent).create_time())
            except (psutil.Error, OSError):
                pass
        return cls(
            argv0=notebook_path(os.environ) or (sys.argv[0] if sys.argv else ""),
            pid=pid,
            started=started,
            host=socket.gethostname(),
            parent_pid=parent_pid,
            parent_started=parent_started,
            multiprocessing_parent=mp_parent,
            multiprocessing_parent_started=mp_parent_started,
        )


def resolve(
    env: Mapping[str, str], facts: ProcessFacts, claim: Claimer, recorded: ParentRun | None = None
) -> JobIdentity:
    """The identity the module docstring's rules give (pure but for
    ``claim`` and ``recorded``, the run a process recorded)."""
    rank, world = _rank(env)
    marker = parent_marker(env)
    mp_parent = facts.multiprocessing_parent
    inherited = marker[1] if marker is not None and marker[0] == mp_parent else None
    if inherited is None and marker is None and mp_parent is not None and recorded is not None:
        inherited = recorded(mp_parent, facts.multiprocessing_parent_started)
    explicit = env.get(RUN_VARIABLE, "").strip()
    job_run = job_id_run(env)
    if explicit:
        run, source = explicit, "explicit"
    elif job_run is not None:
        run, source = job_run, "job"
    elif inherited is not None:
        run, source = inherited, "parent"
    elif _lightning_launcher(env):  # the ranks it starts find this process's claim
        base = default_name(facts.argv0, facts.started)
        run = _claimed(claim, base, facts.host, facts.pid, facts.started)
        source = "launcher"
    elif _launched(env, rank) and facts.parent_pid is not None and facts.parent_started is not None:
        base = default_name(facts.argv0, facts.parent_started)
        run = _claimed(claim, base, facts.host, facts.parent_pid, facts.parent_started)
        source = "launcher"
    else:
        base = default_name(facts.argv0, facts.started)
        run = _claimed(claim, base, facts.host, facts.pid, facts.started)
        source = "process"
    return JobIdentity(run, rank, world, owns_run=run != inherited, source=source)


# -- the rules' parts --------------------------------------------------------------------


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None and value.strip() else None
    except ValueError:
        return None


def _rank(env: Mapping[str, str]) -> tuple[int | None, int | None]:
    for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        rank, size = _int(env.get(rank_var)), _int(env.get(size_var))
        if rank is not None and rank >= 0 and (size is None or size > 1):
            return rank, size
    if _lightning_launch(env) and _int(env.get("NODE_RANK")) in (None, 0):
        # On the first node a local rank is the global one; on others the
        # number of processes per node is not in the environment (adopt_rank).
        rank, size = _int(env.get("LOCAL_RANK")), _int(env.get("WORLD_SIZE"))
        if rank is not None and size is not None and 0 <= rank < size:
            return rank, size
    return None, None


def _lightning_launch(env: Mapping[str, str]) -> bool:
    """A rank started by Lightning's own launcher (``_SubprocessScriptLauncher``):
    it sets ``LOCAL_RANK``, ``NODE_RANK`` and ``WORLD_SIZE`` but no ``RANK``
    (torchrun, mpirun, accelerate and srun set theirs)."""
    return (
        "RANK" not in env
        and "SLURM_PROCID" not in env
        and "TORCHELASTIC_RUN_ID" not in env
        and "NODE_RANK" in env
        and (_int(env.get("WORLD_SIZE")) or 0) > 1
        and _int(env.get("LOCAL_RANK")) is not None
    )


def _lightning_launcher(env: Mapping[str, str]) -> bool:
    """Local rank 0 under Lightning's launcher: the process the user started,
    which re-launched the script for the other local ranks."""
    return _lightning_launch(env) and _int(env.get("LOCAL_RANK")) == 0


def _launched(env: Mapping[str, str], rank: int | None) -> bool:
    """One rank of several started by a launcher (torchrun sets ``LOCAL_RANK``
    even for a single process)."""
    return rank is not None or _int(env.get("LOCAL_RANK")) is not None


def job_id_run(env: Mapping[str, str]) -> str | None:
    """The run named after the job's id, for a rank of a launch that has one
    (None otherwise): an ``srun`` task (``SLURM_JOB_ID`` with a step and a
    ``SLURM_PROCID``), or a torchrun rank (``TORCHELASTIC_RUN_ID`` with
    ``RANK`` or ``LOCAL_RANK``). A process that merely runs inside a Slurm
    allocation (the batch script, a sweep's trials) is a launch of its own."""
    job = env.get("SLURM_JOB_ID", "").strip()
    step = _int(env.get("SLURM_STEP_ID", env.get("SLURM_STEPID")))
    if job and step is not None and 0 <= step < _SLURM_SPECIAL_STEPS and "SLURM_PROCID" in env:
        return _safe(job if step == 0 else f"{job}.{step}", 200)
    elastic = env.get("TORCHELASTIC_RUN_ID", "").strip()
    if elastic and elastic.lower() != "none" and ("RANK" in env or "LOCAL_RANK" in env):
        return _safe(elastic, 200)
    return None


def parent_marker(env: Mapping[str, str]) -> tuple[int, str] | None:
    """``(pid, run)`` from :data:`PARENT_MARKER`, or None when absent or malformed."""
    pid_text, sep, run = env.get(PARENT_MARKER, "").partition(":")
    pid = _int(pid_text)
    return (pid, run) if sep and pid is not None and pid > 0 and run else None


def _multiprocessing_parent() -> int | None:
    """The pid of the parent if this is a multiprocessing child, else None.

    After its start-up, a child knows its parent (``parent_process()``, for
    every start method). While a ``spawn`` child still imports the parent's
    main module (module-level code), it does not yet; its command line says
    it is one (``--multiprocessing-fork``) and its parent is the parent. A
    ``forkserver`` child imports it forked from the forkserver (whose command
    line says what it is), which the parent started."""
    process = sys.modules.get("multiprocessing.process")
    if process is not None:
        parent = process.parent_process()
        if parent is not None and parent.pid is not None:
            return int(parent.pid)
    argv = getattr(sys, "orig_argv", ())
    if "--multiprocessing-fork" in argv:  # a spawn child, started by its parent
        return os.getppid()
    if _forkserver(argv):
        # The forkserver (started by the parent) or, forked from it, a child
        # still starting: the parent is the one that started the forkserver.
        try:
            parent = psutil.Process(os.getppid())
            return parent.ppid() if _forkserver(parent.cmdline()) else parent.pid
        except (psutil.Error, OSError):
            return None
    return None


def _forkserver(argv: Sequence[str]) -> bool:
    return any("multiprocessing.forkserver" in arg for arg in argv)


#: Where a notebook's front end leaves the notebook's path in its kernel's
#: namespace: VS Code, then Jupyter (``__session__``, ipykernel 6.10+).
NOTEBOOK_NAMES = ("__vsc_ipynb_file__", "__session__")


def notebook_path(env: Mapping[str, str]) -> str | None:
    """The notebook this process runs as a kernel of, when its front end
    says (None otherwise): VS Code's ``__vsc_ipynb_file__`` or Jupyter's
    ``__session__`` in IPython's namespace, else ``JPY_SESSION_NAME`` (set by
    Jupyter Server in a kernel's environment). Only inside IPython: a
    program started from a notebook (``!python train.py``) inherits
    ``JPY_SESSION_NAME`` but is not the notebook. IPython is never imported."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    if shell is None:
        return None
    namespace = getattr(shell, "user_ns", None)
    if isinstance(namespace, dict):
        for key in NOTEBOOK_NAMES:
            value = namespace.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    value = env.get("JPY_SESSION_NAME", "").strip()
    return value or None


def program(argv0: str) -> str:
    """The program's name for a run: the script's (or notebook's) stem, a
    ``-m`` package's name, else ``python``."""
    path = argv0.rstrip("/") if argv0 and argv0 != "-c" else ""
    name = os.path.basename(path)
    for suffix in (".py", ".ipynb"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name == "__main__":  # python -m package: the package's name
        name = os.path.basename(os.path.dirname(path))
    if name in ("", "-m", "ipykernel_launcher"):
        name = "python"
    return _safe(name, 60).lstrip(".") or "python"


def default_name(argv0: str, started: float) -> str:
    """``<program>-<local start time>``, e.g. ``train-20261129-221503``."""
    return f"{program(argv0)}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}"


def launch_key(host: str, pid: int, started: float) -> str:
    """What every process of one launch computes alike: the launching
    process (host, pid, start time: a pid is reused, not with the same start)."""
    return f"{host}:{pid}:{started:.2f}"


def _safe(text: str, limit: int) -> str:
    return _UNSAFE.sub("-", text)[:limit]


def _claimed(claim: Claimer, base: str, host: str, pid: int, started: float) -> str:
    """The name claimed for the launch started by ``pid``."""
    try:
        return claim(base, launch_key(host, pid, started))
    except (OSError, StreamHubError) as exc:
        # Training goes on without the data directory: a name still unique
        # on this host (the launching pid, within its start second).
        fallback = f"{base}-p{pid}"
        logger.warning("could not claim run name %s (%s); logging into %s", base, exc, fallback)
        return fallback


def _recorded_in_home(env: Mapping[str, str]) -> ParentRun:
    def recorded(pid: int, started: float | None) -> str | None:
        try:
            return ProcessRuns.in_home(env).lookup(pid, started)
        except StreamHubError:
            return None

    return recorded


def _record(pid: int, run: str) -> None:
    """Record this process's run for its multiprocessing children (rule 3)."""
    try:
        started = float(psutil.Process(pid).create_time())
        ProcessRuns.in_home().record(pid, started, run, psutil.pid_exists)
    except (psutil.Error, OSError, StreamHubError) as exc:
        logger.debug("could not record this process's run for its children: %s", exc)


def _claim_in_home(env: Mapping[str, str]) -> Claimer:
    def claim(base: str, launch: str) -> str:
        return RunClaims.in_home(env).claim(base, launch)

    return claim


# -- this process ------------------------------------------------------------------------

_CURRENT: JobIdentity | None = None
_CURRENT_PID = 0


def current() -> JobIdentity:
    """This process's identity, worked out on first use and kept.

    Also leaves :data:`PARENT_MARKER` for this process's multiprocessing
    children. A child forked without exec that finds its parent's identity
    keeps its run and rank and does not own the run."""
    global _CURRENT, _CURRENT_PID
    pid = os.getpid()
    if _CURRENT is not None and _CURRENT_PID == pid:
        return _CURRENT
    if _CURRENT is not None:  # forked after the parent worked its identity out
        identity = replace(_CURRENT, owns_run=False, source="parent")
    else:
        identity = JobIdentity.from_environment()
    _CURRENT, _CURRENT_PID = identity, pid
    os.environ[PARENT_MARKER] = f"{pid}:{identity.run}"
    _record(pid, identity.run)
    logger.debug(
        "run %s (%s%s), rank %s",
        identity.run,
        identity.source,
        "" if identity.owns_run else ", not owned",
        identity.rank,
    )
    return identity


def adopt_rank(rank: int, world_size: int | None = None) -> JobIdentity:
    """Take ``rank`` as this process's rank when it has none yet (a framework
    that knows it — Lightning's rank 0, whose launcher variables appear after
    the identity was worked out); a rank already known is kept. Returns the
    identity now in force. Servers made before keep stamping what they
    stamped: :meth:`stream_hub.TrainingStreamServer.adopt_rank` updates one.

    Raises:
        ValueError: ``rank`` is negative, or not below ``world_size``.
    """
    global _CURRENT
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be a non-negative int, got {rank!r}")
    if world_size is not None and not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not below world_size {world_size}")
    identity = current()
    if identity.rank is None:
        identity = replace(identity, rank=rank, world_size=world_size)
        _CURRENT = identity
        logger.debug("rank %s adopted (world size %s)", rank, world_size)
    return identity
