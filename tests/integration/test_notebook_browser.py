"""The inline dashboard in a real browser (headless Chromium): the HTML a
notebook shows for ``stream_hub.show()`` — put in a page served from
``localhost`` as Jupyter serves its own — frames the live dashboard, which
shows the notebook's run and not the others (its URL state)."""

from __future__ import annotations

import json
from typing import Any

from stream_hub import show

from .test_dashboard import browser, page, page_at, serving, wait_js

__all__ = ["browser", "page"]  # the fixtures this module uses

LATEST = "[...document.querySelectorAll('#latest-table td')]"


def test_the_inline_frame_shows_the_live_run_only(page: Any) -> None:
    with serving() as server:
        frame = show("mine", server=server)  # outside IPython: the object, as a notebook renders it
        assert frame is not None
        with page_at("127.0.0.1", f"<!doctype html><title>notebook</title>{frame._repr_html_()}") as notebook:
            page.goto(notebook.replace("127.0.0.1", "localhost") + "notebooks/exp.ipynb")
            dashboard = page.frames[1]
            assert dashboard.url == frame.url
            server.log({"loss": 0.5}, step=1, run="other")
            server.log({"loss": 0.25}, step=1, run="mine")
            wait_js(
                dashboard, f"{LATEST}.some((td) => td.dataset.run === 'mine' && td.textContent === '0.25')"
            )
            server.log({"loss": 0.125}, step=2, run="mine")  # live: the frame follows
            wait_js(
                dashboard, f"{LATEST}.some((td) => td.dataset.run === 'mine' && td.textContent === '0.125')"
            )
            hidden = "[...document.querySelectorAll('#latest-table .hidden-run')].map((e) => e.textContent)"
            wait_js(dashboard, f"{hidden}.some((text) => text.includes('other'))")  # listed, not drawn
            assert not [text for text in dashboard.evaluate(hidden) if "mine" in text]
            assert dashboard.evaluate("window.streamHub.debug().selection")
            assert page.locator("a[target=_blank]").get_attribute("href") == frame.url


def test_a_run_name_of_any_characters_is_framed_as_it_is(page: Any) -> None:
    """A notebook's run is named after the notebook, whatever its name: a
    name with ``#``, ``&``, ``=``, ``,``, quotes, markup and unicode frames
    that run (no markup of it in the notebook's page) and only it."""
    name = "nb #1 & a=b, \"q\" 'r' <b>x</b> é/λ 😀"
    with serving() as server:
        frame = show(name, server=server)
        assert frame is not None
        with page_at("127.0.0.1", f"<!doctype html><title>notebook</title>{frame._repr_html_()}") as notebook:
            page.goto(notebook.replace("127.0.0.1", "localhost") + "notebooks/exp.ipynb")
            assert page.evaluate("document.querySelectorAll('b, script').length") == 0
            assert page.evaluate("document.querySelectorAll('iframe').length") == 1
            dashboard = page.frames[1]
            server.log({"loss": 0.5}, step=1, run="nb #1")  # the name cut at '#' or '&' is another run
            server.log({"loss": 0.25}, step=1, run=name)
            quoted = json.dumps(name)
            wait_js(
                dashboard, f"{LATEST}.some((td) => td.dataset.run === {quoted} && td.textContent === '0.25')"
            )
            hidden = "[...document.querySelectorAll('#latest-table .hidden-run')].map((e) => e.textContent)"
            wait_js(dashboard, f"{hidden}.some((text) => text.includes('nb #1') && !text.includes('<b>'))")
            assert dashboard.evaluate("window.streamHub.debug().selection") == {"only": True, "names": [name]}
