"""What the README's import line costs, beside ``import json``: the median of
several fresh interpreters (time of the import statement itself and of the
whole process, modules it loaded, stream_hub's own among them, and the heavy ones that should wait for
a server).

    PYTHONPATH=. python scripts/bench_import.py [--runs 15]
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import statistics
import subprocess
import sys
import time

README_LINE = "from stream_hub import get_stream_server, release_stream_server, StreamConfig"
HEAVY = ("starlette", "fastapi", "uvicorn", "websockets", "sqlite3", "prometheus_client", "psutil", "httpx")

# Runs in the fresh interpreter, importing nothing but builtins before the
# statement: its time and what it added to sys.modules, printed as a literal.
PROBE = """
import sys, time
before = set(sys.modules)
t0 = time.perf_counter()
exec(compile(sys.argv[1], "<import>", "exec"))
elapsed = time.perf_counter() - t0
new = set(sys.modules) - before
print(repr({"ms": elapsed * 1000, "modules": len(new),
            "ours": sum(1 for m in new if m == "stream_hub" or m.startswith("stream_hub.")),
            "heavy": sorted(h for h in sys.argv[2].split(",") if h in sys.modules)}))
"""


def measure(statement: str, runs: int) -> dict[str, object]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", PROBE, statement, ",".join(HEAVY)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        sample = ast.literal_eval(out)
        sample["process_ms"] = (time.perf_counter() - t0) * 1000
        samples.append(sample)
    return {
        "ms": statistics.median(s["ms"] for s in samples),
        "process_ms": statistics.median(s["process_ms"] for s in samples),
        "modules": statistics.median(s["modules"] for s in samples),
        "ours": statistics.median(s["ours"] for s in samples),
        "heavy": samples[-1]["heavy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="The README's import line, beside import json.")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"nproc {os.cpu_count()}, Python {platform.python_version()}, median of {args.runs} fresh runs")
    print("| statement | import | whole process | modules loaded | stream_hub's | heavy ones loaded |")
    print("|---|---|---|---|---|---|")
    for statement in ("import json", README_LINE):
        r = measure(statement, args.runs)
        heavy = ", ".join(r["heavy"]) or "none"  # type: ignore[arg-type]
        print(
            f"| `{statement}` | {r['ms']:.1f} ms | {r['process_ms']:.0f} ms | {r['modules']:.0f} "
            f"| {r['ours']:.0f} | {heavy} |"
        )


if __name__ == "__main__":
    main()
