"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``)
driven by Playwright's Python package, against a real server on free ports.

The page exposes ``window.streamHub.debug()`` (per-series point counts and
step ranges, chart draw counts and axes, transport states, counters); the
tests read it and the DOM, waiting on conditions with deadlines
(``wait_for_function``), never sleeping.

Skipped when Playwright or Chromium is missing, unless
``STREAM_HUB_REQUIRE_ALL=1``, which makes that a failure. With
``STREAM_HUB_SAVE_SCREENSHOT=1`` the late-joiner test also writes
``docs/dashboard.png`` for the README.

Run: ``pytest -m browser tests/integration/test_dashboard.py``
(needs ``apt-get install -y chromium`` and ``pip install playwright``; never
``playwright install``, which downloads a browser of its own).
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stream_hub import get_stream_server, get_stream_server_manager

from ..conftest import free_config, need
from ..processes import REPO

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # deadline of every wait on the page
NO_VALUE = "\u2013"  # what an empty latest-values cell shows


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        need(False, "playwright (pip install playwright)")
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            need(False, f"a chromium that starts ({exc})")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (dark scheme); fails the test on any uncaught JavaScript error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught JavaScript errors on the dashboard: {errors}"


@contextmanager
def serving(**overrides: Any) -> Iterator[Any]:
    """A real server (free ports unless given); stopped, ports verified free, afterwards."""
    manager = get_stream_server_manager()
    manager.cleanup()
    server = get_stream_server(config=free_config(**overrides))
    try:
        yield server
    finally:
        manager.cleanup()


# -- helpers ----------------------------------------------------------------------


