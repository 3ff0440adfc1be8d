"""Is a port free, who holds it, free it or refuse.

The server start path resolves all of its ports here *before binding any*, so a
blocked WebSocket port never leaves the SSE port bound. What happens to a busy
port depends on the policy (``StreamConfig.port_conflict``):

========  ==============================================================
``auto``  development: end the holder; production: refuse (the default)
``fail``  always refuse
``free``  always end the holder (the guards below still hold)
``next``  take the next free port upward (bounded search)
========  ==============================================================

Production means ``ENVIRONMENT=production`` (any case); anything else, or no
variable, is development. Whatever the policy, stream_hub never signals this
process, one of its ancestors, PID 1, another user's process, or a process that
is not listening on the port in question. Every refusal raises
:class:`~stream_hub.errors.PortInUseError`, whose message says what to do.

This module is the public face. The work is done in private modules, one idea
each: ``_ports_probe`` (is the port free, who holds it), ``_ports_free`` (the
guards and the killing) and ``_ports_policy`` (one busy port under a policy).
Here: :class:`PortManager`, which groups them for the server's three ports,
and the report behind ``stream-hub ports``. Log records of every step use the
``stream_hub.ports`` logger.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._ports_free import kill_process, kill_refusal_reason
from ._ports_policy import (
    NEXT_PORT_SEARCH,
    check_policy,
    ensure_port_available,
    free,
    inspect,
    is_production,
    policy_refusal,
)
from ._ports_probe import (
    check_port,
    describe_process,
    get_process_using_port,
    is_port_in_use,
    looks_like_stream_hub,
    own_socket_on,
)
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import StreamConfig

__all__ = [
    "NEXT_PORT_SEARCH",
    "PortManager",
    "PortStatus",
    "describe_process",
    "ensure_port_available",
    "format_ports_report",
    "get_process_using_port",
    "is_port_in_use",
    "is_production",
    "kill_process",
    "kill_refusal_reason",
    "ports_report",
]


# -- grouped -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PortStatus:
    """What :meth:`PortManager.check` saw on one port.

    ``pid``/``process`` are ``None`` when the port is free or the holder is not
    visible; ``is_stream_hub`` is true when the holder's command line mentions
    ``stream_hub`` or ``stream-hub``.
    """

    port: int
    in_use: bool
    pid: int | None = None
    process: str | None = None
    is_stream_hub: bool = False


class PortManager:
    """The port functions bound to one host, policy and environment.

    ``environment`` ``None`` reads ``$ENVIRONMENT`` at each call. ``timeout`` is
    how long SIGTERM (then SIGKILL) may take per holder.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        policy: str = "auto",
        environment: str | None = None,
        *,
        timeout: float = 5.0,
    ) -> None:
        check_policy(policy)
        self.host = host
        self.policy = policy
        self.environment = environment
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"PortManager(host={self.host!r}, policy={self.policy!r})"

    def is_port_in_use(self, port: int) -> bool:
        """See :func:`is_port_in_use`."""
        return is_port_in_use(port, self.host)

    def get_process_using_port(self, port: int) -> int | None:
        """See :func:`get_process_using_port`."""
        return get_process_using_port(port, self.host)

    def check(self, port: int) -> PortStatus:
        """Whether ``port`` is in use and by whom. Never signals anything."""
        if not is_port_in_use(port, self.host):
            return PortStatus(port, False)
        pid = get_process_using_port(port, self.host)
        if pid is None and own_socket_on(port):
            pid = os.getpid()
        if pid is None:
            return PortStatus(port, True)
        return PortStatus(port, True, pid, describe_process(pid), looks_like_stream_hub(pid))

    def ensure(self, port: int, *, transport: str | None = None, exclude: Collection[int] = ()) -> int:
        """:func:`ensure_port_available` with this manager's settings."""
        return ensure_port_available(
            port,
            self.host,
            self.policy,
            self.environment,
            transport=transport,
            exclude=exclude,
            timeout=self.timeout,
        )

    def resolve(self, ports: Mapping[str, int]) -> dict[str, int]:
        """The ports to bind for a server, e.g. ``{"sse": 8888, "ws": 8889, "rest": 8890}``.

        Every port is examined before anything is signalled, so a refusal on
        the last port leaves the holders of the others untouched, and nothing
        is bound here. Under ``"next"`` the returned non-zero ports are
        distinct and never take a port another entry asked for. Port 0 stays 0.

        Raises:
            PortInUseError: for the first port that cannot be made available.
            ConfigError: two entries ask for the same non-zero port.
        """
        _check_duplicates(ports)
        busy = [name for name, port in ports.items() if is_port_in_use(port, self.host)]
        if not busy:
            return dict(ports)
        if self.policy == "next":
            return self._resolve_next(ports)
        conflicts = [inspect(ports[name], self.host, name) for name in busy]
        for conflict in conflicts:
            reason = policy_refusal(self.policy, self.environment) or conflict.refusal
            if reason is not None:
                raise conflict.error(reason)
        for conflict in conflicts:
            free(conflict, self.timeout)
        return dict(ports)

    def _resolve_next(self, ports: Mapping[str, int]) -> dict[str, int]:
        taken = {port for port in ports.values() if port}
        resolved: dict[str, int] = {}
        for name, port in ports.items():
            new = self.ensure(port, transport=name, exclude=taken - {port})
            resolved[name] = new
            if new:
                taken.add(new)
        return resolved


