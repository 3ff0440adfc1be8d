"""Retake the README's pictures of the histogram and image panels from a real run.

A small torch model (an MLP on two interleaved half-moons) trains for a few
hundred steps on the CPU, logging through ``stream_hub``'s ``SummaryWriter``
as a TensorBoard user would: the loss, its layers' weights and gradients with
``add_histogram``, and its decision boundary with ``add_figure`` (matplotlib).
Then headless Chromium opens the dashboard and photographs the two panels:
``docs/histograms.png`` and ``docs/images.png``.

    python scripts/media_screenshots.py            # writes docs/*.png
    python scripts/media_screenshots.py --out /tmp # somewhere else

Needs torch, matplotlib (``pip install 'stream_hub[tensorboard]' torch``),
Playwright's Python package and Debian's ``chromium`` (never ``playwright
install``). The hub keeps nothing on disk (``store=False``), and the run's
name is claimed in a temporary data directory unless ``STREAM_HUB_HOME`` says
where.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.scratch import scratch_home

scratch_home("stream_hub-screenshots-")

from stream_hub import StreamConfig, TrainingStreamServer  # noqa: E402
from stream_hub.integrations.tensorboard import SummaryWriter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def moons(torch: Any, n: int) -> tuple[Any, Any]:
    """Two interleaved half-moons with noise: points and their class."""
    generator = torch.Generator().manual_seed(0)
    angle = torch.rand(n, generator=generator) * math.pi
    label = torch.randint(0, 2, (n,), generator=generator)
    x = torch.where(label == 0, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(label == 0, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x, y], 1) + 0.12 * torch.randn(n, 2, generator=generator)
    return points, label


def boundary_figure(torch: Any, plt: Any, model: Any, points: Any, labels: Any, step: int) -> Any:
    """The model's decision boundary over the data, as a matplotlib figure."""
    xs, ys = torch.linspace(-1.6, 2.6, 120), torch.linspace(-1.1, 1.6, 80)
    grid_x, grid_y = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        odds = model(torch.stack([grid_x.ravel(), grid_y.ravel()], 1)).softmax(1)[:, 1].reshape(grid_x.shape)
    figure, axes = plt.subplots(figsize=(4.2, 2.8), dpi=80)
    axes.contourf(grid_x.numpy(), grid_y.numpy(), odds.numpy(), levels=12, cmap="RdBu_r", alpha=0.75)
    shown = points[:200]
    axes.scatter(shown[:, 0], shown[:, 1], c=labels[:200], cmap="RdBu_r", s=7, edgecolors="k", linewidths=0.3)
    axes.set_title(f"decision boundary, step {step}", fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    return figure


def train(server: TrainingStreamServer, steps: int) -> None:
    """The real run: everything goes through SummaryWriter, as in a TensorBoard script."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    torch.manual_seed(0)
    points, labels = moons(torch, 1024)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    with SummaryWriter("runs/moons-mlp", server=server) as writer:
        for step in range(steps):
            loss = torch.nn.functional.cross_entropy(model(points), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            writer.add_scalar("train/loss", loss, step)
            if step % 5 == 0:
                writer.add_histogram("fc1/weight", model[0].weight, step)
                writer.add_histogram("fc2/weight", model[2].weight, step)
                writer.add_histogram("fc1/grad", model[0].weight.grad, step)
            if step % 40 == 0 or step == steps - 1:
                writer.add_figure("boundary", boundary_figure(torch, plt, model, points, labels, step), step)


def photograph(server: TrainingStreamServer, out: Path) -> list[Path]:
    """Open the dashboard in headless Chromium; photograph the two panels."""
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400}, color_scheme="dark")
            page.goto(server.urls["rest"] + "/")
            deadline = time.monotonic() + 30
            ready = (
                "() => { const d = window.streamHub && window.streamHub.debug();"
                " return !!d && d.media.cards.length >= 4 &&"
                " [...document.querySelectorAll('.media-card')].every((c) => c.dataset.steps); }"
            )
            while not page.evaluate(ready):
                if time.monotonic() > deadline:
                    raise SystemExit("the dashboard did not show the media panels within 30 s")
                time.sleep(0.05)
            shown = "() => { const image = document.querySelector('.media-image'); return image.complete; }"
            for kind, name in (("histogram", "histograms.png"), ("image", "images.png")):
                target = page.locator(f'.media-grid[data-kind="{kind}"]')
                if kind == "image":  # one card; its slider set back to an early step, as a user would
                    target = target.locator(".media-card").first
                    target.locator('input[type="range"]').fill("2")
                    page.evaluate("document.activeElement.blur()")
                    while not page.evaluate(shown):
                        time.sleep(0.02)
                # Below the sticky top bar, which would otherwise cover the picture's top.
                target.evaluate(
                    "(el) => window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 120)"
                )
                path = out / name
                target.screenshot(path=str(path))
                written.append(path)
        finally:
            browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="directory for the pictures")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    server = TrainingStreamServer(StreamConfig(sse_port=0, ws_port=0, rest_port=0, store=False))
    server.start()
    try:
        train(server, args.steps)
        for path in photograph(server, args.out):
            print(f"wrote {path}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
