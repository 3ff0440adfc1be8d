"""The garbage collector in a process that only serves.

Every collection holds the GIL, so the loop thread answers nothing while one
runs, whichever thread started it. A serving hub gives the collector a lot to
do: each connection it accepts and closes (asyncio's transports, uvicorn's
and websockets' protocols, their tasks) lives for seconds, long enough to be
promoted to the oldest generation, and each full collection then walks every
container object alive: the interpreter's modules, FastAPI's and pydantic's
models, uvicorn, websockets (~65 000 objects once a server has started),
besides the connections and the curves the hub keeps (~110 000 in all). In
the soak (a hub process, 400 clients, reconnections every few seconds, a
1 MiB body every 3 s) a full collection came every 2-3 s and took 50-140 ms
of CPU.

:func:`tune_for_serving` makes two process-wide choices:

- what is loaded by the time the server runs lives as long as the process:
  it is frozen out of the collector's sight (:func:`gc.freeze`), so a full
  collection walks only what came later (median 73 -> 27 ms of CPU in the
  soak);
- collections are made rarer (``gc.set_threshold(10_000, 10, 100)``): the
  young generation is collected every 10 000 allocations, not 700, so the
  objects of a request or of a parsed body are mostly gone by then, and a
  full collection waits for 100 collections of the middle generation, not
  10. In the soak (72 s each): collections of the middle generation 6 652 ->
  736, full ones 38 -> 12 with ``(10_000, 10, 10)``, and none during the load
  with ``(10_000, 10, 100)``; one in the 3-minute run.

Frozen objects are still freed when their last reference goes; only a
reference cycle among them never would be. Cycles made later (a closed
connection leaves a few) wait longer for a full collection: a few MB.
Right for a process that only serves (``stream-hub serve``/``demo`` make
these choices once the server has started), not for a training process,
whose objects and allocation patterns are not ours to decide for, where
they are never made by default.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["SERVING_THRESHOLDS", "tune_for_serving"]

logger = logging.getLogger(__name__)

#: gc.set_threshold() of a process that only serves (see the module docstring).
SERVING_THRESHOLDS = (10_000, 10, 100)


def tune_for_serving() -> int:
    """Collect, freeze every object alive now (:func:`gc.freeze`) and make
    collections rarer (:data:`SERVING_THRESHOLDS`); returns how many objects
    the collector ignores from now on."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)
    frozen = gc.get_freeze_count()
    logger.debug("%d objects frozen out of the collector's sight; thresholds %s", frozen, SERVING_THRESHOLDS)
    return frozen
