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

This package's ``__init__`` is the public face; the work is done in its
modules, one idea each: ``probe`` (is the port free, who holds it), ``kill``
(the guards and the killing), ``policy`` (one busy port under a policy, and
:class:`PortManager` for a server's three), ``bind`` (the one way a server's
socket is bound, and the check that a stopped server's ports are free) and
``report`` (the table behind ``stream-hub ports``). Log records of every step
use the ``stream_hub.ports`` logger.
"""

from __future__ import annotations

from .bind import bind_port, verify_released
from .kill import kill_process, kill_refusal_reason
from .policy import (
    NEXT_PORT_SEARCH,
    PortManager,
    PortStatus,
    ensure_port_available,
    is_production,
)
from .probe import describe_process, get_process_using_port, is_port_in_use, looks_like_stream_hub
from .report import format_ports_report, ports_report

__all__ = [
    "NEXT_PORT_SEARCH",
    "PortManager",
    "PortStatus",
    "bind_port",
    "describe_process",
    "ensure_port_available",
    "format_ports_report",
    "get_process_using_port",
    "is_port_in_use",
    "is_production",
    "kill_process",
    "kill_refusal_reason",
    "looks_like_stream_hub",
    "ports_report",
    "verify_released",
]
