"""The dashboard's histogram and image panels (``dashboard/media.js``) in
headless Chromium against a real server: a run's histograms as a
distribution over its steps, an image per step behind a slider, live and
loaded from history. The browser, page and helpers are
``test_dashboard.py``'s.
"""

from __future__ import annotations

import base64
import itertools
import math
import struct
import zlib
from typing import Any

import pytest

from . import test_dashboard as dashboard
from .test_dashboard import serving, wait_connected, wait_for, wait_js

# test_dashboard.py's fixtures: one Chromium per module, a fresh page per test.
browser = dashboard.browser
page = dashboard.page

pytestmark = pytest.mark.browser


def histogram(step: int) -> dict[str, Any]:
    """A normal-ish histogram whose centre moves up with the step and which narrows."""
    centre, width = step * 0.1, 2.0 / (1 + step * 0.05)
    edges = [centre - 3 * width + k * (6 * width / 30) for k in range(31)]
    counts = [
        round(1000 * math.exp(-(((a + b) / 2 - centre) ** 2) / (2 * (width / 2) ** 2)))
        for a, b in itertools.pairwise(edges)
    ]
    return {"tag": "layer1/weight", "edges": edges, "counts": counts}


def png(width: int, height: int, shade: int) -> str:
    """A grey PNG of ``width`` x ``height`` in base64."""
    rows = b"".join(b"\0" + bytes([shade]) * width for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack("!I", len(body)) + kind + body + struct.pack("!I", zlib.crc32(kind + body))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return base64.b64encode(data).decode()


def image(step: int) -> dict[str, Any]:
    # Each step its own size, so the image shown tells which step it is.
    return {
        "tag": "samples",
        "mime": "image/png",
        "width": 10 + step,
        "height": 8,
        "b64": png(10 + step, 8, 20 * step),
    }


# The image element shows a decoded picture this wide (the step's own width).
SHOWS_WIDTH = (
    "(w) => { const i = document.querySelector('.media-image'); return i.complete && i.naturalWidth === w; }"
)
MEDIA = "d.media.cards.find((c) => c.kind === arg[0] && c.run === arg[1])"


def painted(page: Any, run: str) -> dict[str, int]:
    """Pixels of the run's distribution canvas: drawn at all, and in the run's colour."""
    script = """(run) => {
        const card = [...document.querySelectorAll('.media-card[data-kind="histogram"]')]
          .find((c) => c.dataset.run === run);
        const canvas = card.querySelector('canvas');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const colour = window.streamHub.debug().runs.find((r) => r.run === run).color;
        const want = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
        let ink = 0, strong = 0, columns = new Set();
        for (let i = 0; i < data.length; i += 4) {
          if (data[i + 3] === 0) continue;
          ink++;
          if (data[i + 3] > 200 && want.every((c, k) => Math.abs(data[i + k] - c) < 40)) strong++;
          if (data[i + 3] > 20) columns.add((i / 4) % canvas.width);
        }
        return { ink, strong, columns: columns.size, width: canvas.width };
    }"""
    result: dict[str, int] = page.evaluate(script, run)
    return result


def test_histograms_are_drawn_as_a_distribution_over_the_runs_steps(page: Any) -> None:
    with serving() as server:
        for step in range(0, 40, 2):  # in history before the page opens
            server.publish("histogram", histogram(step), step=step, run="exp1")
        server.log({"loss": 1.0}, step=0, run="exp1")
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        wait_for(page, f"{MEDIA} && {MEDIA}.steps.length === 20", ["histogram", "exp1"])
        for step in range(40, 50, 2):  # live
            server.publish("histogram", histogram(step), step=step, run="exp1")
        wait_for(page, f"{MEDIA}.steps.length === 25", ["histogram", "exp1"])
        described = page.evaluate("window.streamHub.debug().media.cards")[0]
        assert described["steps"] == list(range(0, 50, 2)) and described["tag"] == "layer1/weight"
        card = page.locator('.media-card[data-kind="histogram"][data-run="exp1"]')
        wait_js(
            page,
            "() => document.querySelector('.media-card[data-kind=\"histogram\"]').dataset.steps === '25'",
        )
        caption = card.locator(".media-caption").text_content() or ""
        assert caption.startswith("25 steps (0\u201348)"), caption
        drawn = painted(page, "exp1")
        # Bands across the plot's width (not one column), the median in the run's colour.
        assert drawn["columns"] > drawn["width"] * 0.6 and drawn["strong"] > 100, drawn
        # Hiding the run hides its card; showing it draws it again.
        page.evaluate("window.streamHub.setRunVisible('exp1', false)")
        wait_js(page, "() => document.querySelector('.media-card[data-kind=\"histogram\"]').hidden")
        page.evaluate("window.streamHub.setRunVisible('exp1', true)")
        wait_js(page, "() => !document.querySelector('.media-card[data-kind=\"histogram\"]').hidden")


def test_the_image_panels_slider_shows_the_image_of_each_step(page: Any) -> None:
    with serving() as server:
        for step in range(3):
            server.publish("image", image(step), step=step, run="exp1")
        page.goto(server.urls["rest"] + "/")
        wait_connected(page)
        wait_for(page, f"{MEDIA} && {MEDIA}.steps.length === 3", ["image", "exp1"])
        card = page.locator('.media-card[data-kind="image"][data-run="exp1"]')
        img = card.locator("img")

        def shown() -> tuple[str | None, int]:
            info = page.evaluate(
                "() => { const c = document.querySelector('.media-card[data-kind=\"image\"]');"
                " const i = c.querySelector('img');"
                " return [c.dataset.step, i.complete ? i.naturalWidth : -1]; }"
            )
            return info[0], int(info[1])

        wait_js(page, SHOWS_WIDTH, 12)
        assert shown() == ("2", 12)  # the latest step first
        slider = card.locator('input[type="range"]')
        slider.fill("0")
        wait_js(page, SHOWS_WIDTH, 10)
        assert shown() == ("0", 10) and "0 (1 of 3)" in (card.locator(".media-caption").text_content() or "")
        assert img.get_attribute("src", timeout=1000).startswith("data:image/png;base64,")  # type: ignore[union-attr]
        # A live image does not move a slider the user set back...
        server.publish("image", image(3), step=3, run="exp1")
        wait_for(page, f"{MEDIA}.steps.length === 4", ["image", "exp1"])
        assert shown() == ("0", 10)
        # ...and the keyboard steps through them.
        slider.focus()
        page.keyboard.press("End")
        wait_js(page, SHOWS_WIDTH, 13)
        assert shown() == ("3", 13)
        # At the newest, it follows new ones.
        server.publish("image", image(4), step=4, run="exp1")
        wait_js(page, SHOWS_WIDTH, 14)
        assert shown() == ("4", 14)
