"""Benchmark stream_hub against the hand-written baseline hub, side by side.

    python scripts/bench.py            # full run (a few minutes)
    python scripts/bench.py --quick    # under a minute, smaller sizes
    python scripts/bench.py --quick --tiny --json /tmp/b.json   # smoke-test sizes

Each figure runs in a fresh process per side (the sides alternate, so drift
in the machine's load hits both alike); the clients run in a further process.
Prints a table ``figure | stream_hub | baseline | ratio | target | result``
(ratio > 1 means stream_hub is better) and writes every figure and its
details to a JSON file (default ``bench_results.json``). The store's figures
(groups ``store``, ``store_slowdown``) compare stream_hub with and without a
store, and have no baseline.
``STREAM_HUB_BENCH_TINY=1`` is the same as ``--tiny``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.clients import raise_fd_limit  # noqa: E402
from benchmarks.figures import calibrate_work  # noqa: E402
from benchmarks.groups import GROUPS, OURS_ONLY  # noqa: E402
from benchmarks.report import machine_info, render_table, summarize  # noqa: E402
from benchmarks.runner import run_isolated  # noqa: E402
from benchmarks.scratch import scratch_home  # noqa: E402
from benchmarks.sides import SIDES  # noqa: E402

logger = logging.getLogger("bench")

FULL: dict[str, Any] = {
    "publish_batches": 20,
    "publish_batch": 20_000,
    "fanout_clients": 50,
    "fanout_burst": 5_000,
    "fanout_rounds": 3,
    "fanout_timeout": 120.0,
    "latency_clients": 20,
    "latency_rate": 500,
    "latency_seconds": 5.0,
    "latency_window_s": 3.0,
    "latency_windows": 5,
    "train_clients": 50,
    "train_segment_s": 1.0,
    "train_segments": 7,
    "processes_train_reps": 9,
    "processes_ingest_events": 100_000,
    "lifecycle_cycles": 20,
    "memory_clients": 1_000,
    "redis_publishers": 4,
    "redis_ingest_events": 100_000,
    "redis_latency_rate": 1000,
    "redis_latency_seconds": 5.0,
    "redis_clients": 25,
    "redis_burst": 5_000,
    "store_seconds": 4.0,
    "store_train_rate": 10_000,
    "store_train_segments": 7,
    "shm_spin_rate": 1000,
    "shm_spin_seconds": 5.0,
    "shm_cpu_batches": 7,
    "shm_cpu_batch": 20_000,
    "shm_train_rate": 10_000,
    "shm_train_segment_s": 1.0,
    "shm_train_reps": 7,
}
QUICK: dict[str, Any] = {
    **FULL,
    "publish_batches": 8,
    "publish_batch": 10_000,
    "fanout_burst": 1_000,
    "fanout_rounds": 2,
    "fanout_timeout": 60.0,
    "latency_seconds": 2.0,
    "latency_windows": 3,
    "train_segment_s": 0.5,
    "train_segments": 4,
    "processes_train_reps": 5,
    "processes_ingest_events": 50_000,
    "lifecycle_cycles": 10,
    "memory_clients": 300,
    "redis_ingest_events": 50_000,
    "redis_latency_seconds": 2.0,
    "redis_clients": 10,
    "redis_burst": 2_000,
    "store_seconds": 2.0,
    "store_train_segments": 4,
    "shm_spin_seconds": 2.0,
    "shm_cpu_batches": 3,
    "shm_train_segment_s": 0.5,
    "shm_train_reps": 3,
}
TINY: dict[str, Any] = {
    **QUICK,
    "publish_batches": 3,
    "publish_batch": 500,
    "fanout_clients": 5,
    "fanout_burst": 100,
    "fanout_rounds": 1,
    "fanout_timeout": 20.0,
    "latency_clients": 3,
    "latency_rate": 200,
    "latency_seconds": 0.3,
    "latency_window_s": 0.3,
    "latency_windows": 1,
    "train_clients": 5,
    "train_segment_s": 0.1,
    "train_segments": 2,
    "processes_train_reps": 1,
    "processes_ingest_events": 500,
    "lifecycle_cycles": 2,
    "memory_clients": 20,
    "redis_ingest_events": 500,
    "redis_latency_rate": 200,
    "redis_latency_seconds": 0.3,
    "redis_clients": 2,
    "redis_burst": 100,
    "store_seconds": 1.0,
    "store_train_segments": 1,
    "shm_spin_rate": 200,
    "shm_spin_seconds": 0.3,
    "shm_cpu_batches": 1,
    "shm_cpu_batch": 500,
    "shm_train_segment_s": 0.1,
    "shm_train_reps": 1,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes; under a minute")
    p.add_argument(
        "--tiny",
        action="store_true",
        default=os.environ.get("STREAM_HUB_BENCH_TINY", "") not in ("", "0"),
        help="smoke-test sizes: proves every figure is produced, measures nothing",
    )
    p.add_argument(
        "--json",
        default="bench_results.json",
        metavar="PATH",
        help="where to write the figures (default: %(default)s)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=sorted(GROUPS),
        metavar="GROUP",
        help=f"run only these figure groups: {', '.join(GROUPS)}",
    )
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    return p.parse_args(argv)


def _code_version() -> dict[str, Any]:
    """The commit measured, and whether stream_hub/ had uncommitted changes."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "stream_hub_dirty": bool(git("status", "--porcelain", "--", "stream_hub")),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    raise_fd_limit()
    # Hubs persist by default (contract v3): a benchmark's thousands of runs
    # go to a data directory of its own, never to the user's.
    scratch_home()
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = dict(TINY if args.tiny else QUICK if args.quick else FULL)
    sizes["work_n"] = calibrate_work(0.002)
    # Per group. A tiny run is a smoke test, often on a loaded machine: its
    # groups are mostly process start-ups, which a busy machine stretches.
    timeout = 120.0 if mode == "quick" else 600.0
    groups = args.only or list(GROUPS)

    started = time.time()
    loadavg_at_start = list(os.getloadavg())
    results: dict[str, dict[str, Any]] = {side: {} for side in SIDES}
    for group in groups:
        for side in args.sides:
            if group in OURS_ONLY and side != "stream_hub":
                continue
            t0 = time.perf_counter()
            logger.info("running %s for %s", group, side)
            result = run_isolated(group, side, sizes, timeout)
            result["seconds"] = round(time.perf_counter() - t0, 2)
            results[side][group] = result
            if "error" in result:
                logger.error(
                    "%s/%s failed: %s\n%s",
                    side,
                    group,
                    result["error"],
                    result.get("traceback", ""),
                )
            else:
                logger.info("%s/%s: %s (%.1f s)", side, group, result["figures"], result["seconds"])

    summary = summarize(results, sizes)
    machine = {**machine_info(), "loadavg_at_start": loadavg_at_start}
    doc = {
        "schema": 1,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "mode": mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "code": _code_version(),
        "machine": machine,
        "sizes": sizes,
        "figures": summary,
        "raw": results,
    }
    Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")

    print(render_table(summary))
    misses = [k for k, row in summary.items() if row["result"] == "MISS"]
    errors = [f"{side}/{g}" for side, r in results.items() for g, v in r.items() if "error" in v]
    print(
        f"\nload average {loadavg_at_start[0]:.1f} at start, "
        f"{machine.get('loadavg_at_end', [math.nan])[0]:.1f} at end on {machine['cpus']} CPUs"
    )
    print(
        f"{mode} run, {doc['elapsed_s']} s; targets: "
        f"{sum(r['result'] == 'PASS' for r in summary.values())} PASS, {len(misses)} MISS"
        + (f"; errors in {', '.join(errors)}" if errors else "")
        + f"; figures written to {args.json}"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
