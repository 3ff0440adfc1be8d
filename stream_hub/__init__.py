"""stream_hub: stream live training metrics over SSE, WebSocket and REST from
one shared in-process server.

    from stream_hub import get_stream_server, release_stream_server

    server = get_stream_server()                 # +1 reference; starts on the first
    server.log({"loss": 0.12}, step=10, run="exp1")
    release_stream_server()                      # -1 reference; stops at zero

Importing costs nothing a process did not ask for (training scripts,
DataLoader workers and spawned children all import it): no web framework,
SQLite or asyncio, no hooks. Those come with the first server;
``TrainingStreamServer`` is resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import StreamConfig
from .errors import ConfigError, LoopThreadError, PortInUseError, StreamHubError
from .manager import (
    Lease,
    StreamServerManager,
    get_stream_server,
    get_stream_server_manager,
    release_stream_server,
)

if TYPE_CHECKING:
    from .notebook import show
    from .server import TrainingStreamServer

__all__ = [
    "ConfigError",
    "Lease",
    "LoopThreadError",
    "PortInUseError",
    "StreamConfig",
    "StreamHubError",
    "StreamServerManager",
    "TrainingStreamServer",
    "__version__",
    "get_stream_server",
    "get_stream_server_manager",
    "release_stream_server",
    "show",
]

# Public names whose module is heavy: imported on first use (PEP 562).
_LAZY = {"TrainingStreamServer": ".server", "show": ".notebook"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # resolved once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
