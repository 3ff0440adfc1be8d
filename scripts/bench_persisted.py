"""How fast thousands of persisted runs list (contract v3, "After the fact").

    python scripts/bench_persisted.py [--files 30] [--runs 100] [--steps 200]

Builds a data directory (a temporary ``STREAM_HUB_HOME``) of ``--files``
default-store files, each written by a real hub holding ``--runs`` runs of
``--steps`` metric events (3 metrics). Then, side by side, repeated:

- ``stream-hub runs``' listing (``store.catalog.persisted_runs``: one summary
  row per run read from each file, curves left in the file), against the
  plain way (every file's ``SELECT state FROM runs``, each state parsed
  whole, curves included);
- ``GET /api/runs`` of a ``stream-hub serve`` over that directory (the first
  answer reads the files; later ones within 5 s are served from memory);
- one persisted run's curves, ``GET /api/runs/{run}/series``;
- with ``--page``: the dashboard of that ``stream-hub serve`` in headless
  Chromium (Playwright, ``/usr/bin/chromium``): first render (the page's
  ``firstFullRenderMs``: every chart on screen drawn after the first load),
  the curve requests it made, and the page's JavaScript heap.

``--home DIR`` builds the data directory there once and reuses it on the
next runs (the build takes minutes at 3 000 runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build(home: Path, files: int, runs: int, steps: int) -> None:
    from stream_hub import StreamConfig, get_stream_server, release_stream_server

    machine = socket.gethostname().split(".")[0]
    directory = home / "store" / machine
    directory.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        path = directory / f"20261207-{f:06d}-{os.getpid()}.db"
        config = StreamConfig(sse_port=0, ws_port=0, rest_port=0, store=str(path), max_runs=max(runs, 1000))
        server = get_stream_server(config=config)
        for r in range(runs):
            name = f"sweep-{f:03d}-{r:03d}"
            server.publish("config", {"lr": 10 ** -(r % 5), "batch": 32 * (1 + r % 4)}, run=name)
            for step in range(steps):
                server.log({"loss": 1 / (step + 1), "acc": step / steps, "lr": 0.1}, step=step, run=name)
            server.publish("run_end", {"status": "finished"}, run=name)
        release_stream_server()


def plain_listing(home: Path) -> int:
    """The straightforward way: parse every run's whole saved state."""
    import orjson

    count = 0
    for path in sorted((home / "store").glob("*/*.db")):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            for (state,) in conn.execute("SELECT state FROM runs"):
                run = orjson.loads(state)
                run.pop("tracks", None)
                count += 1
    return count


def timed(fn: object, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def first_render(rest: str) -> dict[str, float]:
    """Open the dashboard of ``rest`` in headless Chromium: its first render,
    the curve requests made until then, the runs it knows, its heap."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url) if "/series" in r.url else None)
            page.goto(rest + "/")
            deadline = time.monotonic() + 300
            while True:
                done = page.evaluate(
                    "() => { const d = window.streamHub && window.streamHub.debug();"
                    " return d ? d.stats.firstFullRenderMs : null; }"
                )
                if done is not None:
                    break
                if time.monotonic() > deadline:  # reported as such, with what it had asked for
                    done = float("inf")
                    break
                time.sleep(0.05)  # polling the page, bounded by the deadline
            heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : 0")
            runs = page.evaluate("() => window.streamHub.debug().runs.length")
            return {
                "first_ms": float(done),
                "series_requests": float(len(requests)),
                "runs": float(runs),
                "heap_mb": heap / 1e6,
            }
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--page", action="store_true", help="also time the dashboard's first render")
    parser.add_argument("--home", type=Path, help="build the data directory here once, reuse it after")
    args = parser.parse_args()
    kept = args.home is not None
    home = args.home.resolve() if kept else Path(tempfile.mkdtemp(prefix="stream_hub-bench-persisted-"))
    os.environ["STREAM_HUB_HOME"] = str(home)
    try:
        t0 = time.perf_counter()
        if not (home / "built").exists():
            build(home, args.files, args.runs, args.steps)
            (home / "built").write_text("")
        total = args.files * args.runs
        size = sum(p.stat().st_size for p in (home / "store").glob("*/*"))
        print(
            f"built {args.files} files, {total} runs, {total * args.steps} metric events, "
            f"{size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s"
        )

        from stream_hub.store.catalog import persisted_runs

        assert len(persisted_runs()) == total
        assert plain_listing(home) == total
        ours = timed(persisted_runs, args.repeats)
        plain = timed(lambda: plain_listing(home), args.repeats)

        import httpx

        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream_hub",
                "serve",
                "--sse-port",
                "0",
                "--ws-port",
                "0",
                "--rest-port",
                "0",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ},
        )
        try:
            import json

            assert serve.stdout is not None
            rest = json.loads(serve.stdout.readline())["urls"]["rest"]
            t0 = time.perf_counter()
            first = httpx.get(rest + "/api/runs", timeout=60).json()
            first_ms = (time.perf_counter() - t0) * 1000
            assert first["total"] >= total, first["total"]
            cached = timed(
                lambda: httpx.get(rest + "/api/runs", params={"limit": 100}, timeout=60), args.repeats
            )
            series = timed(
                lambda: httpx.get(rest + "/api/runs/sweep-000-000/series", timeout=60).raise_for_status(),
                args.repeats,
            )
            pages = [first_render(rest) for _ in range(max(1, args.repeats // 2))] if args.page else []
        finally:
            serve.terminate()
            serve.wait(30)

        def row(name: str, values: list[float], baseline: list[float] | None = None) -> None:
            med = statistics.median(values)
            spread = f"{min(values):.1f}-{max(values):.1f}"
            if baseline is None:
                print(f"| {name} | {med:.1f} ({spread}) | - | - |")
            else:
                base = statistics.median(baseline)
                print(f"| {name} | {med:.1f} ({spread}) | {base:.1f} | {base / med:.1f}x |")

        print(
            f"\n| {total} persisted runs in {args.files} files (ms) "
            "| stream_hub (median, range) | plain | ratio |"
        )
        print("|---|---:|---:|---:|")
        row("list every run (stream-hub runs)", ours, plain)
        print(f"| first GET /api/runs of stream-hub serve (all {total}) | {first_ms:.1f} | - | - |")
        row("GET /api/runs?limit=100 after it", cached)
        row("GET /api/runs/{run}/series of a persisted run", series)
        if pages:
            if all(p["first_ms"] != float("inf") for p in pages):
                row("dashboard first render (firstFullRenderMs)", [p["first_ms"] for p in pages])
            else:
                print("| dashboard first render (firstFullRenderMs) | not within 300 s | - | - |")
            last = pages[-1]
            print(
                f"| dashboard: curve requests at first render | {last['series_requests']} | - | - |\n"
                f"| dashboard: runs known to the page | {last['runs']} | - | - |\n"
                f"| dashboard: JS heap after it (MB) | {last['heap_mb']:.1f} | - | - |"
            )
    finally:
        if not kept:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
