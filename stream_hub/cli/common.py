"""What the ``stream-hub`` subcommands share: exit codes, the flags that set
settings (derived from their declarations in :class:`StreamConfig`), and how
each command reads its settings (flags win, then ``STREAM_HUB_*``, then
defaults).

Secrets on the command line (``--token``, a password in ``--backend``) are
visible to every user of the machine (``ps``, ``/proc/<pid>/cmdline``), and
Python cannot rewrite what the kernel shows there without a C extension.
So each flag that carries a secret has a ``-file`` twin (``--token-file
PATH``, ``--backend-file PATH``: the value is the file's one line), the
``STREAM_HUB_*`` variables work as for every setting, and a secret given on
the command line itself gets a warning naming both (:func:`take_secrets`).

The servers (serve, demo) read the whole :class:`StreamConfig`; the
client-side commands read only the fields they use (host, the three ports —
the key of the hub's registry record —, their token), so a bad value of a
setting they do not use never stops them. They find the hub as
:func:`locate` says.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..client.discovery import DISCOVERY_FIELDS, FoundHub, find_hub
from ..config import SETTINGS, StreamConfig
from ..errors import ConfigError

__all__ = [
    "EXIT_ERROR",
    "EXIT_MISSING_EXTRA",
    "EXIT_OK",
    "add_setting_flags",
    "add_token_flags",
    "auth_header",
    "client_config",
    "locate",
    "read_secret_file",
    "server_config",
    "setting_source",
    "take_secrets",
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
    type, choices and help (which names the variable and the default) as declared.
    A secret setting also gets ``--<name>-file PATH``, either one or the other."""
    for name in names:
        declared = SETTINGS[name]
        if declared.flag is None:
            raise ValueError(f"the setting {name} has no command-line flag")
        if declared.flag.switch:
            # Not given: None, so the variable, then the default, decide.
            parser.add_argument(declared.option, action="store_const", const=True, help=declared.cli_help)
            continue
        typed: dict[str, Any] = {} if declared.kind.cli_type is None else {"type": declared.kind.cli_type}
        group: Any = parser.add_mutually_exclusive_group() if declared.secret else parser
        group.add_argument(
            declared.option,
            metavar=declared.flag.metavar,
            choices=declared.flag.choices,
            help=_secret_help(declared.flag.help, name, declared.option)
            if declared.secret
            else declared.cli_help,
            **typed,
        )
        if declared.secret:
            _add_file_flag(group, declared.option, f"{name}_file")


def add_token_flags(parser: argparse.ArgumentParser, setting: str, what: str) -> None:
    """``--token`` (the value of ``setting`` for this command) or ``--token-file PATH``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--token", help=_secret_help(what, setting, "--token"))
    _add_file_flag(group, "--token", "token_file")
    parser.set_defaults(token_setting=setting)


def _secret_help(what: str, setting: str, option: str) -> str:
    return (
        f"{what} ({setting_source(setting)}; on the command line, ps shows it to everyone: use {option}-file)"
    )


def _add_file_flag(group: Any, option: str, dest: str) -> None:
    group.add_argument(
        option + "-file",
        metavar="PATH",
        dest=dest,
        help=f"read {option}'s value from this file (its one line)",
    )


def read_secret_file(path: str, setting: str) -> str:
    """The secret in the file at ``path``: its one line, without surrounding blanks.

    Raises:
        ConfigError: the file cannot be read, or does not hold one line.
    """
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(setting, f"cannot read the file {path}: {exc}") from None
    if not value or "\n" in value:
        raise ConfigError(setting, f"the file {path} must hold the value on one line")
    return value


def take_secrets(args: argparse.Namespace) -> list[str]:
    """Put the secrets given as files (``--token-file``, ``--backend-file``) in
    their flags' places; return a warning for each secret given on the
    command line itself, naming the variable and the file flag to use instead.

    Raises:
        ConfigError: a file cannot be read, or does not hold one line.
    """
    flags = {"token": getattr(args, "token_setting", None)}
    flags.update({name: name for name, declared in SETTINGS.items() if declared.secret and declared.flag})
    warnings: list[str] = []
    for attr, setting in flags.items():
        if setting is None or not hasattr(args, attr):
            continue
        path = getattr(args, f"{attr}_file", None)
        if path is not None:
            setattr(args, attr, read_secret_file(path, setting))
            continue
        value = getattr(args, attr)
        declared = SETTINGS[setting]
        if value is not None and declared.shown(value) != value:  # a value with a secret in it
            option = "--" + attr.replace("_", "-")
            what = f"the password in {option}" if attr == "backend" else option
            warnings.append(
                f"{what} on the command line can be read by every user of this machine "
                f"(ps, /proc/{os.getpid()}/cmdline); set {declared.variable} "
                f"or use {option}-file PATH instead"
            )
    return warnings


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
