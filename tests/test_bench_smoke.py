"""The benchmark still runs end to end and produces every figure for both sides.

Only that the figures exist is checked, never how large they are: the targets
are checked by ``scripts/bench.py`` itself, on a quiet machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_tiny_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--tiny",
         "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=85,
    )
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    doc = json.loads(out.read_text())
    assert doc["mode"] == "tiny"
    figures = doc["figures"]
    expected = {
        "publish_us", "publish_us_1client", "fanout_sse_per_s", "fanout_ws_per_s",
        "latency_p50_ms", "latency_p99_ms", "train_slowdown_pct",
        "train_cpu_overhead_pct", "train_watch_p99_ms", "start_ms", "stop_ms",
        "restart_ms", "rss_kb_per_client",
    }
    assert expected <= set(figures)
    for key in expected:
        for side in ("stream_hub", "baseline"):
            value = figures[key][side]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, side)
            assert math.isfinite(value), (key, side, value)
        assert figures[key]["result"] in (None, "PASS", "MISS")
    assert "| figure" in proc.stdout
