#!/usr/bin/env python3
"""The dashboard under load, in headless Chromium (software rendering): figures, not a test.

Three parts:

1. live: ``--runs`` runs x ``--metrics`` metrics, ``--prefill`` steps per run
   logged before the page opens (it joins a job already running), then
   ``--rate`` metric events per second (round-robin over the runs, every
   metric in each) for ``--seconds``. Each run has a config (``lr``, one of
   5 values, and ``seed``) and the page opens grouped by ``--group`` (``lr``:
   5 groups of 10 runs, each a mean with a min–max band; ``--group ''``: a
   line per run); the hub keeps ``--series-points`` buckets per whole-run
   curve, fewer than the prefilled steps, so the curves the page loads are
   buckets and each line's envelope is drawn. Reported: the first full
   render (from navigation until every chart on screen is drawn with
   everything loaded), the render pass per frame (the dashboard's own
   script: reductions and canvas calls of the charts it draws), the main
   thread's work per frame (from the frame's first animation callback until
   a task posted there runs: scripts, style, layout, paint), frame
   intervals, long animation frames (the Long Animation Frames API, frames
   over 50 ms), the points drawn per pixel of plot width, the events per
   second the page got, and log() → drawn for the first run's events.
2. latency: log() → drawn at light load: one run of 4 metrics logging
   ``--latency-rate`` events per second, ``--latency-samples`` of them; each
   from the moment ``server.log()`` is called in this process to the end of
   the first chart draw in the page holding that step (the page's clock and
   ours compared first: both the machine's wall clock).
3. lod: one ``--lod-steps``-step curve in a ring that holds it all; the page
   zooms in by factors of 8 and pans, each zoom fetching the range at the
   ring's resolution, ``--think`` seconds after the page loaded; reported:
   each zoom until drawn with the finer data.

Run from the repository (uses this checkout, Debian's /usr/bin/chromium and
Playwright's Python package; never ``playwright install``)::

    python scripts/bench_dashboard.py                 # every part, ~3 min
    python scripts/bench_dashboard.py --skip-lod --seconds 10
    python scripts/bench_dashboard.py --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.scratch import scratch_home  # noqa: E402

scratch_home("stream_hub-bench-dashboard-")  # before stream_hub claims any run name

from stream_hub import StreamConfig, TrainingStreamServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",  # software rendering, as on a CPU-only machine
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
]
VIEWPORT = {"width": 1400, "height": 1000}

# Injected before the page's scripts: per-frame main-thread work (from the
# frame's first animation callback to a task posted from it, which runs once
# the frame's rendering is done), frame intervals, and long animation frames.
PROBE = """
(() => {
  const probe = window.__probe = { work: [], intervals: [], loaf: [], on: false };
  let last = 0;
  const channel = new MessageChannel();
  let started = 0;
  channel.port1.onmessage = () => { if (probe.on) probe.work.push(performance.now() - started); };
  const tick = (now) => {
    if (probe.on && last) probe.intervals.push(now - last);
    last = now;
    started = performance.now();
    channel.port2.postMessage(0);
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        if (!probe.on) continue;
        probe.loaf.push({ duration: e.duration, blocking: e.blockingDuration,
          render: e.renderStart ? e.startTime + e.duration - e.renderStart : 0,
          script: (e.scripts || []).reduce((a, s) => a + s.duration, 0) });
      }
    }).observe({ type: "long-animation-frame", buffered: false });
    probe.loafSupported = true;
  } catch (_) { probe.loafSupported = false; }
})();
"""


TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "toplevel", "cc"]


def frame_costs(trace: bytes) -> dict[str, list[float]]:
    """Per rendering frame of the page's main thread, from a Chrome trace:
    ``cpu``/``wall``: what its tasks took between this frame's rendering
    update and the next (scripts — SSE messages, timers, animation callbacks
    — then style, layout, paint and commit), in thread CPU time and in wall
    time; ``update``: the rendering update task alone; ``raster``: raster
    tasks on other threads in the same interval (ms)."""
    data = json.loads(trace)
    events = data["traceEvents"] if isinstance(data, dict) else data
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    mains = [key for key, name in names.items() if name == "CrRendererMain"]
    # The page's renderer: the main thread with the most tasks.
    count = {key: 0 for key in mains}
    for e in events:
        key = (e.get("pid"), e.get("tid"))
        if key in count and e.get("name") == "RunTask":
            count[key] += 1
    if not count:
        return {"cpu": [], "wall": [], "update": [], "raster": []}
    main = max(count, key=lambda k: count[k])
    tasks = sorted(
        (e["ts"], e.get("dur", 0), e.get("tdur", e.get("dur", 0)))
        for e in events
        if (e.get("pid"), e.get("tid")) == main and e.get("name") == "RunTask" and e.get("ph") == "X"
    )
    commits = sorted(
        e["ts"] for e in events if (e.get("pid"), e.get("tid")) == main and e.get("name") == "Commit"
    )
    raster = sorted(
        (e["ts"], e.get("dur", 0))
        for e in events
        if e.get("pid") == main[0] and e.get("name") == "RasterTask" and e.get("ph") == "X"
    )
    # The task holding each commit is that frame's rendering update.
    updates: list[tuple[float, float, float]] = []
    k = 0
    for ts, dur, tdur in tasks:
        while k < len(commits) and commits[k] < ts:
            k += 1
        if k < len(commits) and commits[k] <= ts + dur:
            updates.append((ts, dur, tdur))
    out: dict[str, list[float]] = {"cpu": [], "wall": [], "update": [], "raster": []}
    t = r = 0
    for (start, _, _), (end, _, _) in itertools.pairwise(updates):
        # From after this frame's update to the end of the next one.
        cpu = wall = 0.0
        while t < len(tasks) and tasks[t][0] <= start:
            t += 1
        while t < len(tasks) and tasks[t][0] <= end:
            wall += tasks[t][1]
            cpu += tasks[t][2]
            t += 1
        rast = 0.0
        while r < len(raster) and raster[r][0] < start:
            r += 1
        while r < len(raster) and raster[r][0] <= end:
            rast += raster[r][1]
            r += 1
        out["cpu"].append(cpu / 1000)
        out["wall"].append(wall / 1000)
        out["raster"].append(rast / 1000)
    out["update"] = [u[2] / 1000 for u in updates]
    return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {pct(values, 50):6.1f}  p95 {pct(values, 95):6.1f}  p99 {pct(values, 99):6.1f}  "
        f"max {max(values):6.1f} ms  (n={len(values)})"
    )


def wait(page: Any, condition: str, timeout: float = 120) -> None:
    """Wait until ``condition`` (JavaScript over ``d = debug()``) holds, polled
    with ``evaluate``: the page's Content-Security-Policy refuses the string
    evaluation ``wait_for_function`` would do."""
    deadline = time.monotonic() + timeout
    script = (
        "() => { try { const d = window.streamHub.debug(); return !!(" + condition + "); }"
        " catch (e) { return false; } }"
    )
    while not page.evaluate(script):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {condition}")
        time.sleep(0.05)


# Installed once the page is up: the wall-clock time (ms) of the first chart
# draw holding each new last step of `run`'s curve (in any chart; grouped, the
# run's curve inside its group's band).
DRAWN_PROBE = """(run) => {
  const proto = window.StreamHubChart.LineChart.prototype;
  const draw = proto.draw;
  const drawn = window.__drawn = [];
  let last = -Infinity;
  proto.draw = function (...args) {
    const result = draw.apply(this, args);
    for (const entry of this.entries) {
      if (!entry.visible || !entry.curves) continue;
      entry.sources.forEach((source, i) => {
        if ((source.run || entry.run).name !== run) return;
        const steps = entry.curves[i].steps;
        const step = steps.length ? steps[steps.length - 1] : -Infinity;
        if (step > last) {
          last = step;
          drawn.push([step, performance.timeOrigin + performance.now()]);
        }
      });
    }
    return result;
  };
}"""


def clock_offset(page: Any) -> tuple[float, float]:
    """(the page's wall clock minus ours, ± how well that is known), in ms."""
    best = (0.0, math.inf)
    for _ in range(20):
        t0 = time.time() * 1000
        theirs = page.evaluate("performance.timeOrigin + performance.now()")
        t1 = time.time() * 1000
        if (t1 - t0) / 2 < best[1]:
            best = (theirs - (t0 + t1) / 2, (t1 - t0) / 2)
    return best


def log_to_drawn(logged: dict[int, float], drawn: list[list[float]], offset: float) -> list[float]:
    """ms from each logged step's log() to the first draw holding it (a draw
    whose last step is at or past it: events coalesced into one frame count
    from their own log())."""
    out = []
    k = 0
    for step in sorted(logged):
        while k < len(drawn) and drawn[k][0] < step:
            k += 1
        if k == len(drawn):
            break
        out.append(drawn[k][1] - offset - logged[step])
    return out


def launch(playwright: Any) -> Any:
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"needs {CHROMIUM} (apt-get install -y chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


# -- part 1: live -------------------------------------------------------------------------------------------


def values_for(run: int, step: int, metrics: list[str], rng: random.Random) -> dict[str, float]:
    scale = 300 + 40 * run
    return {
        m: math.exp(-step / (scale + 30 * k)) + 0.03 * rng.random() + 0.01 * k for k, m in enumerate(metrics)
    }


LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def serve(**settings: Any) -> TrainingStreamServer:
    """A started server on free ports, keeping nothing on disk."""
    config = StreamConfig(sse_port=0, ws_port=0, rest_port=0, port_conflict="fail", store=False, **settings)
    server = TrainingStreamServer(config)
    server.start()
    return server


def live(args: argparse.Namespace, playwright: Any) -> dict[str, Any]:
    runs = [f"run{r:02d}" for r in range(args.runs)]
    prefixes = ["train", "val", "opt", "data"]
    metrics = [f"{prefixes[k % len(prefixes)]}/m{k:02d}" for k in range(args.metrics)]
    server = serve(series_points=args.series_points)
    rng = random.Random(1)
    probe = runs[0]
    logged: dict[int, float] = {}  # the probe run's steps -> when log() was called (ms, wall clock)
    try:
        for r, run in enumerate(runs):
            server.publish("config", {"lr": LRS[r % len(LRS)], "seed": r // len(LRS)}, run=run)
        steps = dict.fromkeys(runs, 0)
        for step in range(args.prefill):
            for r, run in enumerate(runs):
                server.log(values_for(r, step, metrics, rng), step=step, run=run)
            if step % 50 == 0:
                server.hub.commit()
        for run in runs:
            steps[run] = args.prefill
        server.hub.commit()

        stop = threading.Event()
        published = [0]

        def publish() -> None:
            interval = 0.01
            per_tick = max(1, round(args.rate * interval))
            next_at = time.perf_counter()
            i = 0
            while not stop.is_set():
                for _ in range(per_tick):
                    r = i % len(runs)
                    run = runs[r]
                    values = values_for(r, steps[run], metrics, rng)
                    if run == probe:
                        logged[steps[run]] = time.time() * 1000
                    server.log(values, step=steps[run], run=run)
                    steps[run] += 1
                    i += 1
                published[0] = i
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.05:  # fell behind (a busy machine): the rate, not a burst to catch up
                    next_at = time.perf_counter()

        browser = launch(playwright)
        context = browser.new_context(viewport=VIEWPORT, color_scheme="dark")
        page = context.new_page()
        page.add_init_script(PROBE)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        publisher = threading.Thread(target=publish, name="bench-publisher", daemon=True)
        publisher.start()
        try:
            view = f"#group={args.group}" if args.group else ""
            page.goto(server.urls["rest"] + "/" + view)
            wait(page, "d.stats.firstFullRenderMs !== null")
            first = page.evaluate("window.streamHub.debug().stats.firstFullRenderMs")
            page.evaluate(DRAWN_PROBE, probe)
            offset, uncertainty = clock_offset(page)
            marks = page.evaluate(
                "performance.getEntriesByType('mark').filter((m) => m.name.startsWith('stream_hub:'))"
                ".map((m) => [m.name.slice(11), m.startTime])"
                ".concat([['dom ready', performance.getEntriesByType('navigation')[0]"
                ".domContentLoadedEventEnd]])"
            )
            loaded = page.evaluate(
                "Object.values(window.streamHub.debug().series)"
                ".reduce((a, r) => a + Object.keys(r).length, 0)"
            )
            time.sleep(args.warmup)
            page.evaluate("window.__probe.on = true; window.streamHub.frameTimes(true)")
            received0 = page.evaluate("window.streamHub.debug().stats.received")
            draws0 = page.evaluate("window.streamHub.debug().stats.chartDraws")
            browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
            t0 = time.perf_counter()
            published0 = published[0]
            since = time.time() * 1000
            time.sleep(args.seconds)
            until = time.time() * 1000 - 1000  # steps logged in the last second may not be drawn yet
            sent = published[0] - published0
            page.evaluate("window.__probe.on = false")
            drawn = page.evaluate("window.__drawn")
            window = {step: t for step, t in list(logged.items()) if since <= t <= until}
            latencies = log_to_drawn(window, drawn, offset)
            elapsed = time.perf_counter() - t0
            d = page.evaluate("window.streamHub.debug()")
            probe = page.evaluate("window.__probe")
            frames = page.evaluate("window.streamHub.frameTimes()")
            costs = frame_costs(browser.stop_tracing())
            density = []
            for chart in d["charts"].values():
                if chart["box"] and chart["lines"]:
                    width = chart["box"]["right"] - chart["box"]["left"]
                    density.append(chart["pointsDrawn"] / (width * len(chart["lines"])))
            visible = sum(1 for c in d["charts"].values() if c["onScreen"] and not c["hidden"])
            lines_on_screen = [
                len(c["lines"]) for c in d["charts"].values() if c["onScreen"] and not c["hidden"]
            ]
            envelopes = page.evaluate(
                "Object.values(window.streamHub.debug().charts).filter((c) => c.resolution > 1).length"
            )
        finally:
            stop.set()
            publisher.join()
            context.close()
            browser.close()
        return {
            "load": {
                "runs": args.runs,
                "metrics": args.metrics,
                "series": args.runs * args.metrics,
                "prefill_steps": args.prefill,
                "rate_events_per_s": round(sent / elapsed),
                "points_per_s": round(sent * args.metrics / elapsed),
                "seconds": args.seconds,
                "group": args.group,
                "series_points": args.series_points,
            },
            "lines_per_chart_on_screen": lines_on_screen,
            "charts_with_envelope": envelopes,
            "log_to_drawn_ms": latencies,
            "clock_uncertainty_ms": uncertainty,
            "first_full_render_ms": first,
            "first_render_marks_ms": dict(marks),
            "series_loaded": loaded,
            "charts": len(d["charts"]),
            "charts_on_screen": visible,
            "render_pass_ms": frames,
            "frame_cpu_ms": costs["cpu"],
            "frame_wall_ms": costs["wall"],
            "frame_update_cpu_ms": costs["update"],
            "frame_raster_ms": costs["raster"],
            "main_thread_per_frame_ms": probe["work"],
            "frame_interval_ms": probe["intervals"],
            "long_animation_frames": probe["loaf"],
            "loaf_supported": probe.get("loafSupported", False),
            "chart_draws_per_s": (d["stats"]["chartDraws"] - draws0) / elapsed,
            "events_received_per_s": (d["stats"]["received"] - received0) / elapsed,
            "max_points_per_px_per_line": max(density) if density else None,
            "gaps": d["stats"]["gaps"],
            "errors": errors,
        }
    finally:
        server.stop()


# -- part 2: log() -> drawn at light load --------------------------------------------------------------


def latency(args: argparse.Namespace, playwright: Any) -> dict[str, Any]:
    server = serve()
    rng = random.Random(3)
    metrics = ["loss", "acc", "lr", "grad_norm"]
    try:
        server.log(values_for(0, 0, metrics, rng), step=0, run="probe")
        browser = launch(playwright)
        context = browser.new_context(viewport=VIEWPORT, color_scheme="dark")
        page = context.new_page()
        try:
            page.goto(server.urls["rest"] + "/")
            wait(page, "d.stats.firstFullRenderMs !== null && d.charts.loss && d.charts.loss.draws > 0")
            page.evaluate(DRAWN_PROBE, "probe")
            offset, uncertainty = clock_offset(page)
            logged: dict[int, float] = {}
            interval = 1 / args.latency_rate
            next_at = time.perf_counter()
            for step in range(1, args.latency_samples + 1):
                next_at += interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
                values = values_for(0, step, metrics, rng)
                logged[step] = time.time() * 1000
                server.log(values, step=step, run="probe")
            wait(page, f"d.series.probe.loss.maxStep === {args.latency_samples}")
            time.sleep(0.5)  # the last draw
            drawn = page.evaluate("window.__drawn")
        finally:
            context.close()
            browser.close()
        return {
            "rate_events_per_s": args.latency_rate,
            "metrics": len(metrics),
            "log_to_drawn_ms": log_to_drawn(logged, drawn, offset),
            "clock_uncertainty_ms": uncertainty,
        }
    finally:
        server.stop()


# -- part 3: level of detail ---------------------------------------------------------------------------


def lod(args: argparse.Namespace, playwright: Any) -> dict[str, Any]:
    n = args.lod_steps
    server = serve(history_size=n + 1000, history_bytes=4 * 1024**3)
    rng = random.Random(2)
    try:
        t = time.perf_counter()
        for i in range(n):
            server.log(
                {"loss": math.exp(-i / (n / 4)) + 0.1 * math.sin(i / 97) + 0.05 * rng.random()},
                step=i,
                run="long",
            )
            if i % 20_000 == 0:
                server.hub.commit()
        server.hub.commit()
        publish_s = time.perf_counter() - t
        # The page's first /api/status encodes every event not yet encoded
        # (hub.encode_all): pay that once here, not inside the first zoom.
        import httpx

        t = time.perf_counter()
        httpx.get(server.urls["rest"] + "/api/status", timeout=600)
        encode_s = time.perf_counter() - t

        browser = launch(playwright)
        context = browser.new_context(viewport=VIEWPORT, color_scheme="dark")
        page = context.new_page()
        page.add_init_script(PROBE)
        zooms: list[dict[str, Any]] = []
        try:
            page.goto(server.urls["rest"] + "/")
            wait(
                page,
                "!d.loading && d.charts.loss && d.charts.loss.draws > 0"
                " && d.stats.firstFullRenderMs !== null",
            )
            # A person looks at the chart before zooming; the server reads the
            # long curve out of the ring meanwhile (RingCurves.prepare).
            time.sleep(args.think)
            centre = n * 0.4
            plan: list[tuple[str, float, float]] = []
            width = float(n)
            while width / 8 >= 100:
                width /= 8
                plan.append((f"zoom in to {width:,.0f} steps", centre - width / 2, centre + width / 2))
            for k in (1, 2, 3):
                w = n / 64
                plan.append(
                    (f"pan {k} ({w:,.0f} steps)", centre + k * w / 2 - w / 2, centre + k * w / 2 + w / 2)
                )
            plan.append(("zoom in to 1,000 steps elsewhere", n * 0.8, n * 0.8 + 1000))
            plan.append(("back to everything", -1, -1))
            for label, a, b in plan:
                result = page.evaluate(
                    """async ([a, b]) => {
                        const t0 = performance.now();
                        const info = await window.streamHub.zoom('loss', a < 0 ? null : a, b);
                        const drawn = performance.now();
                        await new Promise((r) => { const c = new MessageChannel();
                          requestAnimationFrame(() => { c.port1.onmessage = r; c.port2.postMessage(0); }); });
                        const d = window.streamHub.debug().charts.loss;
                        return { drawn: drawn - t0, painted: performance.now() - t0, points: info.pointsDrawn,
                                 source: d.detailSource, width: info.box.right - info.box.left };
                    }""",
                    [a, b],
                )
                result["label"] = label
                zooms.append(result)
        finally:
            context.close()
            browser.close()
        return {
            "steps": n,
            "publish_s": publish_s,
            "first_status_encode_s": encode_s,
            "think_s": args.think,
            "zooms": zooms,
        }
    finally:
        server.stop()


# -- report ------------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {CHROMIUM}"
    )
    if "live" in results:
        r = results["live"]
        load = r["load"]
        print(
            f"\nlive: {load['runs']} runs x {load['metrics']} metrics = {load['series']} series, "
            f"{load['prefill_steps']} steps each before the page opened, then "
            f"{load['rate_events_per_s']} events/s ({load['points_per_s']} points/s) for {load['seconds']} s"
        )
        print(
            f"  first full render            {r['first_full_render_ms']:8.0f} ms"
            f"  ({r['series_loaded']} series loaded)"
        )
        steps = ", ".join(
            f"{k} {v:.0f}" for k, v in sorted(r["first_render_marks_ms"].items(), key=lambda i: i[1])
        )
        print(f"    (ms after navigation: {steps})")
        print(f"  charts                       {r['charts']} ({r['charts_on_screen']} on screen)")
        print(f"  render pass per frame        {summary(r['render_pass_ms'])}")
        print(f"  main thread CPU per frame    {summary(r['frame_cpu_ms'])}")
        print(f"    of it the rendering update {summary(r['frame_update_cpu_ms'])}")
        print(f"  main thread wall per frame   {summary(r['frame_wall_ms'])}")
        print(f"  raster threads per frame     {summary(r['frame_raster_ms'])}")
        print(f"  rAF to after paint           {summary(r['main_thread_per_frame_ms'])}")
        print(f"  frame interval               {summary(r['frame_interval_ms'])}")
        loaf = r["long_animation_frames"]
        if r["loaf_supported"]:
            durations = [e["duration"] for e in loaf]
            print(f"  long animation frames (>50)  {len(loaf)}" + (f": {summary(durations)}" if loaf else ""))
        print(f"  chart draws per second       {r['chart_draws_per_s']:8.1f}")
        print(f"  events received per second   {r['events_received_per_s']:8.0f}  (gaps: {r['gaps']})")
        print(f"  points drawn per px per line {r['max_points_per_px_per_line']:8.2f}  (most of any chart)")
        print(
            f"  grouped by                   {load['group'] or '(none)'}: lines per chart on screen"
            f" {r['lines_per_chart_on_screen']}; charts with an envelope {r['charts_with_envelope']}"
            f" ({load['series_points']} buckets per whole-run curve)"
        )
        print(
            f"  log() -> drawn (run00)       {summary(r['log_to_drawn_ms'])}"
            f"  (clocks ± {r['clock_uncertainty_ms']:.1f} ms)"
        )
        if r["errors"]:
            print(f"  page errors: {r['errors']}")
    if "latency" in results:
        r = results["latency"]
        print(
            f"\nlog() -> drawn, light load: one run of {r['metrics']} metrics"
            f" at {r['rate_events_per_s']:g} events/s"
        )
        print(f"  log() -> drawn               {summary(r['log_to_drawn_ms'])}")
        print(f"    (the page's clock and ours compared to ± {r['clock_uncertainty_ms']:.1f} ms)")
    if "lod" in results:
        r = results["lod"]
        print(
            f"\nlod: one {r['steps']:,}-step curve, all of it in the ring;"
            f" zooms {r['think_s']:g} s after the load"
        )
        print(
            f"  published in {r['publish_s']:.1f} s; first /api/status (encodes the ring)"
            f" {r['first_status_encode_s']:.1f} s"
        )
        for z in r["zooms"]:
            print(
                f"  {z['label']:<34} drawn {z['drawn']:7.1f} ms, painted {z['painted']:7.1f} ms, "
                f"{z['points']:5d} points over {z['width']} px ({z['source'] or 'kept curve'})"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--rate", type=int, default=1000, help="metric events per second, over all runs")
    parser.add_argument("--prefill", type=int, default=500, help="steps per run logged before the page opens")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the live part is measured")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="live seconds after the first render, unmeasured"
    )
    parser.add_argument("--group", default="lr", help="the config key the live page groups by ('': none)")
    parser.add_argument(
        "--series-points",
        type=int,
        default=250,
        help="buckets per whole-run curve (fewer than --prefill: the page loads buckets, envelopes drawn)",
    )
    parser.add_argument("--latency-rate", type=float, default=5.0, help="events per second of part 2")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--lod-steps", type=int, default=1_000_000)
    parser.add_argument(
        "--think", type=float, default=8.0, help="seconds between the page's load and the zooms"
    )
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-lod", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("needs Playwright's Python package (pip install playwright)") from None
    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        if not args.skip_live:
            results["live"] = live(args, playwright)
        if not args.skip_latency:
            results["latency"] = latency(args, playwright)
        if not args.skip_lod:
            results["lod"] = lod(args, playwright)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
