"""The kinds of value a setting can hold: for each, how it is read from the text
of an environment variable, how a value is checked (the message of a bad one
says what is accepted), how its default is shown in the docs, and which
argparse ``type`` its command-line flag has.

A :class:`Kind` knows nothing of field names: :mod:`.settings` puts the name
into the :class:`~stream_hub.errors.ConfigError` it raises. Also how a
secret-bearing URL is shown (:func:`mask_url`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import urllib.parse
from collections.abc import Callable
from typing import Any, Literal

from ..errors import ConfigError

__all__ = [
    "MIN_TOKEN_LENGTH",
    "PORT_CONFLICT_POLICIES",
    "Invalid",
    "Kind",
    "PortConflictPolicy",
    "Unreadable",
    "address",
    "boolean",
    "check_port_conflict",
    "choice",
    "environment_name",
    "file_path",
    "http_url",
    "integer",
    "mask_url",
    "names",
    "optional_days",
    "optional_integer",
    "port",
    "redis_url",
    "seconds",
    "seconds_or_switch",
    "short_name",
    "size",
    "store_path",
    "token",
]

PortConflictPolicy = Literal["auto", "join", "fail", "free", "next"]
PORT_CONFLICT_POLICIES: tuple[str, ...] = ("auto", "join", "fail", "free", "next")


class Invalid(ValueError):
    """A value a :class:`Kind` does not accept; the message says what it does
    accept (the caller names the field)."""


class Unreadable(ValueError):
    """The text of a variable is not a value of the kind; the message is the
    reason, e.g. ``is not an integer``."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of setting value.

    ``parse`` turns the (stripped) text of an environment variable into a
    value, raising :class:`Unreadable`; ``check`` returns the value as the
    config keeps it (a float for seconds, an absolute path, ...) or raises
    :class:`Invalid`; ``show`` writes a default for the docs and ``--help``;
    ``cli_type`` is the ``type`` of a command-line flag for it.
    """

    parse: Callable[[str], Any]
    check: Callable[[Any], Any]
    show: Callable[[Any], str] = lambda value: "none" if value is None else f"`{value}`"
    cli_type: Callable[[str], Any] | None = None


# -- reading text ------------------------------------------------------------------------


def _text(text: str) -> str:
    return text


def _text_or_none(text: str) -> str | None:
    return text or None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Unreadable("is not an integer") from None


def _number(reason: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise Unreadable(reason) from None

    return parse


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# -- showing defaults --------------------------------------------------------------------


def _show_count(value: Any) -> str:
    # 10 000 rather than 10000: the docs are read by people.
    return "none" if value is None else f"{value:,}".replace(",", " ")


def _show_bytes(value: Any) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value % scale == 0:
            return f"{value // scale} {unit}"
    return f"{value} bytes"


def _show_seconds(value: Any) -> str:
    return "none" if value is None else f"{value:g} s"


def _show_off(value: Any) -> str:
    return "off" if value is None else f"{value:g} s"


def _show_bool(value: Any) -> str:
    return "true" if value else "false"


def _show_list(value: Any) -> str:
    return ", ".join(f"`{v}`" for v in value) if value else "none"


# -- the kinds ---------------------------------------------------------------------------


def _check_int(value: Any, low: int, high: int, accepted: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected {accepted}, got {value!r}")
    if not low <= value <= high:
        raise Invalid(f"expected {accepted}, got {value}")
    return value


def integer(low: int, high: int, accepted: str) -> Kind:
    """An integer from ``low`` to ``high``; ``accepted`` describes the range."""
    return Kind(_int, lambda value: _check_int(value, low, high, accepted), _show_count, int)


def port() -> Kind:
    """A TCP port, 0 meaning any free one."""
    return dataclasses.replace(integer(0, 65535, "a TCP port 0-65535 (0 = any free port)"), show=str)


def size(low: int, high: int, accepted: str) -> Kind:
    """A size in bytes from ``low`` to ``high``."""
    return dataclasses.replace(integer(low, high, accepted), show=_show_bytes)


def optional_integer(low: int, high: int, accepted: str) -> Kind:
    """An integer from ``low`` to ``high``, or ``None`` (an empty variable)."""

    def check(value: Any) -> int | None:
        return None if value is None else _check_int(value, low, high, accepted)

    return Kind(lambda text: _int(text) if text else None, check, _show_count, int)


def _check_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise Invalid(f"expected a positive number of seconds, got {value!r}")
    return float(value)


def seconds() -> Kind:
    """A positive, finite number of seconds (kept as a float)."""
    return Kind(_number("is not a number"), _check_seconds, _show_seconds, float)


def optional_days() -> Kind:
    """A positive number of days, or ``None`` (an empty variable) for no limit."""
    parse = _number("is not a number of days")

    def check(value: Any) -> float | None:
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise Invalid(f"expected a positive number of days, or None for no limit, got {value!r}")
        return float(value)

    return Kind(lambda text: parse(text) if text else None, check, _show_count, float)


def seconds_or_switch(default_interval: float) -> Kind:
    """An interval in seconds, ``True`` (``default_interval``), or ``False``/``None`` (off)."""

    def parse(text: str) -> float | bool | None:
        lowered = text.lower()
        if lowered in ("", *_FALSE):
            return None
        if lowered in _TRUE:
            return True
        return _number("is not a number of seconds or a boolean")(text)

    def check(value: Any) -> float | None:
        if value is None or value is False:
            return None
        if value is True:
            return default_interval
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise Invalid(f"expected True, False/None or an interval in seconds, got {value!r}")
        return float(value)

    return Kind(parse, check, _show_off, None)


def boolean(accepted: str) -> Kind:
    """``True`` or ``False``; ``accepted`` says what each means."""

    def parse(text: str) -> bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise Unreadable("is not a boolean (true/false)")

    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"expected {accepted}, got {value!r}")
        return value

    return Kind(parse, check, _show_bool, None)


#: The shortest token accepted: a token is a secret, and a short one is guessed.
MIN_TOKEN_LENGTH = 16


def token() -> Kind:
    """A secret of at least :data:`MIN_TOKEN_LENGTH` characters, or ``None`` (an empty variable)."""

    def check(value: Any) -> str | None:
        if value is not None and (not isinstance(value, str) or len(value) < MIN_TOKEN_LENGTH):
            shown = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
            raise Invalid(
                f"expected a secret of at least {MIN_TOKEN_LENGTH} characters (or None), got {shown}; "
                'e.g. python -c "import secrets; print(secrets.token_urlsafe(24))"'
            )
        return value

    return Kind(_text_or_none, check, lambda value: "none" if value is None else "set", None)


def choice(values: tuple[str, ...]) -> Kind:
    """One of ``values``."""

    def check(value: Any) -> str:
        if value not in values:
            raise Invalid(f"expected one of {', '.join(map(repr, values))}, got {value!r}")
        return str(value)

    return Kind(_text, check)


def address() -> Kind:
    """An IP address (IPv6 in brackets or not) or a host name."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"expected an IP address or host name, got {value!r}")
        address = value.strip()
        if address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
        try:
            ipaddress.ip_address(address)
        except ValueError:
            allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
            if not set(address) <= allowed or len(address) > 253:
                raise Invalid(f"expected an IP address or host name, got {value!r}") from None
        return address

    return Kind(_text, check)


