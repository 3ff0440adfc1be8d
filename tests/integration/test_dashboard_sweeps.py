"""Sweeps on the dashboard (issue 23, item 4), in headless Chromium against a
real server: finding runs by name and hyper-parameters, grouping them by a
config key (a group's mean with a min–max band), short names for runs that
share a long prefix, folded legends, and the hyper-parameter table's
"differences only". Fixtures and helpers are ``test_dashboard.py``'s.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from . import test_dashboard as dashboard
from .test_dashboard import PIXELS, button_names, card, debug, pixels, serving, wait_for, wait_js

pytestmark = pytest.mark.browser

# The fixtures of test_dashboard.py (a headless Chromium, a fresh page that fails on a JavaScript error).
browser = dashboard.browser
page = dashboard.page

PREFIX = "sweep-2026-12-07/resnet50-cifar10/"
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def sweep_name(lr: float, seed: int) -> str:
    return f"{PREFIX}lr={lr:g},seed={seed}"


def log_sweep(server: Any, seeds: int = 10, steps: int = 60, lrs: tuple[float, ...] = LRS) -> list[str]:
    """A learning-rate sweep: len(lrs) x seeds runs, each with its config and a loss curve."""
    rng = random.Random(7)
    names = []
    for k, lr in enumerate(lrs):
        for seed in range(seeds):
            run = sweep_name(lr, seed)
            names.append(run)
            config = {"lr": lr, "seed": seed, "batch": 128, "optimizer": "adamw", "group": f"lr{k}"}
            server.publish("config", config, run=run)
            for step in range(steps):
                loss = 1.0 + k + 0.02 * seed + 0.3 * math.exp(-step / 20) + 0.01 * rng.random()
                server.hub.submit("metric", run, step, {"loss": loss, "acc": 0.1 * k + step / 1000})
    return names


SHOWN_RUNS = (
    "() => [...document.querySelectorAll('#runs-list .run')].filter((li) => !li.hidden)"
    ".map((li) => li.dataset.run)"
)


def shown_runs(page: Any, count: int) -> list[str]:
    """The runs the run list shows (the search's), by full name, once there are ``count``."""
    wait_js(page, f"({SHOWN_RUNS})().length === {count}")
    result: list[str] = page.evaluate(SHOWN_RUNS)
    return result


def test_run_search_by_name_config_and_regex_with_errors_in_place(page: Any) -> None:
    with serving() as server:
        names = log_sweep(server, seeds=4, steps=5)
        server.log({"loss": 9.0}, step=0, run="baseline")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 21 && d.charts.loss.draws > 0")
        search = page.get_by_role("searchbox", name="Find")
        assert search.count() == 1

        # key=value matches the hyper-parameter by value (3e-4 is 0.0003), not only as text.
        search.fill("lr=3e-4")
        want = [n for n in names if "lr=0.0003" in n]
        wait_for(page, "d.runs.filter((r) => r.matched).length === 4")
        assert sorted(shown_runs(page, 4)) == sorted(want)
        d = debug(page)
        assert {r["run"] for r in d["runs"] if r["visible"]} == set(want)
        assert {line["key"] for line in d["charts"]["loss"]["lines"]} == set(want)
        assert page.locator("#run-search-count").text_content() == "4 of 21"
        assert page.locator('.chart-card[data-id="loss"] .chart-legend .item').count() == 4

        # Words must all match: a name part and a config value.
        search.fill("seed=1 adamw")
        wait_for(page, "d.runs.filter((r) => r.matched).length === 5")
        assert all(n.endswith("seed=1") for n in shown_runs(page, 5))

        # A regular expression over names and key=value.
        search.fill("/^base/")
        wait_for(page, "d.runs.filter((r) => r.matched).map((r) => r.run).join() === 'baseline'")
        search.fill("/lr=0\\.01,seed=[23]$/")
        wait_for(page, "d.runs.filter((r) => r.matched).length === 2")
        search.fill("/group=lr[04]/")
        wait_for(page, "d.runs.filter((r) => r.matched).length === 8")

        # A regex that does not compile: said in place, nothing filtered, the page fine.
        search.fill("/sweep(/")
        error = page.locator("#run-search-error")
        error.wait_for(state="visible")
        assert "regular expression" in (error.text_content() or "")
        assert search.get_attribute("aria-invalid") == "true"
        wait_for(page, "d.runs.every((r) => r.matched) && d.sweeps.error")
        assert page.get_by_role("alert").filter(has_text="regular expression").count() == 1
        search.fill("/sweep.*seed=3/")
        wait_for(page, "d.runs.filter((r) => r.matched).length === 5 && !d.sweeps.error")
        assert error.is_hidden() and search.get_attribute("aria-invalid") is None

        # Nothing found: said; a run that appears and matches shows at once.
        search.fill("nothing-like-this")
        wait_js(page, "!document.getElementById('runs-empty').hidden")
        assert page.locator("#runs-empty").text_content() == "No run matches the search."
        server.log({"loss": 1.0}, step=0, run="nothing-like-this-run")
        wait_for(page, "d.runs.filter((r) => r.matched).map((r) => r.run).join() === 'nothing-like-this-run'")
        wait_for(page, "d.charts.loss.lines.length === 1")
        search.fill("")
        wait_for(page, "d.runs.every((r) => r.matched && r.visible) && d.charts.loss.lines.length === 22")


def test_group_by_a_config_key_draws_each_groups_mean_and_band(page: Any) -> None:
    with serving() as server:
        log_sweep(server, seeds=10, steps=80)
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 50 && d.charts.loss.draws > 0")
        wait_for(page, "d.charts.loss.lines.length === 50")
        select = page.get_by_role("combobox", name="Group by")
        options = select.locator("option").all_text_contents()
        # "group" first (as wandb's), then the keys that differ, then the rest.
        assert options[:4] == ["no grouping", "group", "lr", "seed"], options

        select.select_option("lr")
        wait_for(page, "d.sweeps.group === 'lr' && d.charts.loss.lines.length === 5")
        lines = debug(page)["charts"]["loss"]["lines"]
        assert all(line["kind"] == "band" for line in lines), lines
        legend = card(page, "loss").locator(".chart-legend .item")
        assert legend.all_text_contents() == [f"lr={lr:g} (10 runs)" for lr in LRS]
        # Each group's band spans its seeds (0.02 apart each: 0.18 from the lowest to the
        # highest), the groups 1.0 apart: five filled runs down a column, none a thin line.
        wait_for(page, "d.charts.loss.draws > 0 && d.charts.loss.lines.length === 5")
        wait_js(page, f"({PIXELS})(['loss', [0.9]]).runs[0].length === 5")
        bands = pixels(page, "loss", (0.9,))["runs"][0]
        assert min(b - a for a, b in bands) >= 3, bands
        # Hovering says the group's mean and its range.
        box = card(page, "loss").locator("canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5)
        tooltip = page.locator("#tooltip")
        tooltip.wait_for(state="visible")
        assert "lr=0.001 (mean of 10)" in (tooltip.text_content() or "")
        page.mouse.move(0, 0)

        # The run list is grouped too, each heading with its count.
        headings = page.locator("#runs-list .run-group").all_text_contents()
        assert headings == [f"lr={lr:g} · 10" for lr in LRS], headings
        # A heading folds its group's runs in the list; the charts keep drawing them.
        fold = page.get_by_role("button", name="lr=0.0001 · 10")
        assert fold.get_attribute("aria-expanded") == "true"
        fold.click()
        listed = "[...document.querySelectorAll('#runs-list .run')].filter((li) => li.offsetParent).length"
        wait_js(page, f"{listed} === 40")
        assert fold.get_attribute("aria-expanded") == "false"
        assert debug(page)["charts"]["loss"]["lines"] == lines and all(
            r["visible"] for r in debug(page)["runs"]
        )
        fold.focus()
        page.keyboard.press("Enter")
        wait_js(page, f"{listed} === 50")

        # A group's legend button hides (and shows) its runs everywhere; keyboard reachable.
        button = card(page, "loss").locator('.chart-legend .item[data-group="0.001"]')
        assert button.get_attribute("aria-label") == "loss: lr=0.001 (10 runs: mean, min\u2013max band)"
        button.focus()
        page.keyboard.press("Enter")
        wait_for(page, "d.runs.filter((r) => !r.visible).length === 10")
        wait_js(page, f"({PIXELS})(['loss', [0.9]]).runs[0].length === 4")
        button = card(page, "loss").locator('.chart-legend .item[data-group="0.001"]')
        assert button.get_attribute("aria-pressed") == "false"
        assert page.evaluate("document.activeElement.dataset.group") == "0.001"
        page.keyboard.press("Enter")
        wait_for(page, "d.runs.every((r) => r.visible)")

        # Grouping follows the search: only the groups of the runs found.
        page.get_by_role("searchbox", name="Find").fill("seed=0")
        wait_for(
            page, "d.charts.loss.lines.length === 5 && d.charts.loss.lines.every((l) => l.kind === 'line')"
        )
        page.get_by_role("searchbox", name="Find").fill("")
        select.select_option("")
        wait_for(page, "d.sweeps.group === '' && d.charts.loss.lines.length === 50")


def test_search_grouping_and_params_diff_are_in_the_url(page: Any, browser: Any) -> None:
    with serving() as server:
        log_sweep(server, seeds=3, steps=10)
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 15 && d.charts.loss.draws > 0")
        page.get_by_role("searchbox", name="Find").fill("/seed=[01]$/")
        page.get_by_role("combobox", name="Group by").select_option("lr")
        page.get_by_role("button", name="differences only").click()
        wait_for(page, "d.url.includes('group=lr') && d.url.includes('params=diff')")
        fragment = page.url.split("#", 1)[1]
        for part in ("search=/seed%3D%5B01%5D%24/", "group=lr", "params=diff"):
            assert part in fragment.split("&"), (part, fragment)
        page.reload()
        wait_for(page, "!d.loading && d.runs.length === 15 && d.charts.loss.lines.length === 5")
        assert page.get_by_role("searchbox", name="Find").input_value() == "/seed=[01]$/"
        assert page.get_by_role("combobox", name="Group by").input_value() == "lr"
        assert debug(page)["runs"] and sum(r["matched"] for r in debug(page)["runs"]) == 10

        # A copied link in a fresh browser.
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
        other = context.new_page()
        try:
            other.goto(page.url)
            wait_for(other, "!d.loading && d.runs.length === 15 && d.charts.loss.lines.length === 5")
            d = debug(other)
            assert d["sweeps"]["search"] == "/seed=[01]$/" and d["sweeps"]["group"] == "lr"
            assert d["sweeps"]["paramsDiff"]
            assert (
                other.get_by_role("button", name="differences only").get_attribute("aria-pressed") == "true"
            )
        finally:
            context.close()
        parsed = page.evaluate(
            "() => { const v = window.StreamHubUrlState.parse('#search=a%26b%3Dc&group=lr%2Fx&params=no');"
            " return [v.runSearch, v.groupBy, v.paramsDiff]; }"
        )
        assert parsed == ["a&b=c", "lr/x", False]


def test_fifty_names_sharing_a_long_prefix_are_told_apart(page: Any) -> None:
    with serving() as server:
        names = log_sweep(server, seeds=10, steps=3)
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 50 && d.charts.loss.draws > 0")
        wait_for(page, "d.sweeps.prefix !== ''")
        assert debug(page)["sweeps"]["prefix"] == PREFIX
        shown = page.evaluate(
            "() => [...document.querySelectorAll('#runs-list .run-name')].map((n) =>"
            " [n.textContent, n.title,"
            "  n.scrollWidth <= n.clientWidth + 1 && n.scrollHeight <= n.clientHeight + 1])"
        )
        texts = [t for t, _, _ in shown]
        assert len(set(texts)) == 50, texts
        assert all(t.startswith("\u2026lr=") for t in texts), texts
        assert sorted(title for _, title, _ in shown) == sorted(names)
        assert all(fits for _, _, fits in shown), [t for t, _, fits in shown if not fits]
        assert page.locator("#runs-prefix").text_content() == f"every name starts with {PREFIX}\u2026"
        # Heard in full: the run's button says the whole name.
        first = page.locator("#runs-list .run-toggle").first
        assert PREFIX in (first.text_content() or "")
        # The legend, the comparison table and the hyper-parameters use the short name, the title the whole.
        legend = card(page, "loss").locator(".chart-legend .item").first
        assert (legend.text_content() or "").startswith("\u2026lr=")
        assert PREFIX in (legend.get_attribute("aria-label") or "")
        heads = page.locator("#latest-table thead th[data-run]")
        assert heads.count() == 50 and (heads.first.text_content() or "").startswith("\u2026")
        assert heads.first.get_attribute("title") in names
        # A run whose name breaks the prefix: nothing is folded any more.
        server.log({"loss": 1.0}, step=0, run="baseline")
        wait_for(page, "d.runs.length === 51 && d.sweeps.prefix === ''")
        wait_js(page, "document.querySelector('#runs-list .run-name').textContent.startsWith('sweep-')")


LOSS_LEGEND_ITEMS = "document.querySelectorAll('.chart-card[data-id=\"loss\"] .chart-legend .item')"


def test_a_legend_of_fifty_runs_is_folded_and_opens_with_the_keyboard(page: Any) -> None:
    with serving() as server:
        log_sweep(server, seeds=10, steps=3)
        server.log({"other": 1.0}, step=0, run="solo-run")
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 51 && d.charts.loss.draws > 0")
        legend = card(page, "loss").locator(".chart-legend")
        height = legend.bounding_box()["height"]
        assert height < 40, height  # one line, not ~300 px
        assert legend.locator(".item").count() == 4
        more = legend.get_by_role("button", name="loss: show all 50 in the legend")
        assert more.text_content() == "+46 more" and more.get_attribute("aria-expanded") == "false"
        # A short legend is not folded.
        assert card(page, "other").locator(".chart-legend .legend-more").count() == 0

        more.focus()
        page.keyboard.press("Enter")
        wait_js(page, f"{LOSS_LEGEND_ITEMS}.length === 50")
        fewer = legend.locator(".legend-more")
        assert fewer.get_attribute("aria-expanded") == "true" and fewer.text_content() == "fewer"
        assert page.evaluate("document.activeElement.classList.contains('legend-more')")
        height = legend.bounding_box()["height"]
        assert height <= 120, height  # open, it scrolls past a few lines
        # Open it stays through a rebuild (a run hidden), and folds again.
        page.locator("#runs-list .run-toggle").first.click()
        wait_for(page, "d.runs.filter((r) => !r.visible).length === 1")
        wait_js(page, f"{LOSS_LEGEND_ITEMS}.length === 50")
        fewer.click()
        wait_js(page, f"{LOSS_LEGEND_ITEMS}.length === 4")
        names = button_names(page.locator('.chart-card[data-id="loss"]').aria_snapshot())
        assert "loss: show all 50 in the legend" in names


def test_differences_only_keeps_the_keys_that_differ(page: Any) -> None:
    with serving() as server:
        log_sweep(server, seeds=2, steps=3, lrs=(1e-3, 1e-2))
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading && d.runs.length === 4")
        head = page.locator("#params-table thead th[data-key]")
        wait_js(page, "document.querySelectorAll('#params-table thead th[data-key]').length === 5")
        assert head.all_text_contents() == ["batch", "group", "lr", "optimizer", "seed"]
        toggle = page.get_by_role("button", name="differences only")
        assert toggle.get_attribute("aria-pressed") == "false"
        toggle.focus()
        page.keyboard.press("Enter")
        wait_js(page, "document.querySelectorAll('#params-table thead th[data-key]').length === 3")
        assert head.all_text_contents() == ["group", "lr", "seed"]
        assert toggle.get_attribute("aria-pressed") == "true"
        assert page.locator("#params-caption").text_content() == "3 of 5 keys differ"
        cells = page.locator("#params-table tbody tr").first.locator("td").all_text_contents()
        assert cells == ["lr0", "0.001", "0"], cells
        page.keyboard.press("Enter")
        wait_js(page, "document.querySelectorAll('#params-table thead th[data-key]').length === 5")


PURE = """() => {
  const S = window.StreamHubSweeps;
  const run = (name, config) => ({ name, config });
  const found = (text, runs) => runs.filter(S.matcher(text).test).map((r) => r.name);
  const runs = [
    run("a/lr=1e-3", { lr: 0.001, opt: "SGD" }),
    run("b", { lr: "0.001", opt: "adam" }),
    run("c", { lr: 3e-4, tags: ["x", "y"] }),
    run("d", {}),
  ];
  const g = S.matcher("/a/g");
  return {
    byValue: found("lr=1e-3", runs),
    caseless: found("OPT=sgd", runs),
    words: found("lr 0.0003", runs),
    json: found('tags=["x","y"]', runs),
    regex: found("/^(b|c)$/", runs),
    sticky: [g.test(runs[0]), g.test(runs[0]), g.test(runs[0])],
    broken: [S.matcher("/(/").error !== null, S.matcher("/(/").test(runs[3]), S.matcher("//").error !== null],
    blank: [S.matcher("  ").active, S.matcher("/").active],
    groups: S.groupRuns(
      [run("x", { lr: 0.001 }), run("y", {}), run("z", { lr: 0.0003 }), run("w", { lr: 1e-4 })], "lr",
    ).map(([label, members]) => [label, members.map((r) => r.name)]),
    keys: S.groupKeys(
      [run("x", { seed: 1, group: "g", lr: 1, batch: 8 }), run("y", { seed: 2, lr: 2, batch: 8 })],
    ),
    one: S.compressNames(["sweep/one/a"]).prefix,
    short: S.compressNames(["run-a", "run-b"]).prefix,
    date: S.compressNames(["exp-2026-12-07-a", "exp-2026-12-08-b"]).prefix,
    whole: S.compressNames(["project/x", "project/"]).prefix,
    folded: [...S.compressNames(["project/alpha/1", "project/alpha/22", "project/beta"]).short.values()],
  };
}"""


def test_the_search_groups_and_short_names_on_plain_values(page: Any) -> None:
    """sweeps.js's pure functions, on their own."""
    with serving() as server:
        page.goto(server.urls["rest"] + "/")
        wait_for(page, "!d.loading")
        r = page.evaluate(PURE)
        assert r["byValue"] == ["a/lr=1e-3", "b"]  # 0.001 by value, "0.001" as text, the name's text
        assert r["caseless"] == ["a/lr=1e-3"]
        assert r["words"] == ["c"]
        assert r["json"] == ["c"]
        assert r["regex"] == ["b", "c"]
        assert r["sticky"] == [True, True, True]  # a "g" flag keeps no position between runs
        assert r["broken"] == [True, True, True]  # said, and filtering nothing
        assert r["blank"] == [False, True]
        assert r["groups"] == [["0.0001", ["w"]], ["0.0003", ["z"]], ["0.001", ["x"]], ["\u2013", ["y"]]]
        assert r["keys"] == ["group", "lr", "seed", "batch"]
        assert r["one"] == "" and r["short"] == "" and r["date"] == "" and r["whole"] == ""
        assert r["folded"] == ["\u2026alpha/1", "\u2026alpha/22", "\u2026beta"]
