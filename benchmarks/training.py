"""The stand-in for a training step: fixed pure-Python work, and its calibration.

Shared by the figures that time a training loop (the slowdown group, the
processes group), so one calibrated ``work_n`` means the same step in both.
"""

from __future__ import annotations

import statistics
import time

__all__ = ["calibrate_work", "work"]


def work(n: int) -> int:
    """Fixed pure-Python arithmetic standing in for one training step."""
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFF
    return x


def calibrate_work(step_seconds: float = 0.002) -> int:
    """The ``work`` size that takes about ``step_seconds`` on this machine."""
    n = 20_000
    work(n)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        work(n)
        times.append(time.perf_counter() - t0)
    return max(1000, int(n * step_seconds / statistics.median(times)))
