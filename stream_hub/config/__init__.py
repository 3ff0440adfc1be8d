"""StreamConfig: every setting, its default, its ``STREAM_HUB_*`` variable and
its validation (each field's, in :mod:`.fields`).

A field given to the constructor wins; a field left out is read from
``STREAM_HUB_<FIELD>`` (for example ``STREAM_HUB_SSE_PORT=9000``); otherwise the
default applies. Every value is checked at construction, and a bad one raises
:class:`~stream_hub.errors.ConfigError` naming the field and what it accepts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from .fields import (
    ENV_PREFIX,
    PORT_CONFLICT_POLICIES,
    PortConflictPolicy,
    check_port_conflict,
    mask_url,
    parse_env,
    validate,
)

__all__ = [
    "ENV_PREFIX",
    "PORT_CONFLICT_POLICIES",
    "PortConflictPolicy",
    "StreamConfig",
    "base_urls",
    "check_port_conflict",
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


# The sentinel marks "not given": such a field is read from the environment.
_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()


@dataclasses.dataclass(frozen=True, repr=False)
class StreamConfig:
    """Settings of one :class:`~stream_hub.TrainingStreamServer`.

    Ports may be ``0`` (any free port; the bound ones are in ``server.ports``).
    Tokens are ``None`` when unset: the admin endpoints then refuse everyone,
    reads and publishing are open to anyone who can reach the (by default
    loopback-only) host.
    """

    host: str = _UNSET
    sse_port: int = _UNSET
    ws_port: int = _UNSET
    rest_port: int = _UNSET
    history_size: int = _UNSET
    heartbeat_interval: float = _UNSET
    admin_token: str | None = _UNSET
    port_conflict: PortConflictPolicy = _UNSET
    publish_token: str | None = _UNSET
    read_token: str | None = _UNSET
    max_clients: int = _UNSET
    max_message_size: int = _UNSET
    max_body_size: int = _UNSET
    handshake_timeout: float = _UNSET
    shutdown_timeout: float = _UNSET
    cors_origins: tuple[str, ...] = _UNSET
    ws_origins: tuple[str, ...] | None = _UNSET
    series_points: int = _UNSET
    busy_flush_interval: float = _UNSET
    history_bytes: int = _UNSET
    max_series: int = _UNSET
    allowed_hosts: tuple[str, ...] | None = _UNSET
    send_timeout: float = _UNSET
    client_buffer_bytes: int = _UNSET
    stale_timeout: float = _UNSET
    store: str | None = _UNSET
    store_max_events: int | None = _UNSET
    store_max_days: float | None = _UNSET
    backend: str | None = _UNSET
    namespace: str = _UNSET
    replica: bool = _UNSET
    system_metrics: float | None = _UNSET
    max_prometheus_series: int = _UNSET

    def __post_init__(self) -> None:
        env = os.environ
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is _UNSET:
                raw = env.get(ENV_PREFIX + f.name.upper())
                value = _DEFAULTS[f.name] if raw is None else parse_env(f.name, raw)
            object.__setattr__(self, f.name, validate(f.name, value))

    # -- helpers -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values, tokens masked (safe to log or serve)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_token") and value is not None:
                value = "***"
            elif f.name == "backend" and value is not None:
                value = mask_url(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def __repr__(self) -> str:
        # Secrets masked: a config ends up in logs and tracebacks.
        fields = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"StreamConfig({fields})"

    def differences(self, other: StreamConfig) -> list[str]:
        """Names of the fields whose values differ between two configs."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    def replace(self, **changes: Any) -> StreamConfig:
        """A copy with some fields changed (and validated)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise ConfigError(sorted(unknown)[0], "no such field")
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
        given = {name: value for name, value in _DEFAULTS.items() if name not in wanted}
        given.update(values)
        return cls(**given)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> StreamConfig:
        """Build from a mapping, naming any unknown key in the error."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in names:
                raise ConfigError(key, f"no such field; known fields: {', '.join(sorted(names))}")
        return cls(**values)


_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "sse_port": 8888,
    "ws_port": 8889,
    "rest_port": 8890,
    "history_size": 10_000,
    "heartbeat_interval": 15.0,
    "admin_token": None,
    "port_conflict": "auto",
    "publish_token": None,
    "read_token": None,
    "max_clients": 1000,
    "max_message_size": 64 * 1024,
    "max_body_size": 1024 * 1024,
    "handshake_timeout": 10.0,
    "shutdown_timeout": 5.0,
    "cors_origins": (),
    "ws_origins": None,
    "series_points": 1000,
    "busy_flush_interval": 0.25,
    "history_bytes": 64 * 1024 * 1024,
    "max_series": 10_000,
    "allowed_hosts": None,
    "send_timeout": 10.0,
    "client_buffer_bytes": 4 * 1024 * 1024,
    "stale_timeout": 5.0,
    "store": None,
    "store_max_events": None,
    "store_max_days": None,
    "backend": None,
    "namespace": "stream_hub",
    "replica": True,
    "system_metrics": None,
    "max_prometheus_series": 1000,
}
