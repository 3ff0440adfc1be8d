"""Who may talk to the server from a browser: the Host and Origin rules.

Two attacks reach a server on loopback through the developer's own browser:

- **DNS rebinding**: a page at ``http://evil.example`` makes its name resolve
  to 127.0.0.1 and reads the server as same-origin. The request still says
  ``Host: evil.example``, so on a loopback bind every port refuses a Host that
  is not the bound address, ``localhost``, ``127.0.0.1`` or ``[::1]`` (plus
  ``allowed_hosts``). On a wildcard or public bind, where tokens guard access,
  any Host is accepted unless ``allowed_hosts`` narrows it.
- **Cross-site reads**: a page of another site can make the browser GET any
  URL here without CORS (an ``<img>``, a ``<script>``): nothing readable, but
  a loop of big history requests slows training. Browsers label such requests
  ``Sec-Fetch-Site: cross-site``; they are refused unless they are CORS
  requests from an allowed origin or the dashboard page loaded in a frame.
- **Cross-site requests**: any page can open a WebSocket or post a form to
  loopback. A browser always sends ``Origin`` then, so WebSocket handshakes
  and publishes carrying an Origin are accepted only from the dashboard's own
  origin (the REST port of this server, on the host the request was sent to)
  and from the configured ``ws_origins``/``cors_origins``. Requests without
  Origin (curl, Python clients, other processes) are not browsers and pass.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import StreamConfig, url_host

__all__ = ["AccessPolicy", "HostCheck", "host_of", "is_loopback_host"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_of(value: str | None) -> str | None:
    """The host name of a ``Host`` header or an origin's netloc, lowercase,
    without port or IPv6 brackets; None unless it is well formed: a name (or
    IPv4 address) or a bracketed IPv6 address, then at most a port 1-65535
    (``[::1]evil`` and ``127.0.0.1:99999`` are not hosts)."""
    if not value:
        return None
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = (value[1:end], value[end + 1 :]) if end > 0 else ("", "")
        if not _is_ipv6(name) or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
        if rest and not _is_port(port):
            return None
        return name
    if value.count(":") > 1:  # a bare IPv6 address: no port possible
        return value if _is_ipv6(value) else None
    name, colon, port = value.partition(":")
    if not _NAME.match(name) or (colon and not _is_port(port)):
        return None
    return name


# A host name or IPv4 address: letters, digits, hyphens (and the underscores of container names).
_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?\Z")


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) <= 65535


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccessPolicy:
    """The Host and Origin rules of one server (see the module docstring).

    ``rest_port`` returns the bound REST port (the dashboard's origin).
    """

    def __init__(self, config: StreamConfig, rest_port: Callable[[], int | None]) -> None:
        self.config = config
        self._rest_port = rest_port
        bound = config.host.strip("[]").lower()
        self.loopback = is_loopback_host(bound)
        extra = frozenset(h.strip("[]") for h in config.allowed_hosts or ())
        self._any_host = "*" in extra or (not self.loopback and config.allowed_hosts is None)
        self._hosts = LOOPBACK_NAMES | {bound} | extra

    # -- Host ---------------------------------------------------------------------

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header may be answered."""
        if self._any_host:
            return True
        name = host_of(header)
        return name is not None and name in self._hosts

    def host_refusal(self, header: str | None) -> str:
        return (
            f"Host {header!r} is not allowed for this server (bound to {self.config.host}); "
            "allowed: "
            + ", ".join(sorted(url_host(h) for h in self._hosts))
            + " (add names with StreamConfig(allowed_hosts=...) / STREAM_HUB_ALLOWED_HOSTS)"
        )

    # -- Origin -----------------------------------------------------------------

    def is_dashboard(self, origin: str, host_header: str | None) -> bool:
        """Whether ``origin`` is this server's dashboard: the REST port, on the
        host the request was sent to (or, on a loopback bind, a loopback name)."""
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or port is None or port != self._rest_port():
            return False
        name = (parts.hostname or "").lower()
        if name and name == host_of(host_header):
            return True
        return self.loopback and name in self._hosts

    def origin_allowed(self, origin: str | None, host_header: str | None, extra: Iterable[str]) -> bool:
        """No Origin (not a browser), the dashboard's, or one of ``extra`` ("*": any)."""
        if origin is None:
            return True
        allowed = tuple(extra)
        return "*" in allowed or origin in allowed or self.is_dashboard(origin, host_header)

    def cors_origin(self, origin: str | None, host_header: str | None) -> str | None:
        """The Origin to echo in CORS headers of a read (None: no CORS headers)."""
        if origin and self.origin_allowed(origin, host_header, self.config.cors_origins):
            return origin
        return None

    def ws_origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        return self.origin_allowed(origin, host_header, self.config.ws_origins or ())

    def publish_origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        return self.origin_allowed(origin, host_header, self.config.cors_origins)


class HostCheck:
    """ASGI middleware: refuse (403) an HTTP request whose Host is not allowed."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = _header(scope, b"host")
            refusal: str | None = None
            if not self.policy.host_allowed(header):
                refusal = self.policy.host_refusal(header)
            elif _header(scope, b"sec-fetch-site") == "cross-site" and not self._cross_site_allowed(scope):
                refusal = (
                    "cross-site requests are refused (a page of another site cannot read or load this "
                    "server); allow a site's scripts with StreamConfig(cors_origins=...)"
                )
            if refusal is not None:
                body = orjson.dumps({"error": refusal})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _cross_site_allowed(self, scope: Scope) -> bool:
        """A request another site's page made (the browser says so in
        ``Sec-Fetch-Site``): only a CORS request from an allowed origin, or
        the dashboard page opened in a frame (notebooks and editors embed it;
        which sites may frame it is the page's ``frame-ancestors``)."""
        origin = _header(scope, b"origin")
        host = _header(scope, b"host")
        if origin is not None and origin != "null":
            return self.policy.origin_allowed(origin, host, self.policy.config.cors_origins)
        return (
            scope.get("method") == "GET"
            and scope.get("path") == "/"
            and _header(scope, b"sec-fetch-dest") in ("iframe", "frame")
        )


def _header(scope: dict[str, Any] | Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None