def _check_duplicates(ports: Mapping[str, int]) -> None:
    owner: dict[int, str] = {}
    for name, port in ports.items():
        check_port(port)
        if port and port in owner:
            raise ConfigError(
                f"{name}_port",
                f"port {port} is also {owner[port]}_port; each transport needs its own port",
            )
        owner[port] = name


# -- report (for `stream-hub ports`) -------------------------------------------


def ports_report(config: StreamConfig) -> list[dict[str, Any]]:
    """One row per transport of ``config``, for ``stream-hub ports [--json]``.

    Keys: ``name``, ``host``, ``port``, ``free``, ``pid``, ``process`` (name and
    command line) and ``looks_like_stream_hub``. Never signals anything.
    """
    manager = PortManager(config.host)
    rows: list[dict[str, Any]] = []
    for name, port in _config_ports(config):
        status = manager.check(port)
        rows.append(
            {
                "name": name,
                "host": config.host,
                "port": port,
                "free": not status.in_use,
                "pid": status.pid,
                "process": status.process,
                "looks_like_stream_hub": status.is_stream_hub,
            }
        )
    return rows


def _config_ports(config: StreamConfig) -> Iterable[tuple[str, int]]:
    return (("sse", config.sse_port), ("ws", config.ws_port), ("rest", config.rest_port))


def format_ports_report(rows: Iterable[Mapping[str, Any]]) -> str:
    """:func:`ports_report` rows as an aligned text table (no trailing newline)."""
    table = [("TRANSPORT", "ADDRESS", "STATE", "PID", "STREAM_HUB", "PROCESS")]
    for row in rows:
        port = int(row["port"])
        if port == 0:
            state = "any free port"
        else:
            state = "free" if row["free"] else "in use"
        pid = row.get("pid")
        table.append(
            (
                str(row["name"]),
                f"{_url_host(str(row.get('host', '')))}:{port}",
                state,
                "-" if pid is None else str(pid),
                ("yes" if row.get("looks_like_stream_hub") else "no") if pid is not None else "-",
                str(row.get("process") or ("-" if row["free"] else "unknown")),
            )
        )
    # Pad every column but the last, so long command lines do not widen the table.
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    lines = []
    for line in table:
        padded = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)]
        lines.append("  ".join([*padded, line[-1]]))
    return "\n".join(lines)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
