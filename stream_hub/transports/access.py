"""Who may talk to the server: the peer's user, and the Host and Origin rules.

- **Another user of this machine** can reach a loopback port as well as its
  owner can. On a loopback bind, every connection's peer is looked up
  (:mod:`.peer_uid`: Linux tells the uid that owns the other end) once, when
  it is accepted, and a connection from another uid — or one whose peer
  cannot be found — is refused (403) on every port, unless
  ``allow_other_users``. Where the platform cannot tell, connections are
  served (the README says so).

Three attacks reach a server through the developer's own browser:

- **DNS rebinding**: a page at ``http://evil.example`` makes its name resolve
  to this machine and reads the server as same-origin. The request still says
  ``Host: evil.example``, so on a loopback bind every port refuses a Host that
  is not the bound address, ``localhost``, ``127.0.0.1`` or ``[::1]`` (plus
  ``allowed_hosts``). On a wildcard or public bind, where tokens guard access,
  any Host is accepted from clients that are not browsers, unless
  ``allowed_hosts`` narrows it; a browser (it sends ``Origin`` or
  ``Sec-Fetch-Site``) must name this machine: an IP address, ``localhost``
  (and ``*.localhost``, which browsers resolve themselves), the machine's host
  name, the bound address, or a name in ``allowed_hosts``. Only such a Host
  makes an Origin equal to it the dashboard's own.
- **Cross-site reads**: a page of another site can make the browser GET any
  URL here without CORS (an ``<img>``, a ``<script>``): nothing readable, but
  a loop of big history requests slows training. Browsers label such requests
  ``Sec-Fetch-Site: cross-site``; they are refused unless they are CORS
  requests from an allowed origin or the dashboard page loaded in a frame.
- **Cross-site requests**: any page can open a WebSocket or post a form to
  loopback. A browser always sends ``Origin`` then, so WebSocket handshakes
  and publishes carrying an Origin are accepted only from the dashboard's own
  origin (the REST port of this server, on a host name of this machine the
  request was sent to) and from the configured ``ws_origins``/``cors_origins``.
  Requests without Origin (curl, Python clients, other processes) are not
  browsers and pass.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import StreamConfig, url_host
from .peer_uid import can_tell_peer_uid, peer_uid

__all__ = ["PEER_REFUSAL", "AccessCheck", "AccessPolicy", "host_of", "is_loopback_host"]

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

#: The key of a connection's verdict on its peer in each request's ASGI
#: ``scope["state"]`` (set once per connection by :mod:`.http`).
PEER_REFUSAL = "stream_hub.peer_refusal"


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


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _machine_names() -> frozenset[str]:
    """This machine's host name (``socket.gethostname()``), and its first
    label when it is a dotted name; lower case. No DNS is asked: a slow
    resolver must not hold a start (the FQDN, when it is another name, goes
    into ``allowed_hosts``)."""
    name = socket.gethostname().strip().lower().rstrip(".")
    if not name:
        return frozenset()
    return frozenset({name, name.split(".", 1)[0]})


class AccessPolicy:
    """Who may talk to one server (see the module docstring).

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
        # A browser's Host on a wildcard or public bind: a name of this machine.
        self._browsers_named = not self.loopback and config.allowed_hosts is None
        self._own_names = LOOPBACK_NAMES | {bound} | (extra - {"*"}) | _machine_names()
        # Whether the kernel tells a connection's peer user: asked at the first
        # connection that needs it (once per process: peer_uid.can_tell_peer_uid).
        self._platform_tells: bool | None = None

    # -- the peer's user -----------------------------------------------------------

    def peer_refusal(self, local: Any, remote: Any) -> str | None:
        """Why a connection must be refused for its peer's user, as a one-line
        message; None to serve it. ``local`` and ``remote`` are the
        connection's addresses (``getsockname()``, ``getpeername()``).

        On a loopback bind a connection is served only when its peer is a
        process of this process's user (see :meth:`foreign_peer`); on a
        wildcard or public bind, tokens guard access, not users.
        """
        if not self.loopback:
            return None
        foreign = self.foreign_peer(local, remote)
        if foreign is None:
            return None
        return (
            f"this connection comes from {foreign}, and this hub serves only its own user's processes "
            "on a loopback bind; to serve other users (a JupyterHub proxy, a Prometheus user, a system "
            "service) start it with StreamConfig(allow_other_users=True) / STREAM_HUB_ALLOW_OTHER_USERS=1"
        )

    def foreign_peer(self, local: Any, remote: Any) -> str | None:
        """Who the peer of a connection from this machine is, when it is not a
        process of this process's user: ``"another user (uid N)"``, or ``"a
        process whose user could not be found"`` (refused like another user).
        None when it is this user's, with ``allow_other_users``, and where the
        platform cannot tell (:func:`~.peer_uid.can_tell_peer_uid`)."""
        if self.config.allow_other_users or not self._platform_tells_users():
            return None
        try:
            uid = peer_uid(tuple(local), tuple(remote))
        except (OSError, TypeError) as exc:
            logger.debug("the peer of %s could not be looked up: %s", remote, exc)
            uid = None
        if uid == os.geteuid():
            return None
        return "a process whose user could not be found" if uid is None else f"another user (uid {uid})"

    def _platform_tells_users(self) -> bool:
        if self._platform_tells is None:
            self._platform_tells = can_tell_peer_uid()
            if not self._platform_tells:
                unexpected = sys.platform.startswith("linux")
                logger.log(
                    logging.WARNING if unexpected else logging.INFO,
                    "this platform does not tell the user of a connection's process%s: other users of "
                    "this machine can reach the loopback ports like this user",
                    " (netlink sock_diag failed)" if unexpected else "",
                )
        return self._platform_tells

    # -- Host ---------------------------------------------------------------------

    def host_refusal(self, header: str | None, *, browser: bool) -> str | None:
        """Why a request with this ``Host`` header must be refused, as a
        one-line message; None to answer it. ``browser``: the request carries
        an ``Origin`` or ``Sec-Fetch-Site`` (a browser sent it)."""
        if self._any_host and not (browser and self._browsers_named):
            return None
        name = host_of(header)
        if self._any_host:  # a browser on a wildcard or public bind
            if name is not None and self.is_own_name(name):
                return None
            return (
                f"Host {header!r} is not a name of this machine: a web page reached under another name "
                "may be a DNS-rebinding attack, so browsers must use the machine's address or host name "
                "(add names with StreamConfig(allowed_hosts=...) / STREAM_HUB_ALLOWED_HOSTS)"
            )
        if name is not None and name in self._hosts:
            return None
        return (
            f"Host {header!r} is not allowed for this server (bound to {self.config.host}); "
            "allowed: "
            + ", ".join(sorted(url_host(h) for h in self._hosts))
            + " (add names with StreamConfig(allowed_hosts=...) / STREAM_HUB_ALLOWED_HOSTS)"
        )

    def is_own_name(self, name: str) -> bool:
        """Whether a browser that sent ``Host: <name>`` reached this machine
        under one of its own names, which a web page cannot re-point: an IP
        address (a page at an address was loaded from it), ``localhost`` and
        ``*.localhost`` (browsers resolve them to loopback themselves), the
        bound address, this machine's host name, ``allowed_hosts``."""
        return name in self._own_names or name.endswith(".localhost") or _is_address(name)

    # -- Origin -----------------------------------------------------------------

    def is_dashboard(self, origin: str, host_header: str | None) -> bool:
        """Whether ``origin`` is this server's dashboard: the REST port, on a
        name the server answers to — on a loopback bind, one of its Host names
        (any, with ``allowed_hosts=("*",)``, when it is the Host the request
        was sent to); elsewhere the Host the request was sent to, when that
        is a name of this machine (:meth:`is_own_name`). A page whose origin
        merely equals the Host it sent may be a rebound one (``evil.example``
        re-pointed at this machine)."""
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or port is None or port != self._rest_port():
            return False
        name = (parts.hostname or "").lower()
        if self.loopback:
            return name in self._hosts or (self._any_host and bool(name) and name == host_of(host_header))
        return bool(name) and name == host_of(host_header) and self.is_own_name(name)

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


