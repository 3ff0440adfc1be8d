"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``)
driven by Playwright's Python package, against a real server on free ports.

The page exposes ``window.streamHub.debug()`` (per-series point counts and
step ranges, chart draw counts and axes, transport states, counters); the
tests read it and the DOM, waiting on conditions with deadlines
(``wait_js``: polled with ``evaluate``, which the page's Content-Security-Policy
allows; Playwright's ``wait_for_function`` evaluates strings in the page,
which the policy refuses, as it should), never sleeping a fixed time.

Skipped when Playwright or Chromium is missing, unless
``STREAM_HUB_REQUIRE_ALL=1``, which makes that a failure. With
``STREAM_HUB_SAVE_SCREENSHOT=1`` the tests also write the README's pictures:
``docs/dashboard.png`` (late joiner), ``docs/ranks.png`` (a run's ranks as
lines and as a band) and ``docs/analysis.png`` (sections, smoothing, log y,
a zoom, hyper-parameters, the log).

Run: ``pytest -m browser tests/integration/test_dashboard.py``
(needs ``apt-get install -y chromium`` and ``pip install playwright``; never
``playwright install``, which downloads a browser of its own).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_hub import get_stream_server, get_stream_server_manager

from ..conftest import free_config, need
from ..processes import PYTHON, REPO, child_env, free_ports
from ..processes import run as run_process

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


def wait_js(target: Any, predicate: str, arg: Any = None, timeout: float = WAIT_MS) -> None:
    """Wait until ``predicate`` (a JavaScript expression, or a function of
    ``arg``) is truthy in ``target`` (a page or a frame), for ``timeout`` ms.

    Polled from here with ``evaluate`` (DevTools' own calls, which the page's
    Content-Security-Policy does not govern): ``wait_for_function`` would
    evaluate the string with the page's ``eval``, which the policy refuses.
    """
    from playwright.sync_api import Error

    deadline = time.monotonic() + timeout / 1000
    while True:
        try:
            if target.evaluate(predicate, arg):
                return
        except Error as exc:  # the page navigating meanwhile: ask the next one
            if "context was destroyed" not in str(exc) and "navigat" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout / 1000:.0f} s waiting for {predicate[:200]}")
        time.sleep(0.01)  # test-side polling, bounded by the deadline


def wait_for(page: Any, condition: str, arg: Any = None, timeout: float = WAIT_MS) -> None:
    """Wait until ``condition``, JavaScript over ``d = debug()`` and ``arg``, is true."""
    wait_js(
        page,
        "(arg) => { const d = window.streamHub && window.streamHub.debug();"
        f" try {{ return !!d && ({condition}); }} catch (e) {{ return false; }} }}",
        arg=arg,
        timeout=timeout,
    )


def wait_connected(page: Any) -> None:
    wait_js(
        page,
        "document.querySelectorAll('.transports .pill[data-state=\"connected\"]').length === 3",
        timeout=WAIT_MS,
    )


def cell(page: Any, run: str, metric: str) -> Any:
    return page.locator(f'#latest-table td[data-run="{run}"][data-metric="{metric}"]')


