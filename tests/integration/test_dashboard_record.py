"""The dashboard reads the run's record (issue 23, item 2), in headless
Chromium against real servers: a chart's CSV and JSON hold every row of a
run whose events left the memory ring, the log panel shows a crash
traceback after a reload however many events came after it and pages back
through the run's older lines, and a hub that keeps no store says that only
its last N events are in memory. Fixtures and helpers: ``test_dashboard``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from ..processes import PYTHON, Spawner, child_env, run
from . import test_dashboard as dashboard
from .test_dashboard import card, serving, wait_for, wait_js

pytestmark = pytest.mark.browser

# test_dashboard's fixtures: a headless Chromium per module, a fresh page per test.
browser = dashboard.browser
page = dashboard.page

OTHER_EVENTS = 12_000  # more than the ring's 10 000
TRACEBACK = 'Traceback (most recent call last):\n  File "train.py", line 3\nRuntimeError: CUDA OOM'


def test_a_charts_csv_and_json_hold_every_row_after_the_ring_moved_on(page: Any) -> None:
    with serving() as server:
        for step in range(100):
            server.log({"loss": 1.0 / (step + 1)}, step=step, run="first")
        for step in range(OTHER_EVENTS):
            server.log({"x": float(step)}, step=step, run="second")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.charts.loss && d.charts.loss.draws > 0")
        with page.expect_download() as download:
            card(page, "loss").locator('[data-tool="csv"]').click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_bytes().decode())))
        assert [int(r["step"]) for r in rows] == list(range(100))
        with page.expect_download() as download:
            card(page, "loss").locator('[data-tool="json"]').click()
        data = json.loads(Path(download.value.path()).read_bytes())
        assert data["runs"]["first"]["steps"] == list(range(100))
        assert data["coverage"] == {"first": "record"} and "window_events" not in data
        assert page.locator("#notice").is_hidden()


def test_the_log_panel_shows_a_crash_traceback_after_a_reload_and_pages_back(page: Any) -> None:
    with serving() as server:
        for i in range(1500):
            server.publish("log", {"message": f"epoch {i}", "level": "INFO"}, run="crashed")
        server.publish("log", {"message": TRACEBACK, "level": "ERROR", "logger": "train"}, run="crashed")
        server.log({"loss": 1.0}, step=0, run="crashed")
        for step in range(OTHER_EVENTS):
            server.log({"x": float(step)}, step=step, run="other")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.logs.length === 1000", timeout=60_000)
        error = page.locator('#log-list .log-line[data-level="ERROR"] .log-message')
        assert error.text_content() == TRACEBACK
        page.reload()
        wait_for(page, "!d.loading && d.logs[d.logs.length - 1].startsWith('Traceback')", timeout=60_000)
        assert page.locator("#log-window").is_hidden()  # the record is whole: nothing to warn about
        # The older lines, a page at a time, each once, in order.
        earlier = page.locator("#log-earlier")
        assert earlier.is_visible()
        earlier.click()
        wait_for(page, "d.logs.length === 1501", timeout=60_000)
        assert earlier.is_hidden()  # the start was reached
        logs = page.evaluate("window.streamHub.debug().logs")
        assert logs == [f"epoch {i}" for i in range(1500)] + [TRACEBACK]
        # One run chosen in the filter: its lines (here all of them already).
        page.select_option("#log-run", "crashed")
        wait_for(page, "d.logs.length === 1501")


def test_without_a_store_the_page_says_only_the_last_events_are_in_memory(page: Any) -> None:
    with serving(store=False, history_size=5000) as server:
        for step in range(100):
            server.log({"loss": float(step)}, step=step, run="first")
        server.publish("log", {"message": "started", "level": "INFO"}, run="first")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.logs.length === 1 && d.charts.loss.draws > 0")
        note = page.locator("#log-window")
        wait_js(page, "!document.getElementById('log-window').hidden")
        assert "Only the last 5,000 events are in memory" in (note.text_content() or "")
        with page.expect_download() as download:
            card(page, "loss").locator('[data-tool="json"]').click()
        data = json.loads(Path(download.value.path()).read_bytes())
        assert data["coverage"] == {"first": "window"} and data["window_events"] == 5000
        wait_js(page, "!document.getElementById('notice').hidden")
        assert "only the last 5,000 events are in memory" in (page.locator("#notice").text_content() or "")


PAST_RUNS = """
from stream_hub import get_stream_server, release_stream_server
server = get_stream_server()
for r in range(45):
    name = f"past-{r:03d}"
    for step in range(20):
        server.log({"loss": 1.0 / (step + 1) + r}, step=step, run=name)
    server.publish("run_end", {"status": "finished"}, run=name)
