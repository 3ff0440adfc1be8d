"""What the ``stream-hub`` subcommands share: exit codes, the flags that set
settings (derived from their declarations in :class:`StreamConfig`), and how
each command reads its settings (flags win, then ``STREAM_HUB_*``, then
defaults).

The servers (serve, demo) read the whole :class:`StreamConfig`; the
client-side commands read only the fields they use (host, the three ports —
the key of the hub's registry record —, their token), so a bad value of a
setting they do not use never stops them. They find the hub as
:func:`locate` says.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from ..client.discovery import DISCOVERY_FIELDS, FoundHub, find_hub
from ..config import SETTINGS, StreamConfig

__all__ = [
    "EXIT_ERROR",
    "EXIT_MISSING_EXTRA",
    "EXIT_OK",
    "add_setting_flags",
    "auth_header",
    "client_config",
    "locate",
    "server_config",
    "setting_source",
]

EXIT_OK = 0
# Also when no hub runs (contract v3, "Discovery").
EXIT_ERROR = 1
# A configured feature whose package is not installed (contract v3, "Fail
# fast"): as argparse's usage errors, the command line cannot work as given.
EXIT_MISSING_EXTRA = 2


# The flags that set StreamConfig fields of the same name: those declared with one.
_FIELD_FLAGS = tuple(name for name, declared in SETTINGS.items() if declared.flag is not None)

# The fields each client-side command reads. It talks to a hub that is already
# configured: the server's own settings (history size, limits, timeouts, ...)
# are none of its business, and a bad STREAM_HUB_HISTORY_SIZE must not stop
# `stream-hub status` from reporting on a running hub. All three ports, as
# the hub's registry record is keyed by them (and names where it really is).
_CLIENT_FIELDS: dict[str, tuple[str, ...]] = {
    "status": (*DISCOVERY_FIELDS, "read_token"),
    "restart": (*DISCOVERY_FIELDS, "admin_token"),
    "tail": (*DISCOVERY_FIELDS, "read_token"),
    "export": (*DISCOVERY_FIELDS, "read_token"),
    "runs": (*DISCOVERY_FIELDS, "read_token"),
    "ports": ("host", "sse_port", "ws_port", "rest_port"),
}

# How long a client-side command waits for a hub's /health answer at most
# (a refused connection answers at once; this bounds a holder that never does).
_PROBE_TIMEOUT = 10.0


def add_setting_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the flags of the settings ``names`` (``--sse-port`` for ``sse_port``), their
    type, choices and help (which names the variable and the default) as declared."""
    for name in names:
        declared = SETTINGS[name]
        if declared.flag is None:
            raise ValueError(f"the setting {name} has no command-line flag")
        if declared.flag.switch:
            # Not given: None, so the variable, then the default, decide.
            parser.add_argument(declared.option, action="store_const", const=True, help=declared.cli_help)
            continue
        typed: dict[str, Any] = {} if declared.kind.cli_type is None else {"type": declared.kind.cli_type}
        parser.add_argument(
            declared.option,
            metavar=declared.flag.metavar,
            choices=declared.flag.choices,
            help=declared.cli_help,
            **typed,
        )


def setting_source(name: str) -> str:
    """Where a setting comes from besides a flag (``env STREAM_HUB_READ_TOKEN``), for help texts."""
    return SETTINGS[name].source


def _flag_values(args: argparse.Namespace, fields: Iterable[str]) -> dict[str, Any]:
    """The fields among ``fields`` that a flag of the same name set on the command line."""
    values = {name: getattr(args, name, None) for name in fields}
    return {name: value for name, value in values.items() if value is not None}


def server_config(args: argparse.Namespace, **extra: Any) -> StreamConfig:
    """The whole config of a server (serve, demo): flags, then STREAM_HUB_*, then defaults."""
    values = _flag_values(args, _FIELD_FLAGS)
    values.update(extra)
    return StreamConfig(**values)


def client_config(args: argparse.Namespace) -> StreamConfig:
    """The config of a client-side command (status, restart, tail, ports).

    The fields it uses come from flags, then ``STREAM_HUB_*``, then defaults,
    validated as usual: a bad one raises :class:`ConfigError` naming it. Every
    other field is given its default, so its variable is never read.
    """
    used = _CLIENT_FIELDS[args.command]
    return StreamConfig.reading(used, **_flag_values(args, used))


def locate(args: argparse.Namespace, cfg: StreamConfig) -> FoundHub:
    """The hub a client-side command talks to: through the registry's record
    of ``cfg``'s bind address and ports first (the hub may have moved when a
    foreign program held them), then at the configured ports, verified by
    ``GET /health``.

    Raises:
        HubNotFound: no hub runs; the one-line message says where it looked.
        NotAHub: the configured REST port answers, but not as stream_hub.
    """
    return find_hub(cfg, timeout=min(float(args.timeout), _PROBE_TIMEOUT))


def auth_header(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
