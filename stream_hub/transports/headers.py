"""The headers that tell a browser what an answer may do: ``nosniff`` on
every HTTP answer of the three ports, and the dashboard page's policy.

- ``X-Content-Type-Options: nosniff`` (every answer, :class:`NoSniff` for SSE
  and REST, :func:`no_sniff` for the WebSocket handshake): a browser never
  runs JSON, an export or an error text as a script or a style sheet.
- ``Content-Security-Policy`` on the dashboard page (:func:`page_policy`):
  scripts, styles and fonts only from this origin (the page has no inline
  script or style: ``tests/integration/test_dashboard.py`` checks no
  violation is reported), connections only to this origin and to this
  hub's SSE and WebSocket ports on the host the page was asked for (the
  name the user typed, which is the one the page connects to), no plugins,
  no ``<base>``, no forms. ``frame-ancestors`` lets this host's other pages
  (any port: a notebook next to the hub, or behind the same proxy),
  ``localhost``/``127.0.0.1`` (Jupyter's default addresses), VS Code's
  webviews and the origins in ``cors_origins`` embed the page, and no other
  site: a page that is not trusted cannot frame it to trick clicks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["PAGE_HEADERS", "NoSniff", "no_sniff", "page_policy"]

_NOSNIFF = (b"x-content-type-options", b"nosniff")

#: Pages that may embed the dashboard wherever it runs: Jupyter on this
#: machine (its default addresses, any port) and VS Code's webviews (a
#: notebook's output, the Simple Browser: frames inside the workbench).
FRAME_ANCESTORS = (
    "'self'",
    "http://localhost:*",
    "http://127.0.0.1:*",
    "vscode-webview:",
    "vscode-file:",
)

#: What the page may load besides its connections (``connect-src``) and its
#: embedders (``frame-ancestors``): its own scripts, styles and images (the
#: favicon is ``data:``, a chart's PNG download a ``blob:``).
_PAGE_SOURCES = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
)

#: Headers of the dashboard page besides its policy: the token may be in the
#: page's URL (``?token=``), which no request should carry on as a referrer.
PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

# A host as a CSP source can name it: a DNS name or an IPv4 address (CSP has
# no syntax for an IPv6 literal).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_CSP_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# An origin (or a scheme-less host) from the config, as a CSP source: no
# spaces, commas or semicolons can get through.
_CSP_ORIGIN = re.compile(r"(?:[a-z][a-z0-9+.-]*://)?(?:\*\.)?[A-Za-z0-9.-]+(?::(?:[0-9]{1,5}|\*))?")


def page_policy(host_header: str | None, ports: Mapping[str, int], framers: Iterable[str] = ()) -> str:
    """The dashboard page's ``Content-Security-Policy``.

    Args:
        host_header: the request's ``Host`` (the page connects to its SSE and
            WebSocket ports on the same name).
        ports: the hub's ports now (``sse``, ``ws``).
        framers: more origins allowed to embed the page (``cors_origins``);
            ``*`` lets any page embed it.
    """
    host = _hostname(host_header)
    name = host if host is not None else "*"  # an IPv6 literal: any host, on these ports only
    connect = ["'self'"]
    if ports.get("sse"):
        connect.append(f"http://{name}:{ports['sse']}")  # https too (CSP 3)
    if ports.get("ws"):
        connect.append(f"ws://{name}:{ports['ws']}")  # wss too
    ancestors = list(FRAME_ANCESTORS)
    if host is not None and host not in ("localhost", "127.0.0.1"):
        ancestors.append(f"http://{host}:*")
    for origin in framers:
        if origin == "*":
            ancestors = ["*"]
            break
        if _CSP_ORIGIN.fullmatch(origin) and origin not in ancestors:
            ancestors.append(origin)
    directives = [
        *_PAGE_SOURCES,
        "connect-src " + " ".join(connect),
        "frame-ancestors " + " ".join(ancestors),
    ]
    return "; ".join(directives)


def _hostname(host_header: str | None) -> str | None:
    """The name in a ``Host`` header, if a CSP source can carry it."""
    if not host_header:
        return None
    name = host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header
    return name.lower() if _CSP_HOST.fullmatch(name) else None


class NoSniff:
    """ASGI middleware: ``X-Content-Type-Options: nosniff`` on every HTTP answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_no_sniff(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), _NOSNIFF]
            await send(message)

        await self.app(scope, receive, send_no_sniff)


def no_sniff(connection: Any, request: Any, response: Any) -> None:
    """A ``process_response`` for the websockets server: ``nosniff`` on every
    handshake answer (the 101 and every refusal)."""
    response.headers["X-Content-Type-Options"] = "nosniff"