class AccessCheck:
    """ASGI middleware: refuse (403) an HTTP request from another user's
    process, one whose Host is not allowed, and a cross-site one."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._peer_refusal(scope)
            closing = refusal is not None
            if refusal is None:
                browser = any(_header(scope, name) is not None for name in (b"origin", b"sec-fetch-site"))
                refusal = self.policy.host_refusal(_header(scope, b"host"), browser=browser)
            if (
                refusal is None
                and _header(scope, b"sec-fetch-site") == "cross-site"
                and not self._cross_site_allowed(scope)
            ):
                refusal = (
                    "cross-site requests are refused (a page of another site cannot read or load this "
                    "server); allow a site's scripts with StreamConfig(cors_origins=...)"
                )
            if refusal is not None:
                body = orjson.dumps({"error": refusal})
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                if closing:  # nothing more is served on this connection
                    headers.append((b"connection", b"close"))
                await send({"type": "http.response.start", "status": 403, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _peer_refusal(self, scope: Scope) -> str | None:
        """The connection's verdict on its peer, made once when it was accepted
        (:mod:`.http` puts it in the request's state); made here when missing."""
        state = scope.get("state")
        if isinstance(state, dict) and PEER_REFUSAL in state:
            verdict = state[PEER_REFUSAL]
            return verdict if isinstance(verdict, str) else None
        server, client = scope.get("server"), scope.get("client")
        if server is None or client is None:
            return self.policy.peer_refusal(("", 0), ("", 0))
        return self.policy.peer_refusal(server, client)

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
