"""What a server knows of its owner (the manager): :class:`ServerOwner`.

The server's reports themselves (``status()``, ``sources()``, ``live_runs()``)
are the server's methods, which ask its role (:mod:`stream_hub.roles`) for
the role's part.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ServerOwner"]


class ServerOwner(Protocol):
    """Who shares a server (the manager): its reference count, and what a
    restart asked for over REST or a fault should go through."""

    @property
    def ref_count(self) -> int: ...

    def force_restart(self) -> Any: ...

    def recover(self, server: Any, cause: str) -> None: ...
