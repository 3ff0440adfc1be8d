"""Keeping freed buffers from staying in a hub process's RSS (glibc only).

A serving hub allocates and frees many large buffers: request bodies, joined
chunks of events, the send buffers of slow clients (up to the transport's
high-water mark plus one chunk each). glibc's malloc serves a request of at
least ``M_MMAP_THRESHOLD`` bytes (128 KiB) with its own ``mmap`` and gives it
back to the kernel when freed, but it *raises* that threshold to the size of
every mmapped block freed (up to 32 MiB). After the first 1 MiB body, buffers
below 1 MiB come from the heap instead, and a heap pinned by small live
objects keeps the freed ones as RSS: in the 2-minute soak (200 stalled and 200
healthy clients, 1 MiB events), the hub's RSS peaked at 935 MiB with the
default and at 381 MiB with the threshold fixed at 128 KiB.

Fixing the threshold is a process-wide choice that costs every larger
allocation an ``mmap``: right for a process that only serves
(``stream-hub serve``/``demo`` make it), not for a training process whose
framework allocates large buffers all the time, where it is never made by
default. Setting ``MALLOC_MMAP_THRESHOLD_=131072`` in the environment makes
the same choice for any process, and is left alone here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["DEFAULT_THRESHOLD", "fix_mmap_threshold"]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 128 * 1024  # glibc's own starting value
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def fix_mmap_threshold(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process.

    Returns True when it was set; False where it does not apply (not Linux,
    not glibc, or the environment already says what the threshold is).
    """
    if not 0 < threshold <= 32 * 1024 * 1024:
        raise ValueError(f"threshold must be 1 B to 32 MiB, got {threshold!r}")
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        logger.debug("malloc's mmap threshold is set by the environment; left alone")
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    if done:
        logger.debug("malloc's mmap threshold fixed at %d bytes", threshold)
    return done
