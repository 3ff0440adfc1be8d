"""The table behind ``stream-hub ports``: each configured port, whether it is
free, who holds it and whether that looks like a stream_hub server. Never
signals anything."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..config import StreamConfig, url_host
from .policy import PortManager

__all__ = ["format_ports_report", "ports_report"]


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
                f"{url_host(str(row.get('host', '')))}:{port}",
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
