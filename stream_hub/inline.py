"""The live dashboard inside a notebook's output: an ``<iframe>`` of the
hub's page, filtered to one run through the page's URL state
(``dashboard/urlstate.js``: ``#only=<run>&logrun=<run>``).

Plain HTML, no script: Jupyter's (Notebook, Lab) and VS Code's renderers
show it as it is, and a saved notebook keeps a frame that shows the hub
again while it runs. The dashboard lets those pages frame it (its
``frame-ancestors``: ``localhost``/``127.0.0.1`` on any port, VS Code's
webviews, ``cors_origins``; ``transports/headers.py``). The frame points at
the address the hub serves on: a notebook whose browser is on another
machine (JupyterHub, a remote kernel) needs that address reachable, e.g.
a forwarded port.
"""

from __future__ import annotations

import html
from urllib.parse import quote

__all__ = ["DEFAULT_HEIGHT", "InlineDashboard", "dashboard_url"]

DEFAULT_HEIGHT = 600


def dashboard_url(rest_url: str, run: str | None = None) -> str:
    """The dashboard's address on the REST port ``rest_url`` (``http://host:port``),
    showing only ``run`` (and its log lines) when given."""
    url = rest_url.rstrip("/") + "/"
    if run:
        name = quote(run, safe="/:@")  # the page's own encoding (urlstate.js)
        url += f"#only={name}&logrun={name}"
    return url


class InlineDashboard:
    """What a notebook shows for the dashboard: ``_repr_html_`` is the frame.

    Attributes:
        url: the dashboard's address (filtered to the run).
        run: the run it shows (None: every run).
        height: the frame's height in CSS pixels.
    """

    def __init__(self, url: str, run: str | None = None, height: int = DEFAULT_HEIGHT) -> None:
        if isinstance(height, bool) or not isinstance(height, int) or height < 100:
            raise ValueError(f"height must be an int of at least 100 (pixels), got {height!r}")
        self.url = url
        self.run = run
        self.height = height

    def _repr_html_(self) -> str:
        url = html.escape(self.url, quote=True)
        what = f"run {self.run}" if self.run else "all runs"
        title = html.escape(f"stream_hub dashboard: {what}", quote=True)
        return (
            f'<iframe src="{url}" title="{title}" width="100%" height="{self.height}" '
            'style="border: 1px solid #8884; border-radius: 4px;" loading="eager"></iframe>'
            f'<div style="font-size: 0.85em;"><a href="{url}" target="_blank" rel="noopener">'
            f"{title}</a> (opens in a new tab)</div>"
        )

    def __repr__(self) -> str:
        return f"InlineDashboard({self.url!r})"
