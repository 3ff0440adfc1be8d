"""What this process is part of: the run its events go to by default, and its
rank in a distributed job.

- The default run is the job's id when there is one (``SLURM_JOB_ID``;
  ``TORCHELASTIC_RUN_ID`` unless it is ``none``), otherwise
  ``<program>-<start time>`` (e.g. ``train-20261129-221503``), so two
  experiments never share a run by accident and every rank of a job shares
  one. The start time is that of the process that launched the ranks
  (``torchrun``, ``mpirun``) when the environment says this is one rank of
  several, else this process's own.
- The rank comes from ``RANK`` (torchrun) or ``SLURM_PROCID`` (srun), when
  the job has more than one process (``WORLD_SIZE``/``SLURM_NTASKS``).

Both are worked out once, the first time a hub needs them (at the latest
when a server is made), and kept: a forked child (a DataLoader worker) keeps
its parent's run and rank.
"""

from __future__ import annotations

import os
import re
import sys
import time

import psutil

__all__ = ["JobIdentity", "current"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class JobIdentity:
    """The default run name and the rank (None outside a distributed job)."""

    __slots__ = ("rank", "run", "world_size")

    def __init__(self, run: str, rank: int | None, world_size: int | None) -> None:
        self.run = run
        self.rank = rank
        self.world_size = world_size

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None, argv0: str | None = None) -> JobIdentity:
        env = dict(os.environ) if environ is None else environ
        rank, world = _rank(env)
        return cls(_default_run(env, argv0 if argv0 is not None else _argv0(), world), rank, world)


def _argv0() -> str:
    return sys.argv[0] if sys.argv else ""


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None and value.strip() else None
    except ValueError:
        return None


def _rank(env: dict[str, str]) -> tuple[int | None, int | None]:
    for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        rank, size = _int(env.get(rank_var)), _int(env.get(size_var))
        if rank is not None and rank >= 0 and (size is None or size > 1):
            return rank, size
    return None, None


def _program(argv0: str) -> str:
    path = argv0.rstrip("/") if argv0 and argv0 != "-c" else ""
    name = os.path.basename(path)
    if name.endswith(".py"):
        name = name[:-3]
    if name == "__main__":  # python -m package: the package's name
        name = os.path.basename(os.path.dirname(path))
    if name in ("", "-m", "ipykernel_launcher"):
        name = "python"
    return _UNSAFE.sub("-", name)[:60] or "python"


def _start_time(launched: bool) -> float:
    """When this process (or, for one rank of several, its launcher) started."""
    try:
        proc = psutil.Process()
        if launched:
            parent = proc.parent()
            if parent is not None and parent.pid > 1:
                return float(parent.create_time())
        return float(proc.create_time())
    except (psutil.Error, OSError):
        return time.time()


def _default_run(env: dict[str, str], argv0: str, world: int | None) -> str:
    for var in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        value = env.get(var, "").strip()
        if value and value.lower() != "none":
            return _UNSAFE.sub("-", value)[:200]
    launched = world is not None or env.get("LOCAL_RANK") is not None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(_start_time(launched)))
    return f"{_program(argv0)}-{stamp}"


_CURRENT: JobIdentity | None = None


def current() -> JobIdentity:
    """This process's identity (worked out on first use, then kept: a forked
    child inherits its parent's)."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = JobIdentity.from_environment()
    return _CURRENT
