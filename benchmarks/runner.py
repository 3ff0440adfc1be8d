"""Run one figure group for one side in a fresh, spawned worker process.

No figure inherits another's threads, garbage or allocator state, and the two
sides never share a process. A worker that fails or hangs yields an
``{"error": ...}`` result instead of taking the whole run down.
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .clients import raise_fd_limit
from .groups import GROUPS

logger = logging.getLogger(__name__)

__all__ = ["run_isolated"]


def _worker_main(pipe: Connection, group: str, side_name: str, sz: dict[str, Any], log_level: int) -> None:
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s {side_name}/{group} %(name)s %(levelname)s %(message)s",
    )
    raise_fd_limit()
    if side_name == "baseline":
        # The hand-written hub makes asyncio warn about every send to a client that has
        # already gone; that is the baseline's normal life, not news.
        logging.getLogger("asyncio").setLevel(logging.ERROR)
    try:
        result = GROUPS[group](side_name, sz)
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    pipe.send(result)
    pipe.close()


def run_isolated(group: str, side_name: str, sz: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one figure group for one side in a fresh process; never raises."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_worker_main,
        name=f"bench-{side_name}-{group}",
        args=(child, group, side_name, sz, logging.getLogger().getEffectiveLevel()),
    )
    proc.start()
    child.close()
    try:
        if parent.poll(timeout):
            result: dict[str, Any] = parent.recv()
        else:
            result = {"error": f"timed out after {timeout:.0f} s"}
    except EOFError:
        result = {"error": f"worker died (exit code {proc.exitcode})"}
    finally:
        parent.close()
    proc.join(15)
    if proc.is_alive():
        logger.warning("%s/%s worker did not exit; terminating it", side_name, group)
        proc.terminate()
        proc.join(5)
    return result
