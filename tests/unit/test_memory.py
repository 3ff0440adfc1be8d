"""glibc's mmap threshold, fixed by stream_hub.runtime.memory: freed large
buffers go back to the kernel instead of staying in the heap (and in RSS)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from stream_hub.runtime.memory import fix_mmap_threshold

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# After one 4 MiB buffer is freed, glibc serves anything smaller from the heap;
# 64 buffers of 512 KiB, each followed by a small block that stays, are freed.
RETAINED = """
import sys, psutil
from stream_hub.runtime.memory import fix_mmap_threshold
print(fix_mmap_threshold() if sys.argv[1] == "fixed" else None)
big = bytearray(4 << 20)
del big
proc = psutil.Process()
before = proc.memory_info().rss
buffers, pins = [], []
for _ in range(64):
    buf = bytearray(512 * 1024)
    buf[::4096] = b"\\x01" * (len(buf) // 4096)  # every page touched
    buffers.append(buf)
    pins.append(bytes(3000))  # from malloc's heap, not pymalloc's arenas
del buffers
print(proc.memory_info().rss - before)
"""


def _retained(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", RETAINED, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout.split()
    return out[0], int(out[1])


def test_a_fixed_threshold_gives_freed_buffers_back() -> None:
    applied, fixed = _retained("fixed")
    assert applied == "True"
    _, default = _retained("default")
    mib = 1 << 20
    # The default keeps the 32 MiB it freed; fixed, it is unmapped at once.
    assert default > 24 * mib, f"the default malloc gave {default / mib:.1f} MiB back (expected kept)"
    assert fixed < 8 * mib, f"{fixed / mib:.1f} MiB of freed buffers still in RSS with the threshold fixed"


def test_the_environment_wins() -> None:
    applied, _ = _retained("fixed", {"MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert applied == "False"


def test_a_threshold_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        fix_mmap_threshold(0)
