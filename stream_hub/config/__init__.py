"""StreamConfig: every setting, declared once (:func:`.settings.setting`):
its type, default, ``STREAM_HUB_*`` variable, validation, help and flag.

A field given to the constructor wins; a field left out is read from
``STREAM_HUB_<FIELD>`` (for example ``STREAM_HUB_SSE_PORT=9000``); otherwise the
default applies. Every value is checked at construction, and a bad one raises
:class:`~stream_hub.errors.ConfigError` naming the field and what it accepts.
The kinds of value are in :mod:`.fields`, what is derived from a declaration
in :mod:`.settings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from ..errors import ConfigError
from . import fields as kinds
from .fields import PORT_CONFLICT_POLICIES, PortConflictPolicy, check_port_conflict, mask_url
from .settings import (
    ENV_PREFIX,
    UNSET,
    Flag,
    Setting,
    environment,
    is_production,
    markdown_table,
    setting,
    settings_of,
    warn_unknown_variables,
)

__all__ = [
    "ENV_PREFIX",
    "PORT_CONFLICT_POLICIES",
    "SETTINGS",
    "PortConflictPolicy",
    "Setting",
    "StreamConfig",
    "base_urls",
    "check_port_conflict",
    "environment",
    "is_production",
    "settings_table",
    "url_host",
]


def url_host(host: str) -> str:
    """``host`` as it appears in a URL: IPv6 literals in brackets."""
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def base_urls(host: str, ports: Mapping[str, int]) -> dict[str, str]:
    """The base URL of each transport of a server bound to ``host``.

    A wildcard bind is reached on loopback. Keys are those of ``ports``
    (``sse``, ``ws``, ``rest``); ``ws`` gets the ``ws://`` scheme.
    """
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    shown = url_host(host)
    return {name: f"{'ws' if name == 'ws' else 'http'}://{shown}:{port}" for name, port in ports.items()}


@dataclasses.dataclass(frozen=True, repr=False)
class StreamConfig:
    """Settings of one :class:`~stream_hub.TrainingStreamServer`.

    Ports may be ``0`` (any free port; the bound ones are in ``server.ports``).
    Tokens are ``None`` when unset: the admin endpoints then refuse everyone,
    reads and publishing are open to anyone who can reach the (by default
    loopback-only) host.

    Each field is declared once, here: adding a setting is adding a field.
    """

    host: str = setting(
        kinds.address(),
        "127.0.0.1",
        "address all three faces bind (a warning is logged when it is not loopback and a token is unset)",
        flag=Flag("address to bind or reach"),
    )
    sse_port: int = setting(kinds.port(), 8888, "SSE port; `0` = any free port", flag=Flag("SSE port"))
    ws_port: int = setting(
        kinds.port(), 8889, "WebSocket port; `0` = any free port", flag=Flag("WebSocket port")
    )
    rest_port: int = setting(
        kinds.port(), 8890, "REST and dashboard port; `0` = any free port", flag=Flag("REST port")
    )
    history_size: int = setting(
        kinds.integer(1, 10_000_000, "an integer from 1 to 10 000 000"),
        10_000,
        "events kept for replay; the most a subscriber may lag before it gets a `gap`",
    )
    heartbeat_interval: float = setting(
        kinds.seconds(), 15.0, "keep-alive comments on idle SSE streams, WebSocket pings"
    )
    admin_token: str | None = setting(
        kinds.token(),
        None,
        "`POST /api/admin/restart` refuses everyone until set; at least 16 characters",
        secret=True,
    )
    port_conflict: PortConflictPolicy = setting(
        kinds.choice(PORT_CONFLICT_POLICIES),
        "auto",
        "what to do when a port is busy. `auto`: join a live hub of yours, never end anything else "
        "(see [Many processes, one hub](#many-processes-one-hub)); `join`; `fail`; `free`; `next`",
        flag=Flag("what to do when a port is busy", choices=("auto", "fail", "free", "next")),
    )
    publish_token: str | None = setting(
        kinds.token(),
        None,
        "require `Authorization: Bearer` for `POST /api/publish`; at least 16 characters",
        secret=True,
    )
    read_token: str | None = setting(
        kinds.token(),
        None,
        "require `Authorization: Bearer` (or `?token=` for EventSource/WebSocket) for reads; "
        "at least 16 characters",
        secret=True,
    )
    max_clients: int = setting(
        kinds.integer(1, 1_000_000, "an integer from 1 to 1 000 000"),
        1000,
        "per transport; beyond it SSE answers 503 and WebSocket handshakes are refused with 503",
    )
    max_message_size: int = setting(
        kinds.size(1024, 1 << 31, "a size in bytes from 1024 to 2**31"),
        64 * 1024,
        "the largest incoming WebSocket frame (larger: close 1009)",
    )
    max_body_size: int = setting(
        kinds.size(1024, 1 << 31, "a size in bytes from 1024 to 2**31"),
        1024 * 1024,
        "the largest publish body (larger: 413)",
    )
    handshake_timeout: float = setting(
        kinds.seconds(),
        10.0,
        "every request's line, headers and body (and every WebSocket handshake) must arrive within "
        "this; otherwise the connection is closed",
    )
    shutdown_timeout: float = setting(
        kinds.seconds(), 5.0, "how long `stop()` lets streams flush before dropping stalled clients"
    )
    cors_origins: tuple[str, ...] = setting(
        kinds.names("origin strings", optional=False),
        (),
        "browser origins allowed on REST (CORS and publishing) and to embed the dashboard in a frame; "
        "`*`: any. Comma-separated in the variable",
    )
    ws_origins: tuple[str, ...] | None = setting(
        kinds.names("origin strings", optional=True),
        None,
        "browser origins allowed on WebSocket (the dashboard's own origin is always allowed; `*`: any)",
    )
    series_points: int = setting(
        kinds.integer(16, 1_000_000, "an integer from 16 to 1 000 000"),
        1000,
        "buckets kept per metric for whole-run curves",
    )
    busy_flush_interval: float = setting(
        kinds.seconds(),
        0.25,
        "delivery spacing while the training thread keeps the GIL busy (see Guarantees)",
    )
    history_bytes: int = setting(
        kinds.size(1 << 20, 1 << 40, "a size in bytes from 1 MiB (1048576) to 2**40"),
        64 * 1024 * 1024,
        "history is also bounded in bytes: large events push the oldest out early (announced by a `gap`)",
    )
    history_media_bytes: int = setting(
        kinds.size(1 << 20, 1 << 40, "a size in bytes from 1 MiB (1048576) to 2**40"),
        64 * 1024 * 1024,
        "the byte budget of `histogram` and `image` events in history, apart from `history_bytes`: "
        "past it the oldest media event leaves (a one-event `gap`, reason `media`), metrics never do",
    )
    max_series: int = setting(
        kinds.integer(1, 10_000_000, "an integer from 1 to 10 000 000"),
        10_000,
        "metric curves kept over all runs (runs x ranks x metrics); past it REST publishes get 422, "
        "in-process values are counted (`stream_hub_series_points_dropped_total`) and still streamed",
    )
    max_runs: int = setting(
        kinds.integer(1, 10_000_000, "an integer from 1 to 10 000 000"),
        10_000,
        "runs whose summaries and curves are kept (`/api/runs`, curves, Prometheus); a new run is "
        "always kept: past it the oldest finished runs are forgotten first, then the least recently "
        "updated (counted in `stream_hub_runs_evicted_total`)",
    )
    allowed_hosts: tuple[str, ...] | None = setting(
        kinds.names("host names", optional=True, lower=True),
        None,
        "more `Host` names to accept on a loopback bind (`*`: any); on a wildcard/public bind, "
        "the only ones to accept",
    )
    allow_other_users: bool = setting(
        kinds.boolean("True (serve other users' processes too) or False (only this user's)"),
        False,
        "on a loopback bind, serve connections from other users' processes (a JupyterHub proxy, "
        "a Prometheus user, a system service); by default they are refused (403) on every port, and "
        "on any bind they cannot publish without `publish_token` (needs Linux; see [Security](#security))",
        flag=Flag("serve other users' processes on a loopback bind", switch=True),
    )
    send_timeout: float = setting(
        kinds.seconds(),
        10.0,
        "a client that takes no data for this long is closed (it can resume with its last id); "
        "counted in `clients.evicted`",
    )
    client_buffer_bytes: int = setting(
        kinds.size(64 * 1024, 1 << 31, "a size in bytes from 65536 to 2**31"),
        4 * 1024 * 1024,
        "the most bytes queued for one client; past it, it is closed and counted the same way",
    )
    stale_timeout: float = setting(
        kinds.seconds(),
        5.0,
        "how long a hub may answer nothing (3 probes) before it counts as busy (it works: joined) "
        "or wedged (no CPU, asleep: ended in development)",
    )
    drain_timeout: float = setting(
        kinds.seconds(),
        3.0,
        "how long a stopping host waits for its joined processes to hand over their last events and "
        "leave (the end of a job: they serve their clients) before it hands the hub to one still there",
    )
    shared_memory: bool = setting(
        kinds.boolean("True (join a hub of this machine over a shared-memory ring) or False (its socket)"),
        False,
        "`true`: a process that joins a hub of this machine writes its events into a shared-memory ring "
        "the hub reads (no thread of ours works per event while it trains; opt-in for now); `false`: over "
        "the hub's socket channel, through a forwarder thread (see [Many processes, one "
        "hub](#many-processes-one-hub))",
    )
    store: str | Literal[False] | None = setting(
        kinds.store_path(),
        None,
        "where events and run curves are kept (see [Where is my data](#where-is-my-data)): by default "
        "a file of this hub's own under `STREAM_HUB_HOME`; `False` (`off`, or an empty variable): "
        "nowhere; a path: that SQLite file, one hub at a time (see Durable runs), taken from the "
        "current directory when relative, not under /proc, /sys or /dev",
        flag=Flag(
            "keep events and curves in this SQLite file and continue what it holds ('off': keep nothing)",
            metavar="PATH",
        ),
    )
    store_max_events: int | None = setting(
        kinds.optional_integer(1, 1 << 62, "a number of events (at least 1), or None for no limit"),
        None,
        "retention of the store: at most this many events (none: keep everything)",
        flag=Flag("keep at most N events in the store", metavar="N"),
    )
    store_max_days: float | None = setting(
        kinds.optional_days(),
        None,
        "retention of the store: events of the last this many days (none: keep everything; "
        "the default store: 30 days over its directory)",
        flag=Flag("keep events of the last D days in the store", metavar="D"),
    )
    store_max_bytes: int | None = setting(
        kinds.optional_integer(1 << 20, 1 << 62, "a size in bytes (at least 1 MiB), or None for no limit"),
        None,
        "retention of the store in bytes (none: an explicit store keeps everything, the default "
        "store keeps its directory under 2 GiB); oldest finished runs go first",
        flag=Flag("keep the store under N bytes", metavar="N"),
    )
    past_runs: bool = setting(
        kinds.boolean("True (list the persisted runs too) or False"),
        False,
        "also serve the runs earlier hubs persisted in the default store (`/api/runs` lists them "
        "after the live ones, with their curves and exports); `stream-hub serve` turns it on "
        "unless it is given a store",
    )
    backend: str | None = setting(
        kinds.redis_url(),
        None,
        "`redis://host:6379/0` or `rediss://…` (TLS): events go through a Redis stream; "
        "see [Scaling out](#scaling-out)",
        secret=True,
        mask=mask_url,
        flag=Flag(
            "serve a Redis stream as one of its replicas: redis://host:6379/0 or rediss://...",
            metavar="URL",
        ),
    )
    namespace: str = setting(
        kinds.short_name(),
        "stream_hub",
        "which stream of that Redis (one global seq and epoch each)",
        flag=Flag("which stream of that Redis"),
    )
    replica: bool = setting(
        kinds.boolean("True (publish into the backend and serve it) or False (publish only)"),
        True,
        "with a backend: also serve the stream here (SSE, WebSocket, REST, dashboard); "
        "`false`: publish only, bind no port",
    )
    system_metrics: float | None = setting(
        kinds.seconds_or_switch(5.0),
        None,
        "seconds between samples of the machine's CPU, memory and GPUs (`True`: 5 s), published as "
        "the run `_system` (see [The dashboard](#the-dashboard))",
    )
    alert_webhook: str | None = setting(
        kinds.http_url(),
        None,
        "an `http://` or `https://` URL each alert is POSTed to as JSON, from a thread of its own "
        "(see [The hub watches for you](#the-hub-watches-for-you))",
        secret=True,
        flag=Flag("POST each alert as JSON to this URL", metavar="URL"),
    )
    max_prometheus_series: int = setting(
        kinds.integer(0, 10_000_000, "an integer from 0 (no training series) to 10 000 000"),
        1000,
        "training series `/metrics` exports (newest runs first; the rest counted in "
        "`stream_hub_metric_series_dropped_total`)",
    )

    def __post_init__(self) -> None:
        warn_unknown_variables(SETTINGS.values())
        for name, declared in SETTINGS.items():
            value = getattr(self, name)
            value = declared.read() if value is UNSET else declared.check(value)
            object.__setattr__(self, name, value)
        self._check_ports_differ()

    def _check_ports_differ(self) -> None:
        """Two faces cannot bind one port: refused here, naming both fields,
        not by a bind error at start (0, any free port, may repeat)."""
        taken: dict[int, str] = {}
        for name in ("sse_port", "ws_port", "rest_port"):
            port = getattr(self, name)
            if port and port in taken:
                raise ConfigError(
                    name, f"port {port} is also {taken[port]}; each transport needs its own port"
                )
            taken.setdefault(port, name)

    # -- helpers -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values, secrets masked (safe to log or serve)."""
        return {name: declared.shown(getattr(self, name)) for name, declared in SETTINGS.items()}

    def __repr__(self) -> str:
        # Secrets masked: a config ends up in logs and tracebacks.
        fields = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"StreamConfig({fields})"

    def differences(self, other: StreamConfig) -> list[str]:
        """Names of the fields whose values differ between two configs."""
        return [name for name in SETTINGS if getattr(self, name) != getattr(other, name)]

    def replace(self, **changes: Any) -> StreamConfig:
        """A copy with some fields changed (and validated)."""
        unknown = set(changes) - set(SETTINGS)
        if unknown:
            raise ConfigError(sorted(unknown)[0], "no such field")
        values = {name: getattr(self, name) for name in SETTINGS}
        values.update(changes)
        return StreamConfig(**values)

    @classmethod
    def reading(cls, fields: Iterable[str], **values: Any) -> StreamConfig:
        """A config that reads only ``fields`` from the environment.

        ``values`` are given as usual; every other field gets its default,
        so a bad ``STREAM_HUB_*`` variable of a field the caller does not use
        (a client of a running hub has no business with its history size)
        cannot stop it.
        """
        wanted = set(fields)
        given = {name: s.default for name, s in SETTINGS.items() if name not in wanted}
        given.update(values)
        return cls(**given)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> StreamConfig:
        """Build from a mapping, naming any unknown key in the error."""
        for key in values:
            if key not in SETTINGS:
                raise ConfigError(key, f"no such field; known fields: {', '.join(sorted(SETTINGS))}")
        return cls(**values)


SETTINGS: Mapping[str, Setting] = settings_of(StreamConfig)
"""Every field's declaration, by name, in field order."""


def settings_table() -> str:
    """The Markdown table of the settings in the README's Configuration section."""
    return markdown_table(SETTINGS.values())