def wait_cell(page: Any, run: str, metric: str, text: str) -> None:
    wait_js(
        page,
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
        wait_js(page, "document.querySelector('.chart-card[data-metric=\"loss\"]').dataset.series === '1'")
        screenshot(page, tmp_path / "dashboard-live.png")


# Every Content-Security-Policy violation the page reports from now on, as
# "<directive> <blocked URL>" (installed by evaluate: an init script would
# make Playwright's waits evaluate strings in the page, which the policy refuses).
CSP_WATCH = """() => {
  window.__cspViolations = [];
  document.addEventListener("securitypolicyviolation", (e) =>
    window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
}"""


def test_the_dashboard_runs_under_its_content_security_policy(page: Any) -> None:
    """The page comes with its policy (issue 22 L8), and under it connects
    all three ways, shows live data and draws, downloads a PNG and a CSV,
    reports no violation (the console has every one since the page began);
    the policy is enforced (a string is never code)."""
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    with serving() as server:
        response = page.goto(server.urls["rest"] + "/")
        page.evaluate(CSP_WATCH)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors" in policy, policy
        wait_connected(page)
        for i in range(10):
            server.log({"loss": 1 / (i + 1)}, step=i, run="exp1")
        wait_cell(page, "exp1", "loss", "0.1")
        wait_for(page, "d.charts.loss.xRange[1] === 9")
        assert coloured_pixels(page, "loss", run_color(page, "exp1")) > 50, "no line drawn"
        server.log({"loss": 0.05}, step=10, run="exp1")  # live, after the first draw
        wait_cell(page, "exp1", "loss", "0.05")
        for tool in ("png", "csv"):  # a canvas's blob, a fetch's
            with page.expect_download() as download:
                card(page, "loss").locator(f'[data-tool="{tool}"]').click()
            assert download.value.suggested_filename == f"loss.{tool}"
        assert page.evaluate("window.__cspViolations") == []
        assert not [line for line in console if "Content Security Policy" in line], console
        # Enforced: an inline script (what an injection would add) does not run, and is reported.
        page.evaluate(
            "() => { const s = document.createElement('script');"
            " s.textContent = 'window.__injected = true'; document.body.append(s); }"
        )
        wait_js(page, "window.__cspViolations.length > 0")
        assert page.evaluate("window.__injected") is None
        assert page.evaluate("window.__cspViolations")[0].startswith("script-src-elem inline")


@contextmanager
def page_at(address: str, html: str) -> Iterator[str]:
    """``html`` served at ``http://<address>:<free port>/`` (a notebook, another
    site); the page's URL. A page of Playwright's own (``route``) would not
    do: Chromium counts it outside this machine and refuses it loopback frames."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer((address, 0), Page)
    thread = threading.Thread(target=httpd.serve_forever, name="test-page-server", daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_notebooks_and_editors_may_frame_the_dashboard_other_sites_may_not(page: Any) -> None:
    """``frame-ancestors``: a Jupyter page on this machine (localhost, any
    port) embeds the live dashboard; a page of another site (127.0.0.2 is
    another origin and site, still on this machine) gets nothing."""
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    with serving() as server:
        dashboard = server.urls["rest"] + "/"
        host_page = (
            f'<!doctype html><title>notebook</title><iframe src="{dashboard}" width="1200" height="900">'
        )
        with page_at("127.0.0.1", host_page) as notebook:
            page.goto(notebook.replace("127.0.0.1", "localhost") + "lab/tree/train.ipynb")
            frame = page.frames[1]  # the page's load waited for the frame's
            wait_js(
                frame,
                "document.querySelectorAll('.transports .pill[data-state=\"connected\"]').length === 3",
                timeout=WAIT_MS,
            )
            server.log({"loss": 0.25}, step=1, run="framed")
            wait_js(
                frame,
                "[...document.querySelectorAll('#latest-table td')].some((td) => td.textContent === '0.25')",
                timeout=WAIT_MS,
            )
        assert not [line for line in console if "frame-ancestors" in line], console

        with page_at("127.0.0.2", host_page) as elsewhere:
            with page.expect_console_message(lambda message: "frame-ancestors" in message.text):
                page.goto(elsewhere)
            assert page.frames[1].url != dashboard
            assert page.frames[1].evaluate("typeof window.streamHub") == "undefined"


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
                # Downsampled by pairwise merges: how many buckets depends on
                # how much came in the snapshot and how much live.
                assert 100 <= s["points"] <= 5000, (run, metric, s)
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
        wait_js(page, "!document.querySelector('[data-fact=\"clients\"]').textContent.includes('SSE 0')")
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
    with serving(history_size=16, store=False) as server:  # no archive: a gap
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
            wait_js(page, f"({script})() === 'ok'", timeout=WAIT_MS)
        finally:
            stop.set()
            publisher.join()


# -- analysis: ranks, smoothing, log y, zoom, sections, exports, logs, states ------------------------

# What a chart's canvas shows, per pixel: "ink" is a tinted pixel (a line or a
# band: run colours are saturated; grid, axes and text are grey; the canvas is
# transparent where nothing is drawn). A pixel's tint is its colour's spread
# times its opacity: strong for lines, faint for raw lines behind smoothed ones
# and for bands (the grid's is about 5).
PIXELS = """([id, columns]) => {
    const card = [...document.querySelectorAll('.chart-card')].find((c) => c.dataset.id === id);
    const canvas = card.querySelector('canvas');
    const info = window.streamHub.debug().charts[id.replace('\\u0000', '/')];
    const dpr = canvas.width / info.width;
    const { data, width } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    const box = info.box;
    const top = Math.ceil(box.top * dpr) + 2, bottom = Math.floor(box.bottom * dpr) - 2;
    const left = Math.ceil(box.left * dpr) + 2, right = Math.floor(box.right * dpr) - 2;
    const spread = (x, y) => {
      const i = (y * width + x) * 4;
      const c = Math.max(data[i], data[i + 1], data[i + 2]) - Math.min(data[i], data[i + 1], data[i + 2]);
      return (c * data[i + 3]) / 255;
    };
    let strong = 0, faint = 0, low = 0, ink = 0;
    for (let y = top; y <= bottom; y++) {
      for (let x = left; x <= right; x++) {
        const s = spread(x, y);
        if (s > 90) strong++; else if (s > 10) faint++;
        if (s > 10) { ink++; if (y > bottom - (bottom - top) * 0.2) low++; }
      }
    }
    const runs = columns.map((f) => {
      const x = Math.round(left + (right - left) * f);
      const out = [];
      let start = -1;
      for (let y = top; y <= bottom + 1; y++) {
        const on = y <= bottom && spread(x, y) > 10;
        if (on && start < 0) start = y;
        if (!on && start >= 0) { out.push([start, y - 1]); start = -1; }
      }
      return out;
    });
    // Where the runs are, as fractions of the plot's height from its top.
    const heights = runs.map((list) => list.map(([a, b]) => ((a + b) / 2 - top) / (bottom - top)));
    const tops = runs.map((list) => list.map(([a]) => (a - top) / (bottom - top)));  // where each begins
    return { strong, faint, ink, lowShare: ink ? low / ink : 0, runs, heights, tops };
}"""


def pixels(page: Any, view_id: str, columns: tuple[float, ...] = ()) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(PIXELS, [view_id, list(columns)])
    return result


def card(page: Any, metric: str) -> Any:
    return page.locator(f'.chart-card[data-id="{metric}"]')


def plot_point(page: Any, metric: str, fx: float, fy: float = 0.5) -> tuple[float, float]:
    """Page coordinates of a point of a chart's plot area (fractions of it)."""
    info = debug(page)["charts"][metric]
    box = card(page, metric).locator("canvas").bounding_box()
    left, right, top, bottom = (info["box"][k] for k in ("left", "right", "top", "bottom"))
    return box["x"] + left + (right - left) * fx, box["y"] + top + (bottom - top) * fy


def save_doc_screenshot(page: Any, name: str, **options: Any) -> None:
    if os.environ.get("STREAM_HUB_SAVE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        page.screenshot(path=str(REPO / "docs" / name), **options)


def publish_ranks(server: Any, run: str, steps: range, ranks: range, offset: float = 0.5) -> int:
    """Metric events of ``ranks`` of a distributed run, as its processes would send them."""
    seq = 0
    for step in steps:
        for rank in ranks:
            loss = 3.0 - step / 100 + rank * offset
            seq = server.hub.submit(
                "metric", run, step, {"loss": loss, "acc": step / 400 + rank / 20}, rank=rank
            )
    return seq


def test_ranks_are_lines_or_a_mean_with_a_band(page: Any, tmp_path: Path) -> None:
    with serving() as server:
        # Ranks 0-2 in process, rank 3 over REST: a late joiner gets every rank's whole curve.
        publish_ranks(server, "job", range(200), range(3))
        events = [
            {
                "run": "job",
                "rank": 3,
                "step": s,
                "metrics": {"loss": 3.0 - s / 100 + 1.5, "acc": s / 400 + 0.15},
            }
            for s in range(200)
        ]
        assert (
            httpx.post(f"{server.urls['rest']}/api/publish", json={"events": events}, timeout=10).status_code
            == 200
        )
        server.log({"loss": 1.0, "acc": 0.5}, step=0, run="single")
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        wait_for(
            page,
            "!d.loading && ['0', '1', '2', '3'].every((r) => d.series.job.loss.ranks[r].maxStep === 199)",
        )
        d = debug(page)
        assert d["runs"][0]["ranks"] == ["0", "1", "2", "3"] or any(
            r["ranks"] == ["0", "1", "2", "3"] for r in d["runs"]
        )
        for rank in "0123":
            assert d["series"]["job"]["loss"]["ranks"][rank]["points"] == 200
        wait_for(
            page,
            "d.charts.loss.lines.filter((l) => l.key.startsWith('job')).length === 4"
            " && d.charts.loss.draws > 0",
        )
        assert page.locator(
            '.chart-card[data-id="loss"] .chart-legend .item[data-run="job"]'
        ).text_content() == ("job (4 ranks)")
        # One line per rank: four separate strokes down a column of pixels.
        wait_for(page, "d.charts.loss.xRange[1] === 199")
        assert len(pixels(page, "loss", (0.5,))["runs"][0]) == 4

        # Live: new steps of each rank extend the right line; a fifth rank appears.
        publish_ranks(server, "job", range(200, 220), range(4))
        publish_ranks(server, "job", range(0, 220), range(4, 5))
        wait_for(
            page,
            "['0', '1', '2', '3', '4'].every((r) => d.series.job.loss.ranks[r]"
            " && d.series.job.loss.ranks[r].maxStep === 219)"
            " && d.charts.loss.lines.filter((l) => l.key.startsWith('job')).length === 5",
        )
        assert debug(page)["series"]["job"]["loss"]["ranks"]["2"]["points"] == 220

        # This chart only: the mean with a min-max band: one filled run down the column.
        card(page, "loss").locator('[data-tool="ranks"]').click()
        wait_for(
            page, "d.charts.loss.rankMode === 'band' && d.charts.loss.lines.some((l) => l.kind === 'band')"
        )
        wait_for(page, "d.charts.acc.rankMode === 'lines'")
        wait_js(
            page,
            'document.querySelector(\'.chart-card[data-id="loss"] [data-tool="ranks"]\')'
            ".getAttribute('aria-pressed') === 'true'",
        )
        wait_for(page, "d.charts.loss.draws > 0")
        wait_js(
            page,
            f"({PIXELS})(['loss', [0.5]]).runs[0].length === 1",  # the band, its mean line inside
        )
        band = pixels(page, "loss", (0.5,))["runs"][0]
        tallest = max(b - a for a, b in band)
        assert tallest > 60, band  # rank 0 to rank 4 is 2.0 of a 3.5-tall axis
        # Globally: every chart follows the select.
        page.select_option("#rank-mode", "band")
        wait_for(page, "d.settings.rankMode === 'band' && d.charts.acc.rankMode === 'band'")
        page.select_option("#rank-mode", "lines")
        wait_for(page, "d.charts.loss.rankMode === 'lines' && d.charts.acc.rankMode === 'lines'")
        card(page, "loss").locator('[data-tool="ranks"]').click()
        wait_for(page, "d.charts.loss.rankMode === 'band'")
        page.locator("#runs-list .run[data-run='single'] .run-toggle").click()
        wait_for(page, "d.charts.loss.lines.length === 1")
        screenshot(page, tmp_path / "ranks.png")
        save_doc_screenshot(page, "ranks.png", clip={"x": 0, "y": 0, "width": 1400, "height": 560})


def noisy(step: int) -> float:
    return 1.0 + 0.5 * math.sin(step * 2.1) * math.cos(step * 0.37)


def test_smoothing_changes_the_drawn_path_and_keeps_the_raw_one_faint(page: Any) -> None:
    with serving() as server:
        for i in range(400):
            server.log({"loss": noisy(i)}, step=i, run="exp")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.series.exp.loss.maxStep === 399 && d.charts.loss.draws > 0")
        raw = pixels(page, "loss")
        assert raw["strong"] > 500
        page.locator("#smoothing").fill("0.9")
        wait_for(page, "d.settings.smoothing === 0.9 && d.charts.loss.smoothing === 0.9")
        assert page.locator("#smoothing-value").text_content() == "0.90"
        smooth = pixels(page, "loss")
        # The smoothed line is much shorter than the noisy one; the raw one is still there, faint.
        assert smooth["strong"] < raw["strong"] * 0.5, (raw, smooth)
        assert smooth["faint"] > raw["strong"] * 0.3, (raw, smooth)
        assert "raw" in hover_chart(page, "loss", 0.5)
        page.locator("#smoothing").fill("0")
        wait_for(page, "d.charts.loss.smoothing === 0")
        assert abs(pixels(page, "loss")["strong"] - raw["strong"]) < raw["strong"] * 0.1


def test_log_y_spreads_decades_over_the_axis(page: Any) -> None:
    with serving() as server:
        for i in range(200):
            server.log({"loss": 10 ** (-4 * i / 199)}, step=i, run="exp")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.series.exp.loss.maxStep === 199 && d.charts.loss.draws > 0")
        # Halfway (1e-2) and three quarters (1e-3) along: on a linear axis
        # the curve hugs the bottom, on a log axis it is a straight diagonal.
        linear = pixels(page, "loss", (0.5, 0.75))["heights"]
        assert all(len(h) == 1 and h[0] > 0.9 for h in linear), linear
        button = card(page, "loss").locator('[data-tool="log"]')
        button.click()
        wait_for(page, "d.charts.loss.logY && d.charts.loss.yRange[0] > 0 && d.charts.loss.yRange[0] < 1e-4")
        assert button.get_attribute("aria-pressed") == "true"
        logged = pixels(page, "loss", (0.5, 0.75))["heights"]
        assert 0.4 < logged[0][0] < 0.6 and 0.65 < logged[1][0] < 0.85, logged


def test_zoom_by_drag_fetches_finer_data_pans_and_resets(page: Any) -> None:
    # 100 buckets for 3000 steps: the whole-run curve is coarse; the ring has every step.
    with serving(series_points=100, history_size=20_000) as server:
        for i in range(3000):
            server.log({"loss": noisy(i)}, step=i, run="exp")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.series.exp.loss.maxStep === 2999 && d.charts.loss.draws > 0")
        assert not debug(page)["series"]["exp"]["loss"]["exact"]
        before = debug(page)["charts"]["loss"]["pointsDrawn"]

        x0, y = plot_point(page, "loss", 0.4)
        x1, _ = plot_point(page, "loss", 0.5)
        page.mouse.move(x0, y)
        page.mouse.down()
        page.mouse.move((x0 + x1) / 2, y)
        page.mouse.move(x1, y)
        page.mouse.up()
        wait_for(page, "d.charts.loss.zoom && d.charts.loss.detail === 'loaded'")
        d = debug(page)
        zoom = d["charts"]["loss"]["zoom"]
        assert 1100 < zoom[0] < 1300 and 1400 < zoom[1] < 1600, zoom
        assert d["charts"]["loss"]["detailSource"] == "ring" and d["detailFetches"] >= 1
        wait_for(
            page,
            "d.charts.loss.xRange[0] === arg[0] && d.charts.loss.pointsDrawn > arg[1]",
            [zoom[0], before],
        )
        assert card(page, "loss").locator('[data-tool="reset"]').is_visible()

        # Shift+drag pans by the dragged distance.
        page.keyboard.down("Shift")
        page.mouse.move(x1, y)
        page.mouse.down()
        page.mouse.move(x0, y)
        page.mouse.up()
        page.keyboard.up("Shift")
        wait_for(page, "d.charts.loss.zoom[0] > arg[0] + 0.05 * (arg[1] - arg[0])", zoom)
        panned = debug(page)["charts"]["loss"]["zoom"]
        assert abs((panned[1] - panned[0]) - (zoom[1] - zoom[0])) < 1e-6

        # Keyboard: + zooms in around the middle; double-click resets.
        card(page, "loss").locator("canvas").focus()
        page.keyboard.press("+")
        wait_for(page, "d.charts.loss.zoom[1] - d.charts.loss.zoom[0] < arg", (panned[1] - panned[0]) * 0.6)
        page.mouse.dblclick(x0, y)
        wait_for(
            page,
            "d.charts.loss.zoom === null"
            " && d.charts.loss.xRange[0] === 0 && d.charts.loss.xRange[1] === 2999",
        )
        assert not card(page, "loss").locator('[data-tool="reset"]').is_visible()


def test_sections_by_prefix_collapse_filter_and_pin(page: Any) -> None:
    with serving() as server:
        for i in range(50):
            server.log(
                {"train/loss": 1 / (i + 1), "train/acc": i / 50, "val/loss": 2 / (i + 1), "lr": 0.1},
                step=i,
                run="exp",
            )
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.metrics.length === 4")
        sections = {s["name"]: s["charts"] for s in debug(page)["sections"]}
        assert sections == {"metrics": ["lr"], "train": ["train/acc", "train/loss"], "val": ["val/loss"]}
        assert [s["name"] for s in debug(page)["sections"]] == ["metrics", "train", "val"]

        # Collapse "train": its charts are hidden and no longer drawn, even as data arrives.
        toggle = page.locator('.chart-section[data-section="train"] .section-toggle')
        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "false"
        assert not card(page, "train/loss").is_visible()
        wait_for(page, "d.charts['train/loss'].draws > 0")
        draws = debug(page)["charts"]["train/loss"]["draws"]
        server.log({"train/loss": 0.01, "val/loss": 0.02}, step=50, run="exp")
        wait_for(page, "d.charts['val/loss'].xRange && d.charts['val/loss'].xRange[1] === 50")
        assert debug(page)["charts"]["train/loss"]["draws"] == draws
        toggle.click()
        wait_for(page, "d.charts['train/loss'].xRange[1] === 50")

        # The filter: words, or a regular expression.
        page.locator("#metric-filter").fill("loss")
        wait_for(page, "d.sections.flatMap((s) => s.charts).sort().join() === 'train/loss,val/loss'")
        assert not card(page, "lr").is_visible()
        page.locator("#metric-filter").fill("/^(lr|val)/")
        wait_for(page, "d.sections.flatMap((s) => s.charts).sort().join() === 'lr,val/loss'")
        page.locator("#metric-filter").fill("")
        wait_for(page, "d.sections.flatMap((s) => s.charts).length === 4")

        # Pinned charts come first, and stay pinned (and collapsed stays collapsed) after a reload.
        card(page, "val/loss").locator('[data-tool="pin"]').click()
        wait_for(page, "d.sections[0].name === 'pinned' && d.sections[0].charts.join() === 'val/loss'")
        assert not any(s["name"] == "val" for s in debug(page)["sections"])
        page.locator('.chart-section[data-section="metrics"] .section-toggle').click()
        page.reload()
        wait_for(page, "!d.loading && d.metrics.length === 4 && d.sections[0].name === 'pinned'")
        assert debug(page)["charts"]["val/loss"]["pinned"]
        assert next(s for s in debug(page)["sections"] if s["name"] == "metrics")["collapsed"]
        card(page, "val/loss").locator('[data-tool="pin"]').click()
        wait_for(page, "d.sections.every((s) => s.name !== 'pinned')")


def test_csv_download_is_rests_export_and_png_is_the_chart(page: Any) -> None:
    with serving() as server:
        for i in range(30):
            server.log({"loss": 1 / (i + 1), "acc": i / 30}, step=i, run="exp1")
            server.log({"loss": 2 / (i + 1)}, step=i, run="exp 2")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.series['exp 2'].loss.maxStep === 29 && d.charts.acc.draws > 0")
        rest = server.urls["rest"]

        def export(run: str, metric: str) -> str:
            params = {"format": "csv", "metric": metric}
            return httpx.get(f"{rest}/api/runs/{run}/export", params=params, timeout=10).text

        # One run in the chart: the file is REST's export as it came.
        with page.expect_download() as download:
            card(page, "acc").locator('[data-tool="csv"]').click()
        assert download.value.suggested_filename == "acc.csv"
        text = Path(download.value.path()).read_bytes().decode()
        assert text == export("exp1", "acc")
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ["seq", "ts", "step", "rank", "acc"]
        series = httpx.get(f"{rest}/api/runs/exp1/series", params={"metric": "acc"}, timeout=10).json()
        assert [int(r[2]) for r in rows[1:]] == series["steps"]
        assert [float(r[4]) for r in rows[1:]] == series["values"]

        # Two runs: each run's rows, with the run first.
        with page.expect_download() as download:
            card(page, "loss").locator('[data-tool="csv"]').click()
        rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_bytes().decode())))
        assert rows[0] == ["run", "seq", "ts", "step", "rank", "loss"]
        for run in ("exp1", "exp 2"):
            expected = list(csv.reader(io.StringIO(export(run, "loss"))))[1:]
            assert [r[1:] for r in rows[1:] if r[0] == run] == expected

        with page.expect_download() as download:
            card(page, "loss").locator('[data-tool="png"]').click()
        assert download.value.suggested_filename == "loss.png"
        data = Path(download.value.path()).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_log_panel_shows_log_events_filtered_by_run_and_level(page: Any, tmp_path: Path) -> None:
    with serving() as server:
        server.publish("log", {"message": "loading data", "level": "INFO", "logger": "train"}, run="exp1")
        server.publish("log", {"text": "old style"}, run="exp2")  # shown as the message
        server.log({"loss": 1.0}, step=0, run="exp1")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.logs.join('|') === 'loading data|old style'")
        server.publish("log", {"message": "loss is NaN", "level": "ERROR", "logger": "train"}, run="exp1")
        server.publish("log", {"message": "step timing", "level": "DEBUG"}, run="exp2")
        wait_for(
            page, "d.logs.join('|') === 'loading data|old style|loss is NaN'"
        )  # DEBUG is below the default
        line = page.locator('#log-list .log-line[data-message="loss is NaN"]')
        assert line.locator(".log-level").text_content() == "ERROR"
        assert (
            line.locator(".log-run").text_content() == "exp1"
            and line.locator(".log-logger").text_content() == "train"
        )
        page.select_option("#log-level", "DEBUG")
        wait_for(page, "d.logs.length === 4")
        page.select_option("#log-run", "exp2")
        wait_for(page, "d.logs.join('|') === 'old style|step timing'")
        page.select_option("#log-level", "ERROR")
        wait_for(page, "d.logs.length === 0")
        page.select_option("#log-run", "")
        wait_for(page, "d.logs.join('|') === 'loss is NaN'")


