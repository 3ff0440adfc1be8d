"""How each setting of :class:`~stream_hub.config.StreamConfig` is read from
its ``STREAM_HUB_*`` variable (:func:`parse_env`) and checked
(:func:`validate`): a bad value raises :class:`~stream_hub.errors.ConfigError`
naming the field and what it accepts. Also how a secret-bearing URL is shown
(:func:`mask_url`).
"""

from __future__ import annotations

import ipaddress
import math
import os
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["ENV_PREFIX", "PORT_CONFLICT_POLICIES", "check_port_conflict", "mask_url", "parse_env", "validate"]

PortConflictPolicy = Literal["auto", "join", "fail", "free", "next"]
PORT_CONFLICT_POLICIES: tuple[str, ...] = ("auto", "join", "fail", "free", "next")

ENV_PREFIX = "STREAM_HUB_"


def check_port_conflict(value: Any) -> PortConflictPolicy:
    """``value`` if it is a port-conflict policy, else :class:`ConfigError`."""
    if value not in PORT_CONFLICT_POLICIES:
        accepted = ", ".join(map(repr, PORT_CONFLICT_POLICIES))
        raise ConfigError("port_conflict", f"expected one of {accepted}, got {value!r}")
    return value  # type: ignore[no-any-return]


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


def parse_env(name: str, raw: str) -> Any:
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


def validate(name: str, value: Any) -> Any:
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
                name, f"expected a redis:// or rediss:// URL (or None), got {mask_url(value)!r}"
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


def mask_url(url: Any) -> Any:
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
