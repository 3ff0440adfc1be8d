"""``stream_hub.show()``: the live dashboard in a notebook's output.

    import stream_hub
    server = stream_hub.get_stream_server()
    server.log({"loss": 0.3}, step=1)
    stream_hub.show()          # or make ``server`` a cell's last expression

The frame shows the notebook's run (the kernel's default run: named after
the notebook when its front end says which it is, :mod:`stream_hub.job`);
``show(run=...)`` another, ``show(run="")`` every run. See
:mod:`stream_hub.inline` for what is rendered and where it works.
"""

from __future__ import annotations

import sys
from typing import Any

from . import job
from .errors import StreamHubError
from .inline import DEFAULT_HEIGHT, InlineDashboard, dashboard_url
from .manager import get_stream_server, get_stream_server_manager
from .server import TrainingStreamServer

__all__ = ["show"]


def show(
    run: str | None = None, *, server: TrainingStreamServer | None = None, height: int = DEFAULT_HEIGHT
) -> InlineDashboard | None:
    """Show the dashboard of ``server`` (default: the process's shared
    server, started — one reference, kept until the kernel exits — when none
    runs), only ``run`` (default: this process's run; ``""``: every run).

    In IPython (a notebook's kernel) the frame is displayed in the cell's
    output wherever ``show()`` is called, and None is returned (nothing is
    shown twice). Elsewhere the :class:`~stream_hub.inline.InlineDashboard`
    is returned (its ``url``; any renderer of ``_repr_html_`` shows it).

    Raises:
        StreamHubError: the server is stopped (it has no address to show).
    """
    if server is None:
        server = get_stream_server_manager().server
        if server is None or not server.running:
            server = get_stream_server()
    rest = server.urls.get("rest")
    if not rest:
        raise StreamHubError(
            "the stream_hub server is stopped: start it (server.start()) to show its dashboard"
        )
    shown = job.current().run if run is None else (run or None)
    frame = InlineDashboard(dashboard_url(rest, shown), shown, height)
    display = _ipython_display()
    if display is None:
        return frame
    display(frame)
    return None


def _ipython_display() -> Any:
    """IPython's ``display`` inside a running IPython shell, else None
    (IPython is not imported by a process that has not loaded it)."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if not callable(get_ipython) or get_ipython() is None:
        return None
    import importlib

    return getattr(importlib.import_module("IPython.display"), "display", None)
