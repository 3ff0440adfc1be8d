"""How a setting is declared once, and what is derived from the declaration.

A :class:`Setting` holds everything about one setting: its kind of value
(:mod:`.fields`: reading the variable's text, checking a value), default,
help text, environment variable, whether it is secret, and its command-line
flag if it has one. :class:`~stream_hub.config.StreamConfig` declares each of
its fields with :func:`setting`; from those declarations come the dataclass,
the environment reading (:meth:`Setting.read`), the messages of a bad value,
the flags of ``stream-hub`` and the table in the README (:func:`markdown_table`,
printed by ``scripts/settings_table.py``).

Also here: ``ENVIRONMENT`` (development or production), read through the same
machinery although it is not a field, and the warning about ``STREAM_HUB_*``
variables that are not settings (a typo would otherwise be silently ignored).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from .fields import Invalid, Kind, Unreadable, environment_name

__all__ = [
    "ENVIRONMENT",
    "ENV_PREFIX",
    "OTHER_VARIABLES",
    "UNSET",
    "Flag",
    "Setting",
    "environment",
    "is_production",
    "markdown_table",
    "setting",
    "settings_of",
    "warn_unknown_variables",
]

logger = logging.getLogger(__name__)

ENV_PREFIX = "STREAM_HUB_"

# The default of every declared field: "not given", so the field is read from
# its variable, else gets the declared default.
UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()


def _hide(value: Any) -> str:
    return "***"


@dataclasses.dataclass(frozen=True)
class Flag:
    """The ``stream-hub`` flag of a setting: ``--sse-port`` for ``sse_port``.

    ``help`` says what the flag does; ``(env VAR, default X)`` is added from
    the setting. ``choices`` limits the values the flag takes (the setting may
    accept more, e.g. policies a command has no use for). A ``switch`` takes
    no value: given, it sets the (boolean) setting to True.
    """

    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting, declared once.

    ``secret`` settings are shown through ``mask`` (by default ``***``)
    wherever a config is logged or served. ``env`` is the variable, by default
    ``STREAM_HUB_<NAME>``. ``name`` is filled in from the dataclass field
    (:func:`settings_of`).
    """

    kind: Kind
    default: Any
    help: str
    secret: bool = False
    mask: Callable[[Any], Any] = _hide
    flag: Flag | None = None
    env: str | None = None
    name: str = ""

    @property
    def variable(self) -> str:
        """The environment variable this setting is read from."""
        return self.env or ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        """The command-line flag's name, ``--sse-port`` for ``sse_port``."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` as the config keeps it; :class:`ConfigError` naming the
        setting and what it accepts if it is not accepted."""
        try:
            return self.kind.check(value)
        except Invalid as exc:
            raise ConfigError(self.name, str(exc)) from None

    def parse(self, raw: str) -> Any:
        """The value that the text of the variable stands for (not yet
        checked); :class:`ConfigError` quoting the variable if it stands for none."""
        try:
            return self.kind.parse(raw.strip())
        except Unreadable as exc:
            raise ConfigError(self.name, f"{self.variable}={raw!r} {exc}") from None

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        """The value from the variable in ``environ`` (default: ``os.environ``),
        else the default; checked."""
        raw = (os.environ if environ is None else environ).get(self.variable)
        return self.check(self.default if raw is None else self.parse(raw))

    def shown(self, value: Any) -> Any:
        """``value`` as plain data that is safe to log or serve."""
        if value is None:
            return None
        if self.secret:
            return self.mask(value)
        return list(value) if isinstance(value, tuple) else value

    @property
    def shown_default(self) -> str:
        """The default as the docs write it (``15 s``, ``64 MiB``, ``none``)."""
        return self.kind.show(self.default)

    @property
    def cli_help(self) -> str:
        """The ``--help`` text of the setting's flag."""
        if self.flag is None:
            raise ValueError(f"{self.name} has no command-line flag")
        return f"{self.flag.help} ({self.source})"

    @property
    def source(self) -> str:
        """Where else the value comes from, for help texts: ``env VAR, default X``."""
        if self.default is None:
            return f"env {self.variable}"
        return f"env {self.variable}, default {self.shown_default.replace('`', '')}"