# The newest: an alert (a NaN loss) and values its curves left out (STREAM_HUB_MAX_SERIES=46).
server.log({"loss": 1.0, "extra": 1.0}, step=0, run="past-bad")
server.log({"loss": float("nan"), "extra": 2.0}, step=1, run="past-bad")
server.publish("run_end", {"status": "failed"}, run="past-bad")
release_stream_server()
print("done", flush=True)
"""


def test_serve_lists_a_page_of_past_runs_and_loads_curves_only_for_those_shown(
    page: Any, tmp_path: Path, spawn: Spawner
) -> None:
    home = tmp_path / "home"
    env = child_env(STREAM_HUB_HOME=str(home))
    result = run(["-c", PAST_RUNS], prefix=PYTHON, env={**env, "STREAM_HUB_MAX_SERIES": "46"}, timeout=120)
    assert "done" in result.stdout, result.stderr
    served = spawn.serve(env=env)
    asked: list[str] = []

    def note(request: Any) -> None:
        if "/api/runs/" in request.url and "/series" in request.url:
            asked.append(request.url.split("/api/runs/")[1].split("/")[0])

    page.on("request", note)
    page.goto(served.rest + "/")
    # The newest page of past runs, and their curves: not all 45.
    wait_for(page, "!d.loading && d.runs.length === 20 && d.runs.every((r) => r.past)")
    wait_js(page, "document.getElementById('past-runs-count').textContent.includes('46 past runs')")
    assert sorted(asked) == sorted(["past-bad"] + [f"past-{r:03d}" for r in range(26, 45)])
    assert page.locator("#past-runs-count").text_content() == "20 listed · 46 past runs"
    # A past run's drops and alerts, from its persisted summary.
    bad = page.locator('#runs-list .run[data-run="past-bad"]')
    assert bad.locator(".run-drops").text_content() == "2 dropped"
    assert bad.locator(".run-alerts").is_visible()
    # Its log lines (the hub's alerts) from its files, when it is chosen in the log's filter.
    page.select_option("#log-run", "past-bad")
    wait_for(
        page,
        "d.logs.length === 2 && d.logs[0].startsWith('loss is NaN') && d.logs[1].startsWith('run failed')",
    )
    # Hidden runs listed next get no curves until they are shown.
    page.locator("#runs-none").click()
    page.locator("#past-runs-more").click()
    wait_for(page, "d.runs.length === 40")
    assert len(asked) == 20
    page.locator('#runs-list .run[data-run="past-010"] .run-toggle').click()
    wait_for(
        page, "d.series['past-010'] && d.series['past-010'].loss && d.series['past-010'].loss.maxStep === 19"
    )
    assert asked[20:] == ["past-010"]
    # A past run found by name, though not listed yet; the list's end hides "more".
    page.fill("#past-runs-match", "past-000")
    page.press("#past-runs-match", "Enter")
    wait_for(page, "d.runs.some((r) => r.run === 'past-000')")
    wait_js(page, "document.getElementById('past-runs-more').hidden")
    assert len(asked) == 21  # found hidden (the selection shows none): no curves yet
    # A shared link naming a past run the first page does not list: found by name, shown with its curves.
    page.goto(served.rest + "/#only=past-001")
    page.reload()
    wait_for(page, "!d.loading && d.series['past-001'] && d.series['past-001'].loss.maxStep === 19")
    assert [r["run"] for r in dashboard.debug(page)["runs"] if r["visible"]] == ["past-001"]