def debug(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.streamHub.debug()")
    return result


def wait_for(page: Any, condition: str, arg: Any = None) -> None:
    """Wait until ``condition``, JavaScript over ``d = debug()`` and ``arg``, is true."""
    page.wait_for_function(
        "(arg) => { const d = window.streamHub && window.streamHub.debug();"
        f" try {{ return !!d && ({condition}); }} catch (e) {{ return false; }} }}",
        arg=arg,
        timeout=WAIT_MS,
    )


def wait_connected(page: Any) -> None:
    page.wait_for_function(
        "document.querySelectorAll('.transports .pill[data-state=\"connected\"]').length === 3",
        timeout=WAIT_MS,
    )


def cell(page: Any, run: str, metric: str) -> Any:
    return page.locator(f'#latest-table td[data-run="{run}"][data-metric="{metric}"]')


def wait_cell(page: Any, run: str, metric: str, text: str) -> None:
    page.wait_for_function(
        "([run, metric, text]) => [...document.querySelectorAll('#latest-table td')]"
        ".some((td) => td.dataset.run === run && td.dataset.metric === metric"
        " && td.textContent === text)",
        arg=[run, metric, text],
        timeout=WAIT_MS,
    )


def coloured_pixels(page: Any, metric: str, color: str) -> int:
    """How many pixels of the metric's canvas are drawn in ``color`` (#rrggbb)."""
    script = """([metric, color]) => {
        const card = [...document.querySelectorAll('.chart-card')]
          .find((c) => c.dataset.metric === metric);
        const canvas = card.querySelector('canvas');
        const want = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
        const ctx = canvas.getContext('2d');
        const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let hits = 0;
        for (let i = 0; i < data.length; i += 4) {
          const close = want.every((c, k) => Math.abs(data[i + k] - c) < 40);
          if (data[i + 3] > 200 && close) hits++;
        }
        return hits;
    }"""
    return int(page.evaluate(script, [metric, color]))


def run_color(page: Any, run: str) -> str:
    return str(next(r["color"] for r in debug(page)["runs"] if r["run"] == run))


def hover_chart(page: Any, metric: str, x: float, y: float = 0.5) -> str:
    """Move the pointer over a chart (fractions of its size); the tooltip's text."""
    box = page.locator(f'.chart-card[data-metric="{metric}"] canvas').bounding_box()
    page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    return str(tooltip.text_content() or "")


def screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


def realistic(run_index: int, step: int, rng: random.Random) -> dict[str, float]:
    """A training run's metrics: loss falling with noise, accuracy rising, a schedule."""
    scale = 900 + 350 * run_index
    return {
        "loss": 2.3 * math.exp(-step / scale) + 0.15 + rng.gauss(0, 0.04),
        "acc": 0.97 - 0.87 * math.exp(-step / (1.3 * scale)) + rng.gauss(0, 0.008),
        "lr": 1e-3 * min(1.0, step / 250) * 0.5 * (1 + math.cos(math.pi * step / 6000)),
        "throughput": 1800 + 150 * run_index + rng.gauss(0, 40),
    }


# -- tests --------------------------------------------------------------------------


def test_live_charts_latest_values_and_status(page: Any, tmp_path: Path) -> None:
    with serving() as server:
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        for name in ("sse", "ws", "rest"):
            assert page.locator(f"#status-{name}").get_attribute("data-state") == "connected"
        assert page.locator("#latest-empty").is_visible()

        for i in range(20):
            server.log({"loss": 1 / (i + 1), "acc": i / 20}, step=i, run="exp1")
        wait_for(page, "d.series.exp1.loss.maxStep === 19 && d.charts.loss.xRange[1] === 19")
        wait_cell(page, "exp1", "loss", "0.05")
        assert cell(page, "exp1", "acc").text_content() == "0.95"
        assert coloured_pixels(page, "loss", run_color(page, "exp1")) > 50, "no line drawn"
        draws = debug(page)["charts"]["loss"]["draws"]

        # Live: more steps, and a second run with a NaN, show up without a reload.
        for i in range(20, 40):
            server.log({"loss": 1 / (i + 1), "acc": i / 40}, step=i, run="exp1")
            server.log({"loss": 2 / (i + 1), "acc": i / 80}, step=i, run="exp2")
        server.log({"loss": float("nan"), "acc": 0.5}, step=40, run="exp2")
        wait_for(page, "d.series.exp2.acc.maxStep === 40 && d.series.exp1.loss.maxStep === 39")
        wait_cell(page, "exp1", "acc", "0.975")
        wait_cell(page, "exp2", "loss", "NaN")
        # Charts draw in the next animation frame: wait for it, then read.
        wait_for(page, "d.charts.loss.xRange[1] === 40")
        assert "nonfinite" in (cell(page, "exp2", "loss").get_attribute("class") or "")
        d = debug(page)
        assert d["charts"]["loss"]["draws"] > draws
        assert d["series"]["exp1"]["loss"]["points"] == 40  # none twice, none lost
        assert d["series"]["exp1"]["loss"]["rewrites"] == 0
        assert d["series"]["exp2"]["loss"]["points"] == 21  # the NaN breaks the line
        assert d["stats"]["duplicates"] == 0
        assert coloured_pixels(page, "loss", run_color(page, "exp2")) > 50
        assert page.locator('.chart-card[data-metric="loss"] .chart-legend .item').count() == 2
        assert page.locator("#runs-list .run").count() == 2
        assert d["transports"] == {"sse": "connected", "ws": "connected", "rest": "connected"}

        # Hover shows the step and every run's value there.
        text = hover_chart(page, "loss", 0.6)
        assert "step" in text and "exp1" in text and "exp2" in text

        # Hiding a run takes it off the charts.
        page.locator('#runs-list .run[data-run="exp2"]').click()
        wait_for(page, "d.runs.find((r) => r.run === 'exp2').visible === false")
        page.wait_for_function(
            "document.querySelector('.chart-card[data-metric=\"loss\"]').dataset.series === '1'"
        )
        screenshot(page, tmp_path / "dashboard-live.png")


def test_late_joiner_sees_the_whole_curve(page: Any, tmp_path: Path) -> None:
    # A ring of 1000 events cannot hold 3 runs x 5000 steps: the curve has to
    # come from the server's whole-run series.
    with serving(history_size=1000) as server:
        rng = random.Random(7)
        runs = ["exp1", "exp2", "baseline"]
        for step in range(5000):
            for index, run in enumerate(runs):
                server.log(realistic(index, step, rng), step=step, run=run)

        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        # The last events may reach the page live (SSE) rather than in the
        # REST snapshot: wait for every run's last step.
        wait_for(
            page,
            "!d.loading && ['exp1', 'exp2', 'baseline'].every("
            "(r) => d.series[r] && d.series[r].loss && d.series[r].loss.maxStep >= 4999)"
            " && d.charts.loss.draws > 0",
        )
        d = debug(page)
        for run in runs:
            for metric in ("loss", "acc", "lr", "throughput"):
                s = d["series"][run][metric]
                assert s["minStep"] == 0, (run, metric, s)
                assert s["maxStep"] == 4999, (run, metric, s)
                assert 200 <= s["points"] <= 5000, (run, metric, s)
        wait_for(page, "d.charts.loss.xRange[0] === 0 && d.charts.loss.xRange[1] === 4999")
        assert d["stats"]["gaps"] == 0
        assert cell(page, "baseline", "lr").text_content() != NO_VALUE

        # Then it follows live from where the snapshot ended: nothing twice.
        before = d["series"]["exp1"]["loss"]["points"]
        for step in range(5000, 5050):
            for index, run in enumerate(runs):
                server.log(realistic(index, step, rng), step=step, run=run)
        wait_for(page, "d.series.exp1.loss.maxStep === 5049 && d.series.baseline.acc.maxStep === 5049")
        d = debug(page)
        assert d["series"]["exp1"]["loss"]["points"] == before + 50
        assert d["series"]["exp1"]["loss"]["rewrites"] == 0
        wait_for(page, "d.charts.loss.xRange[0] === 0 && d.charts.loss.xRange[1] === 5049")
        assert d["latest"]["exp1"]["loss"]["step"] == 5049

        # The server panel refreshes every 2 s; let it count this page first.
        page.wait_for_function(
            "!document.querySelector('[data-fact=\"clients\"]').textContent.includes('SSE 0')"
        )
        hover_chart(page, "loss", 0.42)
        screenshot(page, tmp_path / "dashboard-late.png")
        if os.environ.get("STREAM_HUB_SAVE_SCREENSHOT") == "1":
            (REPO / "docs").mkdir(exist_ok=True)
            page.screenshot(path=str(REPO / "docs" / "dashboard.png"), full_page=True)


def test_resumes_after_a_restart_without_duplicates(page: Any) -> None:
    with serving() as server:
        for i in range(30):
            server.log({"loss": 1 / (i + 1)}, step=i, run="exp1")
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        wait_for(page, "d.series.exp1.loss.maxStep === 29")

        get_stream_server_manager().force_restart()  # shutdown event, same ports, same history
        for i in range(30, 60):
            server.log({"loss": 1 / (i + 1)}, step=i, run="exp1")
        wait_for(page, "d.series.exp1.loss.maxStep === 59 && d.connects.sse >= 2")
        wait_connected(page)
        d = debug(page)
        assert d["series"]["exp1"]["loss"]["points"] == 60
        assert d["series"]["exp1"]["loss"]["rewrites"] == 0
        assert d["stats"]["epochChanges"] == 0


def test_a_gap_reloads_the_curves_from_rest(page: Any) -> None:
    # A burst far larger than a 16-event ring: the page's SSE cursor falls out
    # of history, gets a gap event, and must fetch the curve again.
    with serving(history_size=16) as server:
        server.log({"loss": 1.0}, step=0, run="exp1")
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        wait_for(page, "d.series.exp1.loss.maxStep === 0")
        for i in range(1, 3000):
            server.log({"loss": 1 / (i + 1)}, step=i, run="exp1")
        wait_for(page, "d.stats.gaps >= 1 && !d.loading && d.series.exp1.loss.maxStep === 2999")
        d = debug(page)
        assert d["series"]["exp1"]["loss"]["minStep"] == 0
        assert d["series"]["exp1"]["loss"]["rewrites"] == 0
        assert d["latest"]["exp1"]["loss"]["step"] == 2999
        wait_for(page, "d.charts.loss.xRange[0] === 0 && d.charts.loss.xRange[1] === 2999")


def test_a_new_server_process_resets_the_page(page: Any) -> None:
    with serving() as server:
        ports = dict(server.ports)
        for i in range(10):
            server.log({"loss": 1.0}, step=i, run="old")
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        wait_for(page, "d.series.old.loss.maxStep === 9")
        old_epoch = debug(page)["epoch"]

    # Same ports, a new hub: a new epoch, sequence numbers from 1 again.
    with serving(sse_port=ports["sse"], ws_port=ports["ws"], rest_port=ports["rest"]) as server:
        for i in range(5):
            server.log({"acc": 0.5}, step=i, run="new")
        wait_for(page, "d.epoch !== arg && !d.series.old && d.series.new.acc.maxStep === 4", old_epoch)
        wait_connected(page)
        d = debug(page)
        assert d["stats"]["epochChanges"] >= 1
        assert d["metrics"] == ["acc"]
        assert page.locator('.chart-card[data-metric="loss"]').count() == 0


def test_stays_smooth_with_5_runs_x_10_metrics_at_50_updates_per_second(page: Any) -> None:
    metrics = [f"m{k}" for k in range(10)]
    with serving() as server:
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        page.evaluate(
            "window.__frames = 0; (function tick() { window.__frames++; requestAnimationFrame(tick); })()"
        )
        stop = threading.Event()
        published = {f"run{r}": 0 for r in range(5)}

        def train(run: str) -> None:
            rng = random.Random(run)
            step = 0
            next_at = time.monotonic()
            while not stop.is_set():
                # Falling curves with noise, and one pure-noise metric (the
                # costliest kind of line to draw).
                values = {
                    m: math.exp(-step / (60 + 25 * k)) + rng.gauss(0, 0.02) for k, m in enumerate(metrics)
                }
                values[metrics[-1]] = rng.random()
                server.log(values, step=step, run=run)
                published[run] += 1
                step += 1
                next_at += 1 / 50
                time.sleep(max(0.0, next_at - time.monotonic()))

        threads = [threading.Thread(target=train, args=(run,)) for run in published]
        for thread in threads:
            thread.start()
        try:
            stop.wait(4.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        expected = {"seq": server.status()["last_seq"], "points": published}
        wait_for(
            page,
            "d.lastSeq >= arg.seq && !d.loading && Object.keys(d.charts).length === 10"
            " && Object.entries(arg.points).every(([run, n]) =>"
            " Object.values(d.series[run]).every((s) => s.maxStep === n - 1))",
            expected,
        )
        d = debug(page)
        frames = page.evaluate("window.__frames")
        applied = d["stats"]["applied"]
        # Every point arrived once: live, or (after a gap under heavy load)
        # through the reload from REST.
        for run in published:
            for metric in metrics:
                series = d["series"][run][metric]
                assert series["points"] == published[run], (run, metric, series, d["stats"])
                assert series["rewrites"] == 0
        assert applied == sum(published.values()) or d["stats"]["gaps"] > 0, (applied, d["stats"])
        # Batched: a chart is drawn at most once per frame, far less often than
        # events arrive.
        for metric, chart in d["charts"].items():
            assert chart["draws"] <= d["stats"]["frames"], (metric, chart, d["stats"])
            assert chart["draws"] < applied / 2, (metric, chart["draws"], applied)
        # Generous bounds for a shared 2-core machine: the page must not stall.
        assert d["stats"]["maxFrameMs"] < 500, d["stats"]
        assert frames > 20, frames


def test_the_event_rate_sparkline_is_drawn_whole_at_1400_px(page: Any) -> None:
    """Regression: the newest point sat on the canvas's right edge, half cut off,
    and the first samples were a sliver against that edge."""
    with serving() as server:
        stop = threading.Event()

        def publish() -> None:
            step = 0
            while not stop.wait(0.01):
                server.log({"loss": 1.0 / (step + 1)}, step=step, run="spark")
                step += 1

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            page.goto(f"{server.urls['rest']}/")
            wait_connected(page)
            script = """() => {
                const canvas = document.getElementById('rate-spark');
                const box = canvas.getBoundingClientRect();
                if (box.right > document.documentElement.clientWidth) return 'outside';
                const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                const drawn = (x) => { for (let y = 0; y < canvas.height; y++)
                  if (data[(y * canvas.width + x) * 4 + 3] > 0) return true; return false; };
                if (drawn(canvas.width - 1)) return 'touches the right edge';
                return drawn(Math.floor(canvas.width * 0.1)) && drawn(canvas.width - 3) ? 'ok' : 'not yet';
            }"""
            page.wait_for_function(f"({script})() === 'ok'", timeout=WAIT_MS)
        finally:
            stop.set()
            publisher.join()
