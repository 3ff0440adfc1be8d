#!/usr/bin/env python3
"""The README's pictures of sweeps and long runs, retaken from real runs in
headless Chromium (Debian's /usr/bin/chromium, Playwright's Python package;
never ``playwright install``).

A hub in this process (on free ports, keeping nothing on disk) is fed with
``server.log()`` as training would, then the dashboard is opened and
photographed:

- ``docs/sweep.png``: a 50-run learning-rate sweep (5 learning rates x 10
  seeds, names sharing a long prefix) grouped by ``lr``: each group's mean
  with the min–max band across its seeds, the run list under a heading per
  group, folded names.
- ``docs/alert.png``: the same sweep searched for ``seed=7``: the run with
  the largest learning rate went NaN, and the hub's alert put a badge on it.
- ``docs/zoom.png``: a 1 000 000-step run with a loss spike at step 400 000,
  zoomed to 100 000 steps around it: each point stands for ~1 000 steps, the
  envelope (each bucket's lowest and highest value) behind the line keeps
  the spike, and the chart says the resolution.

The other README pictures (``dashboard.png``, ``ranks.png``,
``analysis.png``) come from the browser tests:
``STREAM_HUB_SAVE_SCREENSHOT=1 pytest -m browser tests/integration/test_dashboard.py``.

Run from the repository: ``python scripts/screenshots.py [--out docs]``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from bench_dashboard import serve, wait  # noqa: E402 (a server on free ports; a wait on the page)

from stream_hub import TrainingStreamServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PREFIX = "sweep-2026-12-07/resnet50-cifar10/"
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def settle(page: Any) -> None:
    """Every chart drawn and the page painted after it."""
    wait(page, "!d.loading && d.stats.firstFullRenderMs !== null")
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def log_sweep(server: TrainingStreamServer, steps: int = 2000) -> None:
    """5 learning rates x 10 seeds; the largest rate's seed 7 diverges to NaN."""
    rng = random.Random(11)
    for k, lr in enumerate(LRS):
        for seed in range(10):
            run = f"{PREFIX}lr={lr:g},seed={seed}"
            server.publish(
                "config",
                {"lr": lr, "seed": seed, "batch": 256, "optimizer": "adamw", "warmup": 500},
                run=run,
            )
            floor = 0.25 + 0.5 * abs(k - 2.4) / 2.4 + 0.03 * rng.random()
            rate = 300 + 600 * (4 - k) * (0.8 + 0.4 * rng.random())
            for step in range(0, steps, 5):
                loss = floor + 2.1 * math.exp(-step / rate) + rng.gauss(0, 0.015)
                if k == 4 and seed == 7 and step >= 1400:
                    loss = math.nan if step >= 1500 else loss * (1 + (step - 1400) / 20)
                acc = max(0.0, min(1.0, 0.95 - 0.8 * math.exp(-step / (1.2 * rate)) - floor / 4))
                metrics = {"train/loss": loss, "train/acc": acc + rng.gauss(0, 0.006)}
                if step % 100 == 0:
                    metrics["val/loss"] = loss + 0.08 + rng.gauss(0, 0.02)
                    metrics["val/acc"] = acc - 0.03 + rng.gauss(0, 0.01)
                server.log(metrics, step=step, run=run)
        server.hub.commit()


def sweep_shots(browser: Any, out: Path) -> None:
    server = serve()
    try:
        log_sweep(server)
        page = browser.new_page(viewport={"width": 1300, "height": 800}, color_scheme="dark")
        page.goto(server.urls["rest"] + "/#group=lr")
        wait(page, "!d.loading && d.runs.length === 50 && d.runs.some((r) => r.alerts.count > 0)")
        settle(page)
        page.screenshot(path=str(out / "sweep.png"))
        page.goto(server.urls["rest"] + "/#search=seed%3D7")
        page.reload()
        wait(page, "!d.loading && d.runs.filter((r) => r.matched).length === 5")
        settle(page)
        page.screenshot(path=str(out / "alert.png"), clip={"x": 0, "y": 0, "width": 1300, "height": 660})
        page.close()
    finally:
        server.stop()


def zoom_shot(browser: Any, out: Path) -> None:
    server = serve()
    rng = random.Random(5)
    try:
        n = 1_000_000
        for step in range(n):
            loss = 0.3 + 2.0 * math.exp(-step / 150_000) + 0.05 * math.sin(step / 5_000) + 0.04 * rng.random()
            server.log({"loss": 60.0 if step == 400_000 else loss}, step=step, run="long-run")
            if step % 20_000 == 0:
                server.hub.commit()
        server.hub.commit()
        page = browser.new_page(viewport={"width": 1000, "height": 700}, color_scheme="dark")
        page.goto(server.urls["rest"] + "/#c:loss=350000..450000")
        wait(page, "!d.loading && d.charts.loss && d.charts.loss.detail === 'loaded'", timeout=180)
        wait(page, "d.charts.loss.resolution > 1")
        settle(page)
        page.locator('.chart-card[data-id="loss"]').screenshot(path=str(out / "zoom.png"))
        page.close()
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the pictures go")
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("needs Playwright's Python package (pip install playwright)") from None
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"needs {CHROMIUM} (apt-get install -y chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            sweep_shots(browser, args.out)
            zoom_shot(browser, args.out)
        finally:
            browser.close()
    for name in ("sweep.png", "alert.png", "zoom.png"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
