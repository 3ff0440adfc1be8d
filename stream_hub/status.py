"""The status of a server, as ``manager.status()``, ``GET /api/status`` and
``stream-hub status`` give it: one dataclass, one wire shape.

The keys are the contract's::

    {"running", "ref_count", "pid", "uptime_s", "ports", "urls", "epoch",
     "last_seq", "history": {"size", "capacity"},
     "clients": {"sse", "ws", "evicted"},
     "events": {"published", "delivered", "dropped", "rejected"},
     "loop_thread_alive", "restarts", "role"}

and, while joined, ``"host": {"pid", "urls"}`` and
``"forwarding": {"queued", "sent", "dropped"}``; while hosting, ``"drops"``
(what was lost, per cause: :meth:`stream_hub.core.hub.Hub.drop_counts`) and,
with a store, ``"store"``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

__all__ = ["HEALTH_BYTES", "Status", "health_answer"]

#: The most of a ``/health`` answer that is read.
HEALTH_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class Status:
    """What a server (or a manager without one) reports about itself."""

    running: bool = False
    ref_count: int = 0
    pid: int = dataclasses.field(default_factory=os.getpid)
    uptime_s: float = 0.0
    ports: dict[str, int] = dataclasses.field(default_factory=dict)
    urls: dict[str, str] = dataclasses.field(default_factory=dict)
    epoch: str | None = None
    last_seq: int = 0
    history: dict[str, int] = dataclasses.field(default_factory=lambda: {"size": 0, "capacity": 0})
    clients: dict[str, int] = dataclasses.field(default_factory=lambda: {"sse": 0, "ws": 0, "evicted": 0})
    events: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"published": 0, "delivered": 0, "dropped": 0, "rejected": 0}
    )
    loop_thread_alive: bool = False
    restarts: int = 0
    role: str = "stopped"

    def to_dict(self) -> dict[str, Any]:
        """The wire shape (plain dicts and values, JSON-able)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def health_answer(status: int, body: bytes) -> dict[str, object]:
    """The JSON object of a ``/health`` answer; ``{}`` for any other answer
    (never kept or shown: it may be anything, from any program)."""
    if status != 200 or len(body) > HEALTH_BYTES:
        return {}
    import orjson

    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}