#: Pseudo file systems: the kernel's views, where no file can be kept. (/dev/shm
#: is a tmpfs, where one can.)
_PSEUDO = ("/proc", "/sys", "/dev")


def _on_pseudo_file_system(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == top or real.startswith(top + "/") for top in _PSEUDO) and not real.startswith(
        "/dev/shm/"
    )


def file_path(what: str) -> Kind:
    """The path of a file (``what``), or ``None``; kept absolute: processes that
    share a hub compare it, and may run in other directories. Not on a pseudo
    file system (``/proc``, ``/sys``, ``/dev``)."""

    def check(value: Any) -> str | None:
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value).strip()):
            raise Invalid(f"expected the path of {what} (or None), got {value!r}")
        if value is None:
            return None
        text = os.fspath(value)
        if ("\x00" if isinstance(text, str) else b"\x00") in text:  # before expanduser: "~\x00" raised
            raise Invalid(f"expected the path of {what} (or None), got {value!r}: a NUL byte is in it")
        path = os.path.abspath(os.path.expanduser(text))
        if _on_pseudo_file_system(path):
            raise Invalid(
                f"expected the path of {what} on a real file system, got {path!r} "
                f"({', '.join(_PSEUDO)} hold no files)"
            )
        return path

    return Kind(_text_or_none, check)


