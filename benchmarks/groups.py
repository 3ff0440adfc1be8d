"""Every figure group: the side-by-side ones (:mod:`benchmarks.figures`)
and the store's (:mod:`benchmarks.store`), which measure stream_hub only."""

from __future__ import annotations

from .figures import GROUPS as SIDE_BY_SIDE
from .shm_figures import fig_shm
from .store import STORE_GROUPS

__all__ = ["GROUPS", "OURS_ONLY"]

GROUPS = {**SIDE_BY_SIDE, "shm": fig_shm, **STORE_GROUPS}
#: Groups with no baseline to compare with: run for the stream_hub side only.
OURS_ONLY = frozenset(STORE_GROUPS)
