"""StreamConfig: every setting, its default, its ``STREAM_HUB_*`` variable and
its validation.

A field given to the constructor wins; a field left out is read from
``STREAM_HUB_<FIELD>`` (for example ``STREAM_HUB_SSE_PORT=9000``); otherwise the
default applies. Every value is checked at construction, and a bad one raises
:class:`~stream_hub.errors.ConfigError` naming the field and what it accepts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["PORT_CONFLICT_POLICIES", "StreamConfig", "base_urls", "check_port_conflict", "url_host"]

PortConflictPolicy = Literal["auto", "join", "fail", "free", "next"]
PORT_CONFLICT_POLICIES: tuple[str, ...] = ("auto", "join", "fail", "free", "next")

ENV_PREFIX = "STREAM_HUB_"


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


def check_port_conflict(value: Any) -> PortConflictPolicy:
    """``value`` if it is a port-conflict policy, else :class:`ConfigError`."""
    if value not in PORT_CONFLICT_POLICIES:
        accepted = ", ".join(map(repr, PORT_CONFLICT_POLICIES))
        raise ConfigError("port_conflict", f"expected one of {accepted}, got {value!r}")
    return value  # type: ignore[no-any-return]


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
                value = _DEFAULTS[f.name] if raw is None else _parse_env(f.name, raw)
            object.__setattr__(self, f.name, _validate(f.name, value))

    # -- helpers -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values, tokens masked (safe to log or serve)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_token") and value is not None:
                value = "***"
            elif f.name == "backend" and value is not None:
                value = _mask_url(value)
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

_INT_FIELDS = {
    "sse_port",
    "ws_port",
    "rest_port",
    "history_size",
    "max_clients",
    "max_message_size",
    "max_body_size",
    "series_points",
    "history_bytes",
    "max_series",
    "client_buffer_bytes",
    "max_prometheus_series",
}
_FLOAT_FIELDS = {
    "heartbeat_interval",
    "handshake_timeout",
    "shutdown_timeout",
    "busy_flush_interval",
    "send_timeout",
    "stale_timeout",
}
_TOKEN_FIELDS = {"admin_token", "publish_token", "read_token"}
_LIST_FIELDS = {"cors_origins", "ws_origins", "allowed_hosts"}


def _parse_env(name: str, raw: str) -> Any:
    """Turn the text of ``STREAM_HUB_<NAME>`` into a value for ``name``."""
    text = raw.strip()
    var = ENV_PREFIX + name.upper()
    if name in _INT_FIELDS:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(name, f"{var}={raw!r} is not an integer") from None
    if name in _FLOAT_FIELDS:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(name, f"{var}={raw!r} is not a number") from None
    if name in _TOKEN_FIELDS or name in ("store", "backend"):
        return text or None
    if name == "store_max_events":
        try:
            return int(text) if text else None
        except ValueError:
            raise ConfigError(name, f"{var}={raw!r} is not an integer") from None
    if name == "store_max_days":
        try:
            return float(text) if text else None
        except ValueError:
            raise ConfigError(name, f"{var}={raw!r} is not a number of days") from None
    if name == "replica":
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"{var}={raw!r} is not a boolean (true/false)")
    if name == "system_metrics":
        lowered = text.lower()
        if lowered in ("", "0", "false", "no", "off"):
            return None
        if lowered in ("1", "true", "yes", "on"):
            return True
        try:
            return float(text)
        except ValueError:
            raise ConfigError(name, f"{var}={raw!r} is not a number of seconds or a boolean") from None
    if name in _LIST_FIELDS:
        if name in ("ws_origins", "allowed_hosts") and not text:
            return None
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text


def _validate(name: str, value: Any) -> Any:
    if name == "host":
        return _validate_host(value)
    if name in ("sse_port", "ws_port", "rest_port"):
        _check_int(name, value, 0, 65535, "a TCP port 0-65535 (0 = any free port)")
        return value
    if name == "history_size":
        _check_int(name, value, 1, 10_000_000, "an integer from 1 to 10 000 000")
        return value
    if name == "max_clients":
        _check_int(name, value, 1, 1_000_000, "an integer from 1 to 1 000 000")
        return value
    if name in ("max_message_size", "max_body_size"):
        _check_int(name, value, 1024, 1 << 31, "a size in bytes from 1024 to 2**31")
        return value
    if name == "series_points":
        _check_int(name, value, 16, 1_000_000, "an integer from 16 to 1 000 000")
        return value
    if name == "history_bytes":
        _check_int(name, value, 1 << 20, 1 << 40, "a size in bytes from 1 MiB (1048576) to 2**40")
        return value
    if name == "max_series":
        _check_int(name, value, 1, 10_000_000, "an integer from 1 to 10 000 000")
        return value
    if name == "max_prometheus_series":
        _check_int(name, value, 0, 10_000_000, "an integer from 0 (no training series) to 10 000 000")
        return value
    if name == "client_buffer_bytes":
        _check_int(name, value, 64 * 1024, 1 << 31, "a size in bytes from 65536 to 2**31")
        return value
    if name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"expected a number of seconds, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(name, f"expected a positive number of seconds, got {value!r}")
        return float(value)
    if name in _TOKEN_FIELDS:
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(name, "expected a non-empty string or None")
        return value
    if name == "port_conflict":
        return check_port_conflict(value)
    if name == "store":
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value).strip()):
            raise ConfigError(name, f"expected the path of a SQLite file (or None), got {value!r}")
        # Absolute: processes that share a hub compare it, and may run in other directories.
        return None if value is None else os.path.abspath(os.path.expanduser(os.fspath(value)))
    if name == "store_max_events":
        if value is not None:
            _check_int(name, value, 1, 1 << 62, "a number of events (at least 1), or None for no limit")
        return value
    if name == "store_max_days":
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigError(
                name, f"expected a positive number of days, or None for no limit, got {value!r}"
            )
        return float(value)
    if name == "backend":
        if value is not None and (
            not isinstance(value, str) or not value.startswith(("redis://", "rediss://"))
        ):
            raise ConfigError(
                name, f"expected a redis:// or rediss:// URL (or None), got {_mask_url(value)!r}"
            )
        return value
    if name == "replica":
        if not isinstance(value, bool):
            raise ConfigError(
                name,
                f"expected True (publish into the backend and serve it) or False (publish only), "
                f"got {value!r}",
            )
        return value
    if name == "namespace":
        if (
            not isinstance(value, str)
            or not value
            or len(value) > 100
            or not value.replace("_", "").replace("-", "").replace(".", "").replace(":", "").isalnum()
        ):
            raise ConfigError(name, f"expected a short name of letters, digits, '_-.:', got {value!r}")
        return value
    if name == "system_metrics":
        if value is None or value is False:
            return None
        if value is True:
            return 5.0
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigError(name, f"expected True, False/None or an interval in seconds, got {value!r}")
        return float(value)
    if name in _LIST_FIELDS:
        what = "host names" if name == "allowed_hosts" else "origin strings"
        if value is None and name in ("ws_origins", "allowed_hosts"):
            return None
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(name, f"expected a list of {what}, got {value!r}")
        return tuple(v.strip().lower() if name == "allowed_hosts" else v.strip() for v in value)
    raise ConfigError(name, "no such field")  # pragma: no cover - fields are fixed


def _mask_url(url: Any) -> Any:
    """A URL with its password (if any) replaced by ``***``."""
    if not isinstance(url, str):
        return url
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return (
        f"{scheme}://{user + ':' if user else ':'}***@{location}" if ":" in credentials or user == "" else url
    )


def _check_int(name: str, value: Any, low: int, high: int, accepted: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"expected {accepted}, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(name, f"expected {accepted}, got {value}")


def _validate_host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("host", f"expected an IP address or host name, got {value!r}")
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
        if not set(host) <= allowed or len(host) > 253:
            raise ConfigError("host", f"expected an IP address or host name, got {value!r}") from None
    return host