def store_path() -> Kind:
    """Where a hub keeps its events: ``None`` (the default store under
    ``STREAM_HUB_HOME``), ``False`` (no store) or the path of an SQLite file
    (see :func:`file_path`). In a variable: unset means the default, an empty
    value or ``off``/``false``/``no``/``0`` means none (as in v2, where an
    empty variable meant no store), anything else is a path."""
    path = file_path("a SQLite file")

    def parse(text: str) -> str | bool:
        return False if text.lower() in ("", *_FALSE) else text

    def check(value: Any) -> str | Literal[False] | None:
        if value is False or value is None:
            return value
        if value is True:  # "a store, please": the default one
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise Invalid(
                f"expected the path of a SQLite file, None (the default store) or False (no store), "
                f"got {value!r}"
            )
        checked: str | None = path.check(value)
        return checked

    def show(value: Any) -> str:
        return "the default store (`STREAM_HUB_HOME`)" if value is None else f"`{value}`"

    def from_flag(text: str) -> str | bool:  # --store off
        return False if text.strip().lower() in _FALSE else text

    return Kind(parse, check, show, from_flag)


def _url(
    value: Any, schemes: tuple[str, str], what: str, shown: Callable[[Any], Any]
) -> urllib.parse.SplitResult:
    """``value`` split, when it is a URL of one of ``schemes`` whose port (if
    any) is one and that names a host; else :class:`Invalid` saying it
    expected ``what``, showing the value as ``shown`` makes it (a secret in
    it hidden)."""
    expected = f"expected {what} (or None)"
    if not isinstance(value, str) or not value.startswith(tuple(s + "://" for s in schemes)):
        raise Invalid(f"{expected}, got {shown(value)!r}")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise Invalid(f"{expected}, got {shown(value)!r}: {exc}") from None
    if not parts.hostname or any(c.isspace() for c in value):
        raise Invalid(f"{expected}, got {shown(value)!r}: it names no host, or has spaces")
    return parts


def redis_url() -> Kind:
    """A ``redis://`` or ``rediss://`` URL naming a host (a valid port, if
    any, and a database number, if any), or ``None``."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        database = _url(value, ("redis", "rediss"), "a redis:// or rediss:// URL", mask_url).path.strip("/")
        if database and not database.isdigit():
            raise Invalid(
                f"expected a redis:// or rediss:// URL (or None), got {mask_url(value)!r}: "
                "the database must be a number"
            )
        return str(value)

    return Kind(_text_or_none, check)


def http_url() -> Kind:
    """An ``http://`` or ``https://`` URL naming a host, or ``None``."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        _url(value, ("http", "https"), "an http:// or https:// URL", _hide_path)
        return str(value)

    return Kind(_text_or_none, check)


def _hide_path(value: Any) -> Any:
    """A URL as an error may show it: its path (often a secret, as a Slack webhook's) left out."""
    if not isinstance(value, str):
        return value
    scheme, sep, rest = value.partition("://")
    return f"{scheme}{sep}{rest.split('/', 1)[0].rpartition('@')[2]}/…" if sep else value[:8] + "…"


def short_name() -> Kind:
    """A short name of letters, digits and ``_-.:``."""

    def check(value: Any) -> str:
        if (
            not isinstance(value, str)
            or not value
            or len(value) > 100
            or not value.replace("_", "").replace("-", "").replace(".", "").replace(":", "").isalnum()
        ):
            raise Invalid(f"expected a short name of letters, digits, '_-.:', got {value!r}")
        return value

    return Kind(_text, check)


def names(what: str, *, optional: bool, lower: bool = False) -> Kind:
    """A tuple of non-empty strings (``what``), comma-separated in a variable;
    with ``optional``, ``None`` (an empty variable) as well; with ``lower``,
    kept in lower case."""

    def parse(text: str) -> tuple[str, ...] | None:
        if optional and not text:
            return None
        return tuple(part.strip() for part in text.split(",") if part.strip())

    def check(value: Any) -> tuple[str, ...] | None:
        if value is None and optional:
            return None
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise Invalid(f"expected a list of {what}, got {value!r}")
        return tuple(v.strip().lower() if lower else v.strip() for v in value)

    return Kind(parse, check, _show_list, None)


def environment_name() -> Kind:
    """The deployment environment (``development``, ``production``, ...): any
    text, compared without case; never refused."""
    return Kind(lambda text: text.lower(), lambda value: str(value).strip().lower())


# -- used outside the config -------------------------------------------------------------

_PORT_CONFLICT = choice(PORT_CONFLICT_POLICIES)


def check_port_conflict(value: Any) -> PortConflictPolicy:
    """``value`` if it is a port-conflict policy, else :class:`ConfigError`."""
    try:
        return _PORT_CONFLICT.check(value)  # type: ignore[no-any-return]
    except Invalid as exc:
        raise ConfigError("port_conflict", str(exc)) from None


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