def test_run_states_hyper_parameters_and_comparison_at_one_step(page: Any, tmp_path: Path) -> None:
    sse, ws, rest = free_ports(3)
    with serving(sse_port=sse, ws_port=ws, rest_port=rest, port_conflict="auto") as server:
        assert server.role == "host"
        for i in range(100):
            server.log({"loss": 1 / (i + 1), "acc": i / 100}, step=i, run="exp1")
            server.log({"loss": 2 / (i + 1), "acc": i / 200}, step=i, run="exp2")
        server.publish("config", {"lr": 0.001, "batch": 64, "optimizer": "adam"}, run="exp1")
        server.publish("config", {"lr": 0.01, "batch": 64, "optimizer": "adam"}, run="exp2")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 2 && d.runs.every((r) => r.state === 'running')")
        wait_js(page, "document.querySelectorAll('#params-table tbody tr').length === 2")
        differs = page.locator("#params-table thead th.differs").all_text_contents()
        assert differs == ["lr"]
        assert page.locator('#params-table tr[data-run="exp2"] td[data-key="lr"]').text_content() == "0.01"

        # The comparison table at one step: a click on a chart picks the step under the pointer.
        hover_chart(page, "loss", 0.5)
        box = card(page, "loss").locator("canvas").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        wait_for(page, "d.compareStep !== null")
        step = debug(page)["compareStep"]
        assert 30 < step < 70
        wait_cell(page, "exp2", "loss", f"{2 / (step + 1):.5g}".rstrip("0"))
        page.locator("#compare-step").fill("9")
        page.locator("#compare-step").press("Enter")
        wait_cell(page, "exp1", "loss", "0.1")
        wait_cell(page, "exp2", "acc", "0.045")
        page.locator("#compare-latest").click()
        wait_cell(page, "exp1", "loss", "0.01")

        # A run finished in process, and one of a process that joined this hub and exited.
        server.finish("exp1", "failed")
        code = (
            "from stream_hub import get_stream_server\n"
            "server = get_stream_server()\n"
            "assert server.role == 'joined', server.role\n"
            "for i in range(10): server.log({'loss': 1.0 / (i + 1)}, step=i, run='child')\n"
        )
        env = child_env(
            STREAM_HUB_SSE_PORT=str(sse),
            STREAM_HUB_WS_PORT=str(ws),
            STREAM_HUB_REST_PORT=str(rest),
            STREAM_HUB_PORT_CONFLICT="join",
        )
        result = run_process(["-c", code], env=env, prefix=PYTHON, timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        wait_for(page, "d.runs.find((r) => r.run === 'exp1').state === 'failed'")
        wait_for(page, "d.runs.some((r) => r.run === 'child' && r.state === 'finished' && r.lastStep === 9)")
        wait_js(
            page, "document.querySelector('#runs-list .run[data-run=\"child\"]').dataset.state === 'finished'"
        )
        assert page.locator('#runs-list .run[data-run="exp1"] .run-state').text_content() == "failed"
        assert debug(page)["runs"][1]["state"] == "running"
        screenshot(page, tmp_path / "states.png")


def test_x_by_wall_time_and_relative_time(page: Any) -> None:
    start = 1_764_000_000.0
    with serving() as server:
        for i in range(100):
            server.hub.submit("metric", "exp", i, {"loss": 1 / (i + 1)}, ts=start + 2 * i)
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.series.exp.loss.maxStep === 99 && d.charts.loss.draws > 0")
        page.select_option("#x-mode", "wall")
        wait_for(
            page,
            "d.settings.xMode === 'wall' && Math.abs(d.charts.loss.xRange[0] - arg) < 1e-3"
            " && Math.abs(d.charts.loss.xRange[1] - arg - 198) < 1e-3",
            start,
        )
        assert "step" in hover_chart(page, "loss", 0.5)
        page.select_option("#x-mode", "relative")
        wait_for(
            page,
            "d.settings.xMode === 'relative' && Math.abs(d.charts.loss.xRange[0]) < 1e-3"
            " && Math.abs(d.charts.loss.xRange[1] - 198) < 1e-3",
        )
        # Live events carry their own times.
        server.hub.submit("metric", "exp", 100, {"loss": 0.001}, ts=start + 300)
        wait_for(page, "Math.abs(d.charts.loss.xRange[1] - 300) < 1e-3")
        page.select_option("#x-mode", "step")
        wait_for(page, "d.charts.loss.xRange[1] === 100")


def test_system_metrics_have_their_own_section_not_a_run(page: Any) -> None:
    with serving(system_metrics=0.1) as server:
        server.log({"loss": 1.0}, step=0, run="exp")
        page.goto(server.urls["rest"] + "/")
        wait_for(
            page,
            "!d.loading && d.system.includes('cpu/percent') && d.charts['_system/cpu/percent'].draws > 0",
        )
        d = debug(page)
        assert [r["run"] for r in d["runs"]] == ["exp"]  # not in the run list, nor the table
        assert page.locator("#latest-table th[data-run='_system']").count() == 0
        assert d["sections"][-1]["name"] == "system" and "memory/rss_mb" in d["sections"][-1]["charts"]
        assert "cpu/percent" not in d["metrics"]
        wait_for(page, "d.series._system['cpu/percent'].points >= 3")


def test_keyboard_reaches_every_control_with_visible_focus(page: Any) -> None:
    with serving() as server:
        for i in range(50):
            server.log({"loss": 1 / (i + 1)}, step=i, run="exp")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.charts.loss.draws > 0")
        reached = []
        for _ in range(40):
            page.keyboard.press("Tab")
            focused = page.evaluate(
                """() => { const e = document.activeElement; const s = getComputedStyle(e);
                return { id: e.id, cls: e.className, tool: e.dataset.tool || '', tag: e.tagName,
                         outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2 }; }"""
            )
            if focused["tag"] == "BODY":  # past the last control, around again
                continue
            assert focused["outline"], focused  # focus is visible wherever it is
            reached.append(focused)
        names = {f["id"] or f["tool"] or str(f["cls"]) for f in reached}
        for control in (
            "metric-filter",
            "smoothing",
            "x-mode",
            "rank-mode",
            "run-toggle",
            "run-solo",
            "log",
            "csv",
            "pin",
        ):
            assert control in names, (control, names)
        assert any(f["tag"] == "CANVAS" for f in reached)
        # Keys on a focused chart zoom and reset it; space on a run toggles it.
        card(page, "loss").locator("canvas").focus()
        page.keyboard.press("+")
        wait_for(page, "d.charts.loss.zoom !== null")
        page.keyboard.press("Escape")
        wait_for(page, "d.charts.loss.zoom === null")
        page.locator("#runs-list .run-toggle").focus()
        page.keyboard.press("Space")
        wait_for(page, "d.runs[0].visible === false")


CONTRAST = """() => {
    const parse = (c) => {
      const m = c.match(/[\\d.]+/g).map(Number);
      return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1];
    };
    const lum = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const ratio = (a, b) => {
      const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
      return (x + 0.05) / (y + 0.05);
    };
    const background = (el) => {
      let colour = [255, 255, 255];
      const stack = [];
      for (let e = el; e; e = e.parentElement) stack.push(getComputedStyle(e).backgroundColor);
      stack.push(getComputedStyle(document.documentElement).backgroundColor);
      for (const c of stack.reverse()) {
        const [r, g, b, a] = parse(c);
        colour = [r * a + colour[0] * (1 - a), g * a + colour[1] * (1 - a), b * a + colour[2] * (1 - a)];
      }
      return colour;
    };
    const worst = [];
    for (const el of document.querySelectorAll('body *')) {
      if (!el.offsetParent && getComputedStyle(el).position !== 'fixed') continue;
      if (el.closest('[hidden], .hidden-run, [data-visible="false"], .tooltip')) continue;
      const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own) continue;
      const s = getComputedStyle(el);
      if (s.visibility === 'hidden' || parseFloat(s.opacity) < 1) continue;
      const r = ratio(parse(s.color), background(el));
      const size = parseFloat(s.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
      const text = el.textContent.trim().slice(0, 30);
      if (r < (large ? 3 : 4.5)) worst.push([el.tagName, el.className, text, r.toFixed(2)]);
    }
    const panel = parse(getComputedStyle(document.querySelector('.panel')).backgroundColor);
    const lines = window.streamHub.debug().runs.map((r) => {
      const hex = r.color; const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
      return [r.run, ratio(rgb, panel).toFixed(2)];
    }).filter(([, v]) => v < 3);
    return { text: worst, lines };
}"""


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_text_and_lines_are_readable_in_both_themes(browser: Any, scheme: str) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        with serving() as server:
            for i in range(30):
                for run in ("exp1", "exp2", "exp3", "exp4", "exp5", "exp6"):
                    server.log({"loss": 1 / (i + 1), "train/acc": i / 30}, step=i, run=run)
            server.publish("config", {"lr": 0.1}, run="exp1")
            server.publish("log", {"message": "warning here", "level": "WARNING"}, run="exp1")
            server.publish("log", {"message": "error here", "level": "ERROR"}, run="exp1")
            page.goto(server.urls["rest"] + "/")
            wait_for(page, "!d.loading && d.runs.length === 6 && d.logs.length === 2")
            wait_cell(page, "exp6", "loss", formatted(1 / 30))
            result = page.evaluate(CONTRAST)
            assert result == {"text": [], "lines": []}, result
            if scheme == "light":
                screenshot(page, Path(os.environ.get("TMPDIR", "/tmp")) / "dashboard-light.png")
    finally:
        context.close()


def formatted(value: float) -> str:
    return f"{value:.5g}"


def test_analysis_screenshot(page: Any, tmp_path: Path) -> None:
    """The README's picture of the analysis features: sections, smoothing, a
    zoom, the hyper-parameter table and the log."""
    with serving(series_points=200, history_size=50_000) as server:
        rng = random.Random(3)
        runs = ["baseline", "lr-3e-4", "lr-1e-3"]
        for step in range(3000):
            for index, run in enumerate(runs):
                values = realistic(index, step, rng)
                server.log(
                    {
                        "train/loss": values["loss"],
                        "train/acc": values["acc"],
                        "val/loss": values["loss"] + 0.1,
                        "lr": values["lr"],
                    },
                    step=step,
                    run=run,
                )
        for run, lr in zip(runs, (1e-4, 3e-4, 1e-3)):
            server.publish("config", {"lr": lr, "batch_size": 256, "model": "resnet50"}, run=run)
        server.publish(
            "log", {"message": "epoch 12: val/loss 0.412", "level": "INFO", "logger": "train"}, run="lr-1e-3"
        )
        server.publish(
            "log",
            {"message": "grad norm 41.3 above 10: clipped", "level": "WARNING", "logger": "optim"},
            run="lr-3e-4",
        )
        server.finish("baseline")
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        wait_for(page, "!d.loading && d.metrics.length === 4 && d.charts['train/loss'].draws > 0")
        page.locator("#smoothing").fill("0.85")
        card(page, "train/loss").locator('[data-tool="log"]').click()
        card(page, "val/loss").locator('[data-tool="pin"]').click()
        page.evaluate("window.streamHub.zoom('train/acc', 600, 1400)")
        wait_for(page, "d.charts['train/acc'].detail === 'loaded' && d.runs[0].state === 'finished'")
        page.locator('.chart-section[data-section="metrics"] .section-toggle').click()
        hover_chart(page, "train/loss", 0.3)
        screenshot(page, tmp_path / "analysis.png")
        save_doc_screenshot(page, "analysis.png", full_page=True)


def test_a_rank_that_fell_silent_is_named_in_the_run_list(page: Any) -> None:
    # Contract v3, "A restart is not a death": each rank's last-seen time is
    # in /api/runs, and the run list names a rank that stopped while the
    # others go on (here rank 1's last metric is two minutes old).
    with serving() as server:
        now = time.time()
        events = [
            {
                "run": "job",
                "rank": rank,
                "step": s,
                "ts": now - (120 if rank == 1 else 0) + s * 0.01,
                "metrics": {"loss": 1.0 / (s + 1)},
            }
            for rank in range(3)
            for s in range(20)
        ]
        response = httpx.post(f"{server.urls['rest']}/api/publish", json={"events": events}, timeout=10)
        assert response.status_code == 200, response.text
        runs = httpx.get(f"{server.urls['rest']}/api/runs", timeout=10).json()["runs"]
        seen = next(r for r in runs if r["run"] == "job")["rank_last_ts"]
        assert set(seen) == {"0", "1", "2"} and seen["0"] - seen["1"] > 100
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        item = page.locator('#runs-list [data-run="job"]')
        page.wait_for_function(
            "document.querySelector('#runs-list [data-run=\"job\"]')?.dataset.silentRanks === '1'",
            timeout=WAIT_MS,
        )
        assert "rank 1 silent" in (item.locator(".run-details").text_content() or "")
        assert "rank 1: last metric" in (item.locator(".run-details").get_attribute("title") or "")


def test_a_nan_metric_puts_an_alert_badge_on_its_run(page: Any) -> None:
    # Issue 23.6: the hub's alert (a NaN) reaches the page live over SSE and
    # marks the run in the list: the count, the worst level, the latest title
    # in the tooltip; a page opened later gets it from /api/runs.
    with serving() as server:
        for step in range(20):
            server.log({"loss": 1.0 / (step + 1)}, step=step, run="healthy")
            server.log({"loss": 1.0 / (step + 1)}, step=step, run="sick")
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        wait_for(page, "!d.loading && d.runs.length === 2")
        badge = page.locator('#runs-list [data-run="sick"] .run-alerts')
        assert badge.is_hidden()
        server.log({"loss": math.nan}, step=20, run="sick")
        wait_for(page, "d.runs.find((r) => r.run === 'sick').alerts.count === 1")
        wait_js(page, "!document.querySelector('#runs-list [data-run=\"sick\"] .run-alerts').hidden")
        assert badge.get_attribute("data-level") == "error"
        assert (badge.text_content() or "").endswith("1")
        assert "latest: loss is NaN" in (badge.get_attribute("title") or "")
        assert page.locator('#runs-list [data-run="healthy"] .run-alerts').is_hidden()
        wait_for(
            page, "d.logs.some((message) => message.startsWith('loss is NaN: '))"
        )  # and a line in the log

        server.alert("slow input pipeline", "200 samples/s", level="info", run="sick")
        wait_js(
            page,
            "document.querySelector('#runs-list [data-run=\"sick\"] .run-alerts').textContent.endsWith('2')",
        )
        assert badge.get_attribute("data-level") == "error"  # the worst stays
        assert "latest: slow input pipeline" in (badge.get_attribute("title") or "")

        page.reload()
        wait_connected(page)
        wait_for(page, "!d.loading && d.runs.find((r) => r.run === 'sick')?.alerts.count === 2")
        wait_js(
            page, "document.querySelector('#runs-list [data-run=\"sick\"] .run-alerts')?.hidden === false"
        )
        assert page.locator('#runs-list [data-run="sick"] .run-alerts').get_attribute("data-level") == "error"


# -- the view in the URL (issue 23.5) ------------------------------------------------------

# Run names the URL must carry whole: "/", "=", ",", "&", "#", spaces, unicode.
ODD_RUNS = ("sweep/lr=3e-4", "exp 2, ünï #1 & co", "base")

VIEW = """() => {
  const d = window.streamHub.debug();
  const charts = {};
  for (const [metric, c] of Object.entries(d.charts)) {
    charts[metric] = { logY: c.logY, rankMode: c.rankMode, zoom: c.zoom, hidden: c.hidden };
  }
  return {
    runs: Object.fromEntries(d.runs.map((r) => [r.run, r.visible])),
    xMode: d.settings.xMode, rankMode: d.settings.rankMode, compareStep: d.compareStep, charts,
    filter: document.getElementById('metric-filter').value,
    logRun: document.getElementById('log-run').value,
    logLevel: document.getElementById('log-level').value,
  };
}"""


def shown_view(page: Any) -> dict[str, Any]:
    """What the page shows, as far as the URL keeps it."""
    result: dict[str, Any] = page.evaluate(VIEW)
    return result


def test_the_view_is_in_the_url_a_reload_and_a_copied_link_show_it_again(page: Any, browser: Any) -> None:
    """Hidden runs (any name), one chart's log y, another's rank mode and zoom,
    the x axis, the metric filter, the comparison step and the log filters
    survive a reload and travel in a copied link to a fresh browser; the URL
    is rewritten in place (no history entry per change)."""
    start = 1_764_000_000.0
    with serving(series_points=100, history_size=50_000) as server:
        for step in range(300):
            for index, run in enumerate(ODD_RUNS):
                metrics = {"loss": noisy(step) + index, "acc": step / 300 + index / 10, "lr": 0.1}
                server.hub.submit("metric", run, step, metrics, ts=start + 2 * step)
            for rank in range(3):
                metrics = {"loss": noisy(step) + rank, "acc": step / 300}
                server.hub.submit("metric", "job", step, metrics, rank=rank, ts=start + 2 * step)
        server.publish("log", {"message": "lr warm-up done", "level": "WARNING"}, run="sweep/lr=3e-4")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 4 && d.charts.loss.draws > 0 && d.logs.length === 1")
        entries = page.evaluate("history.length")
        assert page.evaluate("location.hash") == ""

        for run in ODD_RUNS[:2]:
            page.locator("#runs-list .run-toggle").filter(has_text=run).click()
        card(page, "acc").locator('[data-tool="log"]').click()
        card(page, "loss").locator('[data-tool="ranks"]').click()
        page.select_option("#x-mode", "relative")
        wait_for(page, "d.settings.xMode === 'relative' && d.charts.loss.xRange[1] === 598")
        page.evaluate("window.streamHub.zoom('loss', 200, 300)")
        page.locator("#metric-filter").fill("/^(loss|acc)$/")
        page.select_option("#log-run", ODD_RUNS[0])
        page.select_option("#log-level", "WARNING")
        page.locator("#compare-step").fill("120")
        page.locator("#compare-step").press("Enter")
        wait_for(page, "d.url.includes('step=120')")  # written a moment after the last change
        view = shown_view(page)
        assert view["runs"] == {ODD_RUNS[0]: False, ODD_RUNS[1]: False, "base": True, "job": True}
        assert view["charts"]["acc"]["logY"] and not view["charts"]["loss"]["logY"]
        assert view["charts"]["loss"]["rankMode"] == "band" and view["charts"]["acc"]["rankMode"] == "lines"
        assert view["charts"]["loss"]["zoom"] == [200, 300] and view["charts"]["acc"]["zoom"] is None
        assert view["charts"]["lr"]["hidden"] and view["xMode"] == "relative" and view["compareStep"] == 120

        # Compact and readable: names percent-encoded only where they must be.
        url = page.url
        fragment = url.split("#", 1)[1]
        assert "hide=exp%202%2C%20%C3%BCn%C3%AF%20%231%20%26%20co,sweep/lr%3D3e-4" in fragment, fragment
        for part in ("x=relative", "c:acc=log", "c:loss=band,200..300", "step=120", "loglevel=WARNING"):
            assert part in fragment.split("&"), (part, fragment)
        assert page.evaluate("history.length") == entries  # replaced, never pushed

        page.reload()
        wait_for(page, "!d.loading && d.runs.length === 4 && d.charts.loss.detail === 'loaded'")
        wait_for(
            page, "d.charts.loss.xRange[0] === 200 && d.charts.loss.xRange[1] === 300 && d.logs.length === 1"
        )
        assert shown_view(page) == view
        assert page.url == url
        wait_cell(page, "base", "acc", formatted(120 / 300 + 0.2))

        # The link, in a browser that has never seen this dashboard.
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
        other = context.new_page()
        other.set_default_timeout(WAIT_MS)
        try:
            other.goto(url)
            wait_for(other, "!d.loading && d.runs.length === 4 && d.charts.loss.detail === 'loaded'")
            wait_for(other, "d.charts.loss.xRange[0] === 200 && d.logs.length === 1")
            assert shown_view(other) == view
            # Hidden runs are not drawn; the one chart's band and log axis are.
            lines = debug(other)["charts"]["loss"]["lines"]
            assert {line["key"] for line in lines} == {"base", "job\u0000band"}, lines
            assert debug(other)["charts"]["acc"]["yRange"][0] > 0
        finally:
            context.close()

        # Back to the defaults: the URL empties; a hash typed by the user is applied.
        page.locator("#runs-all").click()
        page.evaluate("window.streamHub.zoom('loss', null)")
        page.evaluate("location.hash = '#c:acc=log&hide=base&x=step'")
        wait_for(
            page,
            "d.settings.xMode === 'step' && d.runs.find((r) => r.run === 'base').visible === false"
            " && d.runs.find((r) => r.run === 'job').visible && d.charts.loss.rankMode === 'lines'"
            " && d.charts.acc.logY && d.compareStep === null",
        )
        assert page.locator("#metric-filter").input_value() == ""


ROUND_TRIP = """(names) => {
  const U = window.StreamHubUrlState;
  const view = U.defaults();
  view.selection = { only: true, names };
  view.filter = names.join('|');
  view.logRun = names[0];
  const prefs = (i) => ({ logY: i % 2 === 0, rankMode: 'band', zoom: [i / 3, i + 0.5] });
  view.charts = new Map(names.map((n, i) => [n, prefs(i)]));
  view.charts.set('_system\u0000cpu/percent', { logY: true, rankMode: null, zoom: null });
  const hash = U.format(view);
  const back = U.parse('#' + hash);
  return {
    hash, names: back.selection.names, only: back.selection.only, filter: back.filter, logRun: back.logRun,
    charts: [...back.charts].map(([id, c]) => [id, c.logY, c.rankMode, c.zoom]),
  };
}"""


def test_the_url_carries_any_name_and_ignores_what_it_does_not_know(page: Any) -> None:
    """urlstate.js's parse and format, on their own: every name comes back
    whole, zooms to a ten-thousandth of their span; a broken hash falls back
    to the defaults key by key."""
    with serving() as server:
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading")
        names = [
            *ODD_RUNS,
            "a,b&c=d#e",
            "100%",
            "..",
            "c:x",
            "sys:y",
            "a+b",
            "tab\there",
            "日本語/ラン",
            "😀",
        ]
        back = page.evaluate(ROUND_TRIP, names)
        assert sorted(back["names"]) == sorted(names) and back["only"], back
        assert back["filter"] == "|".join(names) and back["logRun"] == names[0]
        charts = {c[0]: c[1:] for c in back["charts"]}
        assert charts.pop("_system\u0000cpu/percent") == [True, None, None]
        assert "&sys:cpu/percent=log" in back["hash"] and "sweep/lr%3D3e-4" in back["hash"]
        for i, name in enumerate(names):
            log_y, rank_mode, zoom = charts[name]
            assert log_y == (i % 2 == 0) and rank_mode == "band", (name, charts[name])
            assert abs(zoom[0] - i / 3) < 1e-4 * (i + 0.5 - i / 3) and zoom[1] == i + 0.5, (name, zoom)
        broken = page.evaluate(
            "() => { const v = window.StreamHubUrlState.parse("
            "'#x=sideways&ranks=&smooth=2&step=&zzz=1&c:loss=log,5..2,..,1..&%E0%A4%A=1&loglevel=loud');"
            " return [v.xMode, v.rankMode, v.smoothing, v.compareStep, v.logLevel, [...v.charts]]; }"
        )
        assert broken == [
            "step",
            "lines",
            None,
            None,
            "INFO",
            [["loss", {"logY": True, "rankMode": None, "zoom": None}]],
        ]


def test_solo_keeps_new_runs_hidden_and_all_shows_them(page: Any) -> None:
    with serving() as server:
        for run in ("exp1", "exp2"):
            server.log({"loss": 1.0}, step=0, run=run)
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 2")
        page.locator('#runs-list .run[data-run="exp1"] .run-solo').click()
        wait_for(page, "d.url === '#only=exp1'")
        server.log({"loss": 1.0}, step=0, run="exp3")
        wait_for(
            page, "d.runs.length === 3 && d.runs.filter((r) => r.visible).map((r) => r.run).join() === 'exp1'"
        )
        page.reload()
        wait_for(page, "!d.loading && d.runs.length === 3")
        assert [r["run"] for r in debug(page)["runs"] if r["visible"]] == ["exp1"]
        page.locator("#runs-all").click()
        wait_for(page, "d.runs.every((r) => r.visible) && d.url === ''")


# -- smaller defects (issue 23.7) ------------------------------------------------------------

FOCUSED = """() => {
  const e = document.activeElement;
  const holder = e.closest('[data-run]');
  return [e.className, holder ? holder.dataset.run : null, e.closest('.chart-card')?.dataset.metric || null];
}"""


def test_keyboard_focus_stays_on_the_run_toggled(page: Any) -> None:
    with serving() as server:
        for i in range(20):
            for run in ("exp1", "exp2"):
                server.log({"loss": 1 / (i + 1)}, step=i, run=run)
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 2 && d.charts.loss.draws > 0")
        pressed = "(sel) => document.querySelector(sel).getAttribute('aria-pressed') === "
        toggle = '#runs-list .run[data-run="exp1"] .run-toggle'
        page.locator(toggle).focus()
        page.keyboard.press("Space")
        wait_js(page, pressed + "'false'", toggle)
        assert page.evaluate(FOCUSED) == ["run-toggle", "exp1", None]
        page.keyboard.press("Enter")
        wait_js(page, pressed + "'true'", toggle)
        assert page.evaluate(FOCUSED) == ["run-toggle", "exp1", None]

        # solo, then a new run: the list is rebuilt, the focus stays.
        page.locator('#runs-list .run[data-run="exp2"] .run-solo').focus()
        page.keyboard.press("Enter")
        wait_for(page, "d.runs.find((r) => r.run === 'exp1').visible === false")
        server.log({"loss": 1.0}, step=0, run="exp3")
        wait_js(page, "document.querySelectorAll('#runs-list .run').length === 3")
        assert page.evaluate(FOCUSED) == ["run-solo", "exp2", None]

        # A chart's legend is rebuilt too.
        legend = '.chart-card[data-id="loss"] .chart-legend .item[data-run="exp2"]'
        page.locator(legend).focus()
        page.keyboard.press("Space")
        wait_js(page, pressed + "'false'", legend)
        assert page.evaluate(FOCUSED) == ["item", "exp2", "loss"]


def button_names(snapshot: str) -> list[str]:
    """The names of the buttons in a Playwright accessibility snapshot (YAML:
    ``- button "name"``, quoted when the text differs: ``- 'button "name"': text``)."""
    return re.findall(r"^\s*- '?button \"([^\"]*)\"", snapshot, flags=re.MULTILINE)


def test_every_chart_button_has_a_name_of_its_own(page: Any) -> None:
    """Playwright's accessibility snapshot: no two buttons of the charts share a
    name, and each names its chart's metric (issue 23: 150 buttons, 6 names)."""
    with serving() as server:
        publish_ranks(server, "job", range(50), range(2))
        for i in range(50):
            server.log({"loss": 1 / (i + 1), "train/acc": i / 50, "val/loss": 2 / (i + 1)}, step=i, run="exp")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.metrics.length === 4 && d.charts.loss.draws > 0")
        page.evaluate("window.streamHub.zoom('loss', 10, 20)")  # its reset button shows
        card(page, "val/loss").locator('[data-tool="pin"]').click()  # "unpin"
        wait_for(page, "d.charts['val/loss'].pinned")
        snapshot = page.locator("#charts").aria_snapshot()
        names = button_names(snapshot)
        duplicates = {name for name in names if names.count(name) > 1}
        assert not duplicates, (duplicates, snapshot)
        for metric in ("loss", "acc", "train/acc", "val/loss"):
            tools = button_names(card(page, metric).locator(".chart-tools").aria_snapshot())
            assert tools and all(name.startswith(f"{metric}: ") for name in tools), (metric, tools)
        tools = button_names(card(page, "loss").locator(".chart-tools").aria_snapshot())
        assert set(tools) == {
            f"loss: {name}" for name in ("reset zoom", "ranks", "log y", "CSV", "JSON", "PNG", "pin")
        }, tools
        assert "val/loss: unpin" in names and "loss: job (2 ranks)" in names


def test_a_narrow_screen_has_one_column_and_a_short_top_bar(browser: Any, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        with serving() as server:
            for i in range(50):
                for run in ("exp1", "exp2", "exp3"):
                    server.log({"loss": 1 / (i + 1), "train/acc": i / 50}, step=i, run=run)
            page.goto(server.urls["rest"] + "/")
            wait_connected(page)
            wait_for(page, "!d.loading && d.runs.length === 3 && d.charts.loss.draws > 0")
            screenshot(page, tmp_path / "narrow.png")
            page.screenshot(path=str(tmp_path / "narrow-top.png"))
            page.mouse.wheel(0, 1200)
            wait_js(page, "window.scrollY > 600")
            layout = page.evaluate(
                """() => {
                  const sidebar = document.querySelector('.sidebar');
                  return { position: getComputedStyle(sidebar).position,
                           sidebarBottom: sidebar.getBoundingClientRect().bottom,
                           top: document.querySelector('.topbar').getBoundingClientRect().height,
                           height: innerHeight, width: document.documentElement.scrollWidth,
                           detail: document.querySelector('#status-rest .detail').textContent };
                }"""
            )
            assert layout["position"] == "static", layout
            assert layout["top"] < 0.12 * layout["height"], layout
            assert layout["width"] <= 390, layout  # nothing wider than the screen
            assert layout["detail"], layout  # the pills' words stay for screen readers
    finally:
        context.close()


def test_minus_never_zooms_past_the_data(page: Any) -> None:
    with serving() as server:
        for i in range(100):
            server.log({"loss": noisy(i)}, step=i, run="exp")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.charts.loss.draws > 0 && d.charts.loss.xRange[1] === 99")
        page.evaluate("window.streamHub.zoom('loss', 85, 95)")
        card(page, "loss").locator("canvas").focus()
        seen = []
        for _ in range(5):
            page.keyboard.press("-")
            zoom = debug(page)["charts"]["loss"]["zoom"]
            seen.append(zoom)
            assert zoom is None or 0 <= zoom[0] < zoom[1] <= 99, seen
        assert seen[0] == [79, 99] and seen[-1] is None, seen  # twice as wide, against the last step
        wait_for(page, "d.charts.loss.xRange[0] === 0 && d.charts.loss.xRange[1] === 99")


def test_the_comparison_never_shows_a_step_a_run_has_not_reached(page: Any) -> None:
    with serving() as server:
        for i in range(100):
            server.log({"loss": 1 / (i + 1)}, step=i, run="long")
            if i < 50:
                server.log({"loss": 2 / (i + 1)}, step=i, run="short")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 2")
        page.locator("#compare-step").fill("80")
        page.locator("#compare-step").press("Enter")
        wait_cell(page, "long", "loss", formatted(1 / 81))
        step_cell = page.locator('#latest-table tr.step-row td[data-run="short"]')
        assert step_cell.text_content() == NO_VALUE
        assert "has not reached step 80: its last step is 49" in (step_cell.get_attribute("title") or "")
        assert cell(page, "short", "loss").text_content() == NO_VALUE
        assert page.locator('#latest-table tr.step-row td[data-run="long"]').text_content() == "80"
        # Once it gets there, it shows.
        for i in range(50, 90):
            server.log({"loss": 2 / (i + 1)}, step=i, run="short")
        wait_cell(page, "short", "loss", formatted(2 / 81))
        assert step_cell.text_content() == "80"


def test_json_download_is_the_charts_data(page: Any) -> None:
    with serving() as server:
        for i in range(30):
            server.log({"loss": 1 / (i + 1)}, step=i, run="exp1")
            server.log({"loss": math.nan if i == 7 else 2 / (i + 1)}, step=i, run="exp 2")
            if i % 10 == 0:
                server.log({"acc": i / 30}, step=i, run="exp1")  # events without a loss
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.series['exp 2'].loss.maxStep === 29 && d.charts.loss.draws > 0")
        rest = server.urls["rest"]
        with page.expect_download() as download:
            card(page, "loss").locator('[data-tool="json"]').click()
        assert download.value.suggested_filename == "loss.json"
        data = json.loads(Path(download.value.path()).read_bytes())
        assert data["metric"] == "loss" and sorted(data["runs"]) == ["exp 2", "exp1"]
        for run in ("exp1", "exp 2"):
            params = {"format": "csv", "metric": "loss"}
            text = httpx.get(f"{rest}/api/runs/{run}/export", params=params, timeout=10).text
            rows = [r for r in list(csv.reader(io.StringIO(text)))[1:] if r[4] != ""]
            got = data["runs"][run]
            assert got["steps"] == [int(r[2]) for r in rows] == list(range(30))
            assert got["seqs"] == [int(r[0]) for r in rows]
            assert got["ts"] == [float(r[1]) for r in rows]
            assert got["ranks"] == [None] * 30
            expected = [("NaN" if r[4].lower() == "nan" else float(r[4])) for r in rows]
            assert got["values"] == expected
        assert data["runs"]["exp 2"]["values"][7] == "NaN"


REST_STATES = """() => {
  window.__restStates = [];
  const pill = document.getElementById('status-rest');
  const detail = pill.querySelector('.detail');
  const note = () => window.__restStates.push(`${pill.dataset.state}: ${detail.textContent}`);
  note();
  const all = { attributes: true, childList: true, subtree: true, characterData: true };
  new MutationObserver(note).observe(pill, all);
}"""


def test_a_long_history_draws_the_charts_first_and_rest_is_busy_not_down(page: Any) -> None:
    """A first load of a hub holding a long history (issue 23: 1 M events, 21 s,
    REST "down"): the curves come from the whole-run series, the charts are
    drawn before the log lines are asked for (a page of them: no longer the
    whole unread history encoded first), and the REST pill says the hub is
    busy loading, never down."""
    with serving(history_size=1_000_000, history_bytes=1 << 30, store=False) as server:
        for i in range(1_000_000):
            server.log({"loss": 1 / (i + 1)}, step=i, run="long")
        server.publish("log", {"message": "done", "level": "INFO"}, run="long")
        page.goto(server.urls["rest"] + "/")
        page.evaluate(REST_STATES)
        wait_for(page, "d.logs.length === 1", timeout=60_000)
        timing = page.evaluate(
            """() => ({
              drawn: window.streamHub.debug().stats.firstFullRenderMs,
              history: performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/logs'))
                .map((e) => ({ start: e.startTime, end: e.responseEnd })),
            })"""
        )
        states = page.evaluate("window.__restStates")
        assert timing["history"] and timing["drawn"] is not None, timing
        history = timing["history"][0]
        # The log page no longer encodes the million unread events first (5 s and more before).
        assert history["end"] - history["start"] < 2000, timing
        assert not [s for s in states if s.startswith("down")], states
        if history["end"] - history["start"] > 4000:  # a /health poll (every 2 s) waited over 1.5 s
            assert "busy: loading" in states, (states, timing)
        wait_for(page, "d.transports.rest === 'connected' && d.series.long.loss.maxStep === 999999")


def test_a_spike_is_drawn_at_every_zoom_with_the_resolution_said(page: Any) -> None:
    # Issue 23.1: a run logged far faster than the hub commits (a ring of 200:
    # every commit overloads it) with a spike of 60.0 at one step. The whole
    # curve draws it; zoomed into a stretch the ring no longer holds, the
    # finer data is the curve's buckets, drawn with their envelope, and the
    # chart says what a point stands for; where the ring holds every step,
    # it says nothing. The run list and the Server panel say the curve was sampled.
    spike = 40_000
    with serving(history_size=200, series_points=100) as server:
        for step in range(100_000):
            server.log({"loss": 60.0 if step == spike else 1.0 + (step % 13) / 100}, step=step, run="fast")
        page.goto(server.urls["rest"] + "/")
        wait_for(
            page, "!d.loading && d.series.fast && d.series.fast.loss.maxStep === 99999 && d.charts.loss.draws"
        )
        chart = debug(page)["charts"]["loss"]
        assert chart["yRange"][1] >= 60.0, chart["yRange"]  # the spike is in the curve
        assert chart["resolution"] > 100
        label = card(page, "loss").locator(".chart-resolution")
        assert label.is_visible() and "1 point \u2248" in (label.text_content() or "")

        def ink_top(fraction: float) -> float:
            """How high (0: the plot's top) the ink of the chart reaches around a column."""
            columns = tuple(fraction + k / 1000 for k in range(-3, 4))
            tops = [column[0] for column in pixels(page, "loss", columns)["tops"] if column]
            return min(tops) if tops else 1.0

        x0, x1 = chart["xRange"]
        assert ink_top((spike - x0) / (x1 - x0)) < 0.1  # drawn up to the top of the plot
        assert ink_top((70_000 - x0) / (x1 - x0)) > 0.8  # and nowhere else

        # Zoomed into 2 000 steps around it: the ring has none of them, the
        # buckets it comes from are wider than the view.
        info = page.evaluate("window.streamHub.zoom('loss', 39000, 41000)")
        assert info["zoom"] == [39000, 41000] and info["yRange"][1] >= 60.0
        assert debug(page)["charts"]["loss"]["detailSource"] == "series"
        steps = info["resolution"]
        assert steps > 500
        wait_js(page, "!document.querySelector('.chart-card[data-id=\"loss\"] .chart-resolution').hidden")
        assert (label.text_content() or "") == f"1 point \u2248 {steps:,} steps"
        assert ink_top(0.5) < 0.1  # its bucket's envelope reaches 60 across the view

        # Where the ring holds every step: points are steps, nothing to say.
        info = page.evaluate("window.streamHub.zoom('loss', 99850, 99999)")
        assert debug(page)["charts"]["loss"]["detailSource"] == "ring" and info["resolution"] == 1
        wait_js(page, "document.querySelector('.chart-card[data-id=\"loss\"] .chart-resolution').hidden")

        # The run list and the Server panel: the curve was given a sample (and every extreme).
        badge = page.locator('#runs-list [data-run="fast"] .run-drops')
        wait_js(page, "!document.querySelector('#runs-list [data-run=\"fast\"] .run-drops').hidden")
        assert badge.get_attribute("data-kind") == "sampled" and badge.text_content() == "sampled"
        assert "every extreme kept" in (badge.get_attribute("title") or "")
        curves = page.locator('#server-facts [data-fact="curves"]')
        wait_js(
            page,
            "document.querySelector('#server-facts [data-fact=\"curves\"]').textContent.includes('sampled')",
        )
        assert "events sampled" in (curves.text_content() or "")


def test_drops_are_shown_per_run_and_in_the_server_panel(page: Any) -> None:
    # Issue 23.1: a drop is never invisible. A joined process's forwarder
    # drops reach the host as its batch messages say them
    # (HostChannel._take -> RunIndex.forwarder_dropped, on the loop): the run
    # list counts them on the run, the Server panel in its "dropped".
    with serving() as server:
        for step in range(20):
            server.log({"loss": 1.0 / (step + 1)}, step=step, run="lossy")
            server.log({"loss": 1.0 / (step + 1)}, step=step, run="whole")
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        wait_for(page, "!d.loading && d.runs.length === 2")
        badge = page.locator('#runs-list [data-run="lossy"] .run-drops')
        assert badge.is_hidden()
        loop = server._serving.loop.loop
        loop.call_soon_threadsafe(server.hub.runs.forwarder_dropped, "lossy", "a-joined-process", 1234)
        page.evaluate("window.streamHub.pollRuns()")
        wait_js(page, "!document.querySelector('#runs-list [data-run=\"lossy\"] .run-drops').hidden")
        assert badge.get_attribute("data-kind") == "lost" and badge.text_content() == "1,234 dropped"
        assert "forwarder: 1,234" in (badge.get_attribute("title") or "")
        assert page.locator('#runs-list [data-run="whole"] .run-drops').is_hidden()
        wait_js(
            page,
            "document.querySelector('#server-facts [data-fact=\"dropped\"]').textContent"
            " === '1,234 (forwarder 1,234)'",
        )