def setting(
    kind: Kind,
    default: Any,
    help: str,
    *,
    secret: bool = False,
    mask: Callable[[Any], Any] = _hide,
    flag: Flag | None = None,
) -> Any:
    """Declare a field of a config dataclass as a setting (the declaration is
    the field's metadata). Typed ``Any`` so that the annotation of the field
    stays the type mypy sees."""
    declared = Setting(kind, default, help, secret=secret, mask=mask, flag=flag)
    declared.check(default)  # a bad default is a bug of the declaration: fail at import
    return dataclasses.field(default=UNSET, metadata={"setting": declared})


def settings_of(cls: type) -> dict[str, Setting]:
    """The declared settings of a config dataclass, by field name, in field order."""
    return {
        f.name: dataclasses.replace(f.metadata["setting"], name=f.name)
        for f in dataclasses.fields(cls)
        if "setting" in f.metadata
    }


# -- variables that are not fields ---------------------------------------------------------

ENVIRONMENT = Setting(
    environment_name(),
    "development",
    "`production` (any case): stream_hub never ends a process, whatever the port-conflict "
    "policy; anything else is development",
    env="ENVIRONMENT",
    name="environment",
)


def environment() -> str:
    """The deployment environment from ``$ENVIRONMENT``, lower case, read at each call."""
    return str(ENVIRONMENT.read())


def is_production(environment: str | None = None) -> bool:
    """Whether ``environment`` (default: ``$ENVIRONMENT``, read now) is ``production``, any case."""
    value = ENVIRONMENT.read() if environment is None else ENVIRONMENT.check(environment)
    return bool(value == "production")


OTHER_VARIABLES: Mapping[str, str] = {
    "STREAM_HUB_RUN": "the run a process logs into (contract v3)",
    "STREAM_HUB_HOME": "the data directory of the default store (contract v3)",
    "STREAM_HUB_REGISTRY": "the directory where this user's hubs meet (processes/registry.py)",
    "STREAM_HUB_REQUIRE_ALL": "tests: a missing optional tool fails its tests instead of skipping them",
    "STREAM_HUB_SAVE_SCREENSHOT": "tests: the dashboard tests also write the README's pictures",
    "STREAM_HUB_BENCH_TINY": "scripts/bench.py: the same as --tiny",
}
"""``STREAM_HUB_*`` variables that are legitimate but are not config fields."""

_warned: set[str] = set()


def warn_unknown_variables(settings: Iterable[Setting], environ: Mapping[str, str] | None = None) -> None:
    """Log a WARNING, once per process and name, for each ``STREAM_HUB_*``
    variable that is neither one of ``settings`` nor in :data:`OTHER_VARIABLES`,
    naming the closest known variable. Never raises: a stray variable must not
    stop training."""
    environ = os.environ if environ is None else environ
    stray = [key for key in environ if key.startswith(ENV_PREFIX) and key not in _warned]
    if not stray:
        return
    known = {s.variable for s in settings} | set(OTHER_VARIABLES)
    for key in stray:
        if key in known:
            continue
        _warned.add(key)
        import difflib  # only for a typo, which is rare

        # Compared without the prefix every candidate shares, which would make anything look close.
        suffixes = {name.removeprefix(ENV_PREFIX): name for name in known if name.startswith(ENV_PREFIX)}
        close = difflib.get_close_matches(key.removeprefix(ENV_PREFIX), sorted(suffixes), n=1)
        hint = (
            f"did you mean {suffixes[close[0]]}?"
            if close
            else "the settings are in the README's Configuration"
        )
        logger.warning("%s is not a stream_hub setting and is ignored; %s", key, hint)


# -- the docs ------------------------------------------------------------------------------


def markdown_table(settings: Iterable[Setting]) -> str:
    """The Markdown table of ``settings`` for the README (no trailing newline)."""
    rows = ["| field | variable | default | meaning |", "|---|---|---|---|"]
    for s in settings:
        meaning = s.help + (". Secret: masked wherever the config is logged or served" if s.secret else "")
        rows.append(f"| `{s.name}` | `{s.variable}` | {s.shown_default} | {meaning} |")
    return "\n".join(rows)
